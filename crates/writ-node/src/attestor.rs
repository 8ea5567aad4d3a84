//! Workload attestation: what the kernel says about the process on the
//! other end of the socket, as selectors, taken when it connects.
//!
//! `unix:uid` and `unix:gid` come from the socket's peer credentials, fixed
//! by the kernel at connect time. `unix:path` and `unix:sha256` are read
//! from `/proc/PID/exe` right after: they narrow an identity down within a
//! user (which binary of that user's may have it), which is why every
//! agent's selectors must name a uid or a gid as well.

use std::collections::HashMap;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::sync::{Arc, Mutex};

use tokio::net::unix::UCred;

/// The largest executable hashed.
const MAX_EXE: u64 = 512 * 1024 * 1024;
/// Digests remembered.
const CACHE: usize = 1024;

/// An executable as the kernel identifies it: device, inode, size,
/// modification and change times (the last cannot be set by its owner).
type FileKey = (u64, u64, u64, i64, i64, i64, i64);

/// Digests of executables, by file identity.
#[derive(Default)]
pub struct Digests {
    cache: Mutex<HashMap<FileKey, String>>,
}

impl Digests {
    /// The SHA-256 of the file the process runs, read through one open
    /// descriptor of `/proc/PID/exe`.
    fn sha256(&self, proc_exe: &str) -> Option<String> {
        let mut file = std::fs::File::open(proc_exe).ok()?;
        let m = file.metadata().ok()?;
        let key = (
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        );
        if let Ok(c) = self.cache.lock()
            && let Some(digest) = c.get(&key)
        {
            return Some(digest.clone());
        }
        if m.size() > MAX_EXE {
            return None;
        }
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = file.read(&mut buf).ok()?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > MAX_EXE {
                return None;
            }
            ctx.update(buf.get(..n)?);
        }
        let hex: String = ctx
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= CACHE {
                c.clear();
            }
            c.insert(key, hex.clone());
        }
        Some(hex)
    }

    /// The selectors of the peer: `unix:uid`, `unix:gid`, and when its
    /// executable can be read, `unix:path` and `unix:sha256`. Blocking.
    pub fn selectors(&self, cred: &UCred) -> Vec<String> {
        let mut out = vec![
            format!("unix:uid:{}", cred.uid()),
            format!("unix:gid:{}", cred.gid()),
        ];
        if let Some(pid) = cred.pid() {
            let proc_exe = format!("/proc/{pid}/exe");
            if let Ok(exe) = std::fs::read_link(&proc_exe)
                && let Some(path) = exe.to_str()
            {
                if let Some(digest) = self.sha256(&proc_exe) {
                    out.push(format!("unix:sha256:{digest}"));
                }
                out.push(format!("unix:path:{path}"));
            }
        }
        out
    }
}

/// Who is on the other end of a Workload API connection, as attested when
/// it connected.
#[derive(Clone, Debug)]
pub struct Peer {
    pub selectors: Arc<Vec<String>>,
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

    #[test]
    fn this_process_is_identified_by_the_kernel() {
        let a = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let (a, _b) = tokio::net::UnixStream::pair().unwrap();
                a.peer_cred().unwrap()
            });
        let s = Digests::default().selectors(&a);
        let exe = std::env::current_exe().unwrap();
        assert!(s.contains(&format!("unix:path:{}", exe.display())), "{s:?}");
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &std::fs::read(&exe).unwrap());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert!(s.contains(&format!("unix:sha256:{hex}")), "{s:?}");
        assert!(s.iter().any(|x| x.starts_with("unix:uid:")));
    }
}
