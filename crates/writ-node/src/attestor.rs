//! Workload attestation: what the kernel says about the process on the
//! other end of the socket, as selectors.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::net::unix::UCred;

/// An executable's size and modification time, and its digest then.
type Known = (u64, Option<SystemTime>, String);

/// Digests of executables, by path, size and modification time.
#[derive(Default)]
pub struct Digests {
    cache: Mutex<HashMap<PathBuf, Known>>,
}

impl Digests {
    /// The digest of what `proc_exe` (`/proc/PID/exe`, the very file the
    /// process runs) holds, cached under the file's path, size and mtime.
    fn sha256(&self, proc_exe: &str, path: &PathBuf) -> Option<String> {
        let meta = std::fs::metadata(proc_exe).ok()?;
        let key = (meta.len(), meta.modified().ok());
        if let Ok(c) = self.cache.lock()
            && let Some((len, mtime, digest)) = c.get(path)
            && (*len, *mtime) == key
        {
            return Some(digest.clone());
        }
        let bytes = std::fs::read(proc_exe).ok()?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        if let Ok(mut c) = self.cache.lock() {
            c.insert(path.clone(), (key.0, key.1, hex.clone()));
        }
        Some(hex)
    }

    /// The selectors of the peer: `unix:uid`, `unix:gid`, and when its
    /// executable can be read, `unix:path` and `unix:sha256`.
    pub fn selectors(&self, cred: &UCred) -> Vec<String> {
        let mut out = vec![
            format!("unix:uid:{}", cred.uid()),
            format!("unix:gid:{}", cred.gid()),
        ];
        if let Some(pid) = cred.pid() {
            let proc_exe = format!("/proc/{pid}/exe");
            if let Ok(exe) = std::fs::read_link(&proc_exe) {
                if let Some(digest) = self.sha256(&proc_exe, &exe) {
                    out.push(format!("unix:sha256:{digest}"));
                }
                out.push(format!("unix:path:{}", exe.display()));
            }
        }
        out
    }
}

/// Whether every selector an agent asks for is among the workload's.
pub fn matches(required: &[String], workload: &[String]) -> bool {
    !required.is_empty() && required.iter().all(|s| workload.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_selectors_must_match() {
        let w = vec![
            "unix:uid:1000".to_owned(),
            "unix:path:/usr/bin/python3".to_owned(),
        ];
        assert!(matches(&["unix:uid:1000".to_owned()], &w));
        assert!(matches(&w, &w));
        assert!(!matches(&["unix:uid:0".to_owned()], &w));
        assert!(!matches(
            &["unix:uid:1000".to_owned(), "unix:gid:1000".to_owned()],
            &w
        ));
        assert!(!matches(&[], &w), "no selectors matches nothing");
    }
}
