//! Workload attestation: what the kernel says about the process on the
//! other end of the socket, as selectors.
//!
//! `unix:uid` and `unix:gid` come from the socket's peer credentials, fixed
//! by the kernel at connect time. `unix:path` and `unix:sha256` are those
//! of the executable the connecting process runs, read through a handle on
//! it taken as soon as the connection is accepted (`process.rs`): they
//! narrow an identity down within a user (which binary of that user's may
//! have it), which is why every agent's selectors must name a uid or a gid
//! as well. They hold only while that process runs that executable, which
//! is checked at every answer, and only for what that process itself sends
//! (`authority.rs`).
//!
//! Attestation runs beside the accept loop, never in it, within a time
//! limit, and with a bounded amount of work per uid at once
//! ([`Gate`]): hashing a large executable delays only the connection that
//! asked for it and, at most, the other connections of the same user.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::process::{Process, Unattested};

/// The largest executable hashed.
const MAX_EXE: u64 = 512 * 1024 * 1024;
/// Digests remembered.
const CACHE: usize = 1024;
/// How long one connection may take to be attested; past it, it goes on
/// without the selectors not yet established (a `unix:sha256` it would
/// have had is missing, so it matches fewer agents, never more).
pub const ATTEST_TIME: Duration = Duration::from_secs(10);
/// How long one executable may take to hash.
const HASH_TIME: Duration = Duration::from_secs(8);
/// Connections of one uid being attested at once; more are closed at once.
const PENDING_PER_UID: usize = 64;
/// Executables of one uid's processes being opened at once (and looked up
/// among the digests already known).
const LOOK_PER_UID: usize = 8;
/// Executables of one uid's processes being hashed at once.
const HASH_PER_UID: usize = 2;

/// An executable as the kernel identifies it: device, inode, size,
/// modification and change times (the last cannot be set by its owner).
type FileKey = (u64, u64, u64, i64, i64, i64, i64);

/// Digests of executables, by file identity.
#[derive(Default)]
pub struct Digests {
    cache: Mutex<HashMap<FileKey, String>>,
}

/// An executable opened, and either its digest known already or the file
/// to hash.
enum Looked {
    Known(String),
    ToHash(std::fs::File, FileKey),
}

impl Digests {
    /// The digest of `file` if it is known; else the file, unless it is
    /// too large to hash.
    fn look(&self, file: std::fs::File) -> Option<Looked> {
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
            return Some(Looked::Known(digest.clone()));
        }
        (m.size() <= MAX_EXE).then_some(Looked::ToHash(file, key))
    }

    /// The SHA-256 of `file`, remembered, unless it cannot be read or
    /// takes past `deadline` or until `stop` is set.
    fn hash(
        &self,
        mut file: std::fs::File,
        key: FileKey,
        deadline: Instant,
        stop: &AtomicBool,
    ) -> Option<String> {
        let hex = digest_of(&mut file, deadline, stop)?;
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= CACHE {
                c.clear();
            }
            c.insert(key, hex.clone());
        }
        Some(hex)
    }
}

/// The hex SHA-256 of what `input` yields, up to [`MAX_EXE`] bytes, read
/// in chunks; `None` if it is longer, fails, or is still going at
/// `deadline` or once `stop` is set.
fn digest_of(
    input: &mut impl std::io::Read,
    deadline: Instant,
    stop: &AtomicBool,
) -> Option<String> {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            return None;
        }
        let n = input.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > MAX_EXE {
            return None;
        }
        ctx.update(buf.get(..n)?);
    }
    Some(
        ctx.finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

struct PerUid {
    pending: usize,
    look: Arc<Semaphore>,
    hash: Arc<Semaphore>,
}

impl PerUid {
    fn idle(&self) -> bool {
        self.pending == 0
            && self.look.available_permits() == LOOK_PER_UID
            && self.hash.available_permits() == HASH_PER_UID
    }
}

/// Admission to attestation: how many connections of each uid are being
/// attested, and how much blocking work each uid has under way: opening
/// executables (quick, but on a filesystem the peer may choose) and
/// hashing them (slow for a large one). Hashing has permits of its own, so
/// a peer whose executable is known already is not kept waiting behind
/// large ones. A blocking read cannot be interrupted: its permit stays
/// taken until it returns, so a user whose executables stall (a hung
/// filesystem) runs out of its own permits and nobody else's.
#[derive(Default)]
pub struct Gate {
    digests: Digests,
    uids: Mutex<HashMap<u32, PerUid>>,
}

/// One connection being attested; counted against its uid until dropped.
pub struct Ticket {
    gate: Arc<Gate>,
    uid: u32,
    look: Arc<Semaphore>,
    hash: Arc<Semaphore>,
}

impl Gate {
    /// Admits one more connection of `uid`, unless it already has
    /// [`PENDING_PER_UID`] being attested.
    pub fn enter(self: &Arc<Self>, uid: u32) -> Option<Ticket> {
        let mut uids = self.uids.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = uids.entry(uid).or_insert_with(|| PerUid {
            pending: 0,
            look: Arc::new(Semaphore::new(LOOK_PER_UID)),
            hash: Arc::new(Semaphore::new(HASH_PER_UID)),
        });
        if entry.pending >= PENDING_PER_UID {
            return None;
        }
        entry.pending += 1;
        Some(Ticket {
            gate: Arc::clone(self),
            uid,
            look: Arc::clone(&entry.look),
            hash: Arc::clone(&entry.hash),
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut uids = self
            .gate
            .uids
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = uids.get_mut(&self.uid) {
            entry.pending = entry.pending.saturating_sub(1);
            // Forgotten once idle, unless blocking work still holds
            // permits (it goes on counting against the uid).
            if entry.idle() {
                uids.remove(&self.uid);
            }
        }
    }
}

/// Set when the attestation waiting for it is dropped (timed out): the
/// hashing stops at its next chunk.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Ticket {
    /// The SHA-256 of the process's executable: opened and looked up on a
    /// blocking thread under one of the uid's look permits, then if need
    /// be hashed under one of its hash permits, within [`HASH_TIME`].
    async fn sha256(&self, process: &Arc<Process>) -> Option<String> {
        let stop = Arc::new(AtomicBool::new(false));
        let _stop = StopOnDrop(Arc::clone(&stop));
        let permit = Arc::clone(&self.look).acquire_owned().await.ok()?;
        let gate = Arc::clone(&self.gate);
        let process = Arc::clone(process);
        let looked = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            gate.digests.look(process.open_exe()?)
        })
        .await
        .ok()
        .flatten()?;
        let (file, key) = match looked {
            Looked::Known(hex) => return Some(hex),
            Looked::ToHash(file, key) => (file, key),
        };
        let permit = Arc::clone(&self.hash).acquire_owned().await.ok()?;
        let gate = Arc::clone(&self.gate);
        let deadline = Instant::now() + HASH_TIME;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            gate.digests.hash(file, key, deadline, &stop)
        })
        .await
        .ok()
        .flatten()
    }
}

/// Who is on the other end of a Workload API connection: the selectors
/// attested when it connected, and the process they hold for.
#[derive(Clone, Debug)]
pub struct Peer {
    selectors: Arc<Vec<String>>,
    process: Option<Arc<Process>>,
}

impl Peer {
    /// The caller's selectors, if the process that connected is still
    /// there running what it ran then (checked now, for each answer).
    pub fn selectors(&self) -> Result<Vec<String>, Unattested> {
        if let Some(p) = &self.process {
            p.check()?;
        }
        Ok(self.selectors.as_ref().clone())
    }

    /// The pid of the process that connected, if it is known.
    pub fn pid(&self) -> Option<i32> {
        self.process.as_ref().map(|p| p.pid())
    }
}

/// Attests the peer on `socket` whose peer credentials are `pid`, `uid`
/// and `gid`. A process that cannot be pinned (gone already, or hidden
/// from the node) is attested by its uid and gid alone. `None` if it ran
/// another executable while it was being attested: such a connection is
/// closed.
pub async fn attest(
    socket: &impl AsFd,
    pid: Option<i32>,
    uid: u32,
    gid: u32,
    ticket: &Ticket,
) -> Option<Peer> {
    let mut selectors = vec![format!("unix:uid:{uid}"), format!("unix:gid:{gid}")];
    let Some(pid) = pid.filter(|p| *p > 0) else {
        // A process outside the node's pid namespace: its uid and gid are
        // all that is known.
        return Some(Peer {
            selectors: Arc::new(selectors),
            process: None,
        });
    };
    let process = match Process::pin(socket, pid, uid, gid) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            tracing::debug!(pid, error = %e, "workload API peer attested by uid and gid only");
            return Some(Peer {
                selectors: Arc::new(selectors),
                process: None,
            });
        }
    };
    if process.same_user_namespace()
        && let Some(path) = process.exe().map(str::to_owned)
    {
        let started = Instant::now();
        let digest = tokio::time::timeout(ATTEST_TIME, ticket.sha256(&process))
            .await
            .ok()
            .flatten();
        tracing::debug!(
            pid,
            hashed = digest.is_some(),
            took_ms = started.elapsed().as_millis(),
            "workload API peer's executable looked at"
        );
        // What was hashed is what the process ran when it was pinned.
        if process.check().is_err() {
            return None;
        }
        if let Some(digest) = digest {
            selectors.push(format!("unix:sha256:{digest}"));
        }
        selectors.push(format!("unix:path:{path}"));
    }
    Some(Peer {
        selectors: Arc::new(selectors),
        process: Some(process),
    })
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

    #[tokio::test]
    async fn this_process_is_identified_by_the_kernel() {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let cred = a.peer_cred().unwrap();
        let gate = Arc::new(Gate::default());
        let ticket = gate.enter(cred.uid()).unwrap();
        let peer = attest(&a, cred.pid(), cred.uid(), cred.gid(), &ticket)
            .await
            .unwrap();
        let s = peer.selectors().unwrap();
        let exe = std::env::current_exe().unwrap();
        assert!(s.contains(&format!("unix:path:{}", exe.display())), "{s:?}");
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &std::fs::read(&exe).unwrap());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert!(s.contains(&format!("unix:sha256:{hex}")), "{s:?}");
        assert!(s.iter().any(|x| x.starts_with("unix:uid:")));
    }

    /// An input that never ends, slowly.
    struct Endless;

    impl std::io::Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            std::thread::sleep(Duration::from_millis(5));
            let n = buf.len().min(1024);
            buf.iter_mut().take(n).for_each(|b| *b = 0);
            Ok(n)
        }
    }

    #[test]
    fn h2_hashing_stops_at_its_deadline_or_when_abandoned() {
        let stop = AtomicBool::new(false);
        let started = Instant::now();
        let got = digest_of(
            &mut Endless,
            Instant::now() + Duration::from_millis(200),
            &stop,
        );
        assert_eq!(got, None);
        assert!(started.elapsed() < Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        let started = Instant::now();
        let far = Instant::now() + Duration::from_secs(3600);
        assert_eq!(digest_of(&mut Endless, far, &stop), None);
        assert!(started.elapsed() < Duration::from_secs(1));
        // A short input is hashed.
        let fresh = AtomicBool::new(false);
        let hex = digest_of(&mut &b"abc"[..], far, &fresh).unwrap();
        assert!(hex.starts_with("ba7816bf"), "{hex}");
    }

    #[tokio::test]
    async fn h2_one_uid_cannot_take_another_uids_attestation_capacity() {
        let gate = Arc::new(Gate::default());
        // One uid's connections are capped...
        let tickets: Vec<_> = (0..PENDING_PER_UID)
            .map(|_| gate.enter(1000).unwrap())
            .collect();
        assert!(gate.enter(1000).is_none(), "past the cap");
        // ...another uid's are not affected.
        let other = gate.enter(1001).unwrap();
        // All of one uid's hash permits taken (stalled hashing)...
        let held: Vec<_> = (0..HASH_PER_UID)
            .map(|_| Arc::clone(&tickets[0].hash).try_acquire_owned().unwrap())
            .collect();
        assert!(Arc::clone(&tickets[1].hash).try_acquire_owned().is_err());
        // ...leaves its look permits (a known executable is not held up
        // behind them) and another uid's hash permits free.
        assert!(Arc::clone(&tickets[1].look).try_acquire_owned().is_ok());
        assert!(Arc::clone(&other.hash).try_acquire_owned().is_ok());
        // Stalled work keeps counting against its uid after its
        // connections are gone; once it ends, the uid is forgotten.
        drop(tickets);
        assert!(gate.uids.lock().unwrap().contains_key(&1000));
        drop(held);
        let t = gate.enter(1000).unwrap();
        assert_eq!(t.hash.available_permits(), HASH_PER_UID);
        drop(t);
        drop(other);
        assert!(gate.uids.lock().unwrap().is_empty());
    }
}
