//! The process on the other end of a Workload API connection, pinned when
//! it connects and checked again whenever it is answered.
//!
//! This follows what SPIRE's agent does (its peer tracker): take a handle
//! on `/proc/PID` first, as soon as the connection is accepted, record the
//! process's start time, read everything else through that handle, and
//! check after attesting that the process is still the one that was
//! pinned. A directory handle of `/proc/PID` belongs to that process, not
//! to its number: once it has exited, reads through the handle fail, even
//! if the number has been given to another process since.
//!
//! Two things go beyond that. Where the kernel has it (`SO_PEERPIDFD`,
//! Linux 6.5), the connecting process is named by a pidfd from the socket
//! itself, so no other process can take its number between the connection
//! and the handle (without it, as SPIRE does, the process found under the
//! number must have the uid and gid that connected). And the link
//! `/proc/PID/exe` is recorded when pinned and must be unchanged at every
//! answer: a process that has run another executable since it was pinned
//! is not the process that was attested.
//!
//! Which process sends each request is the shim's business
//! (`authority.rs`, per-message credentials): together, a request is
//! answered only if it was sent by the process pinned here, and that
//! process still runs what it ran when it was pinned. A child that
//! inherited the socket, or a process it was passed to, is refused
//! whatever its parent runs by then.
//!
//! What is left: the kernel keeps no record of when a process last ran
//! `execve`, so a process that sends a request itself and then execs
//! another binary, both before the node pins it (between its `connect`
//! and the node's `accept`, which the node does at once), is attested as
//! that binary, and its answer goes to whoever holds the socket. Pinning
//! right at accept keeps that window as short as the node can make it.
//! Path selectors never held against a process of the same uid that
//! starts the allowed binary under its own control (`LD_PRELOAD`,
//! `ptrace`), which is why every agent's selectors must name a uid or gid.

use std::ffi::OsString;
use std::io::Read as _;
use std::os::fd::{AsFd, AsRawFd as _, OwnedFd};

use nix::fcntl::{OFlag, open, openat, readlinkat};
use nix::sys::socket::{getsockopt, sockopt::PeerPidfd};
use nix::sys::stat::Mode;

/// Why a connection no longer has the identity it was attested with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unattested {
    #[error("the process that connected has exited")]
    Gone,
    #[error("the process that connected cannot be pinned: {0}")]
    Unpinned(&'static str),
    #[error("{0}")]
    Changed(&'static str),
}

/// A pinned peer process.
#[derive(Debug)]
pub struct Process {
    pid: i32,
    /// `/proc/PID`, opened before anything else was read.
    dir: OwnedFd,
    /// Field 22 of `/proc/PID/stat`: when the process began, in clock
    /// ticks since boot. It does not change for the life of the process.
    start: u64,
    /// `/proc/PID/exe` when pinned.
    exe: OsString,
    /// Whether the process is in the node's own user namespace: see
    /// [`Process::same_user_namespace`].
    same_userns: bool,
}

fn gone(_: nix::Error) -> Unattested {
    Unattested::Gone
}

impl Process {
    /// Pins the process that connected on `socket`, whose peer
    /// credentials name `pid`, `uid` and `gid`.
    pub fn pin(socket: &impl AsFd, pid: i32, uid: u32, gid: u32) -> Result<Self, Unattested> {
        // The kernel's handle on the process that connected, if it has
        // one; taken before `/proc/PID` so that the process it names is
        // known to have held `pid` when the directory was opened.
        Self::pin_with(getsockopt(socket, PeerPidfd).ok(), pid, uid, gid)
    }

    fn pin_with(pidfd: Option<OwnedFd>, pid: i32, uid: u32, gid: u32) -> Result<Self, Unattested> {
        if pid <= 0 {
            return Err(Unattested::Unpinned("its pid is not visible here"));
        }
        let dir = open(
            format!("/proc/{pid}").as_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(gone)?;
        match &pidfd {
            Some(pidfd) => match pidfd_pid(pidfd) {
                Some(p) if p == pid => {}
                Some(p) if p < 0 => return Err(Unattested::Gone),
                _ => {
                    return Err(Unattested::Unpinned(
                        "its pid was taken by another process before it could be pinned",
                    ));
                }
            },
            // An older kernel: as SPIRE does, the owner of the process
            // found under that number must at least be the one that
            // connected.
            None => {
                let (ruid, rgid) = owner(&dir).ok_or(Unattested::Gone)?;
                if (ruid, rgid) != (uid, gid) {
                    return Err(Unattested::Unpinned(
                        "the process under its pid is not the one that connected",
                    ));
                }
            }
        }
        let start = start_time(&dir)?;
        let exe = readlinkat(&dir, "exe").map_err(gone)?;
        let ours = std::fs::read_link("/proc/self/ns/user").ok();
        let theirs = readlinkat(&dir, "ns/user").ok();
        let same_userns = ours.is_some() && ours.map(OsString::from) == theirs;
        Ok(Self {
            pid,
            dir,
            start,
            exe,
            same_userns,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The executable's path when the process was pinned (`None` if it is
    /// not UTF-8).
    pub fn exe(&self) -> Option<&str> {
        self.exe.to_str()
    }

    /// Whether the process shares the node's user namespace. A process in
    /// another one may hold capabilities over its own pid namespace, and
    /// with them claim another process's pid in the credentials of what it
    /// sends (`SCM_CREDENTIALS`): its executable then proves nothing, and
    /// only its uid and gid (from the connection) are attested.
    pub fn same_user_namespace(&self) -> bool {
        self.same_userns
    }

    /// The executable, opened through the pinned handle (blocking: it may
    /// touch the file's filesystem).
    pub fn open_exe(&self) -> Option<std::fs::File> {
        openat(
            &self.dir,
            "exe",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()
        .map(std::fs::File::from)
    }

    /// Whether this is still the process that was pinned, running the
    /// executable it ran then. Reads `/proc` only.
    pub fn check(&self) -> Result<(), Unattested> {
        if start_time(&self.dir)? != self.start {
            return Err(Unattested::Gone);
        }
        let exe = readlinkat(&self.dir, "exe").map_err(gone)?;
        if exe != self.exe {
            return Err(Unattested::Changed(
                "the process that connected has run another executable since",
            ));
        }
        Ok(())
    }
}

/// The pid a pidfd names, from `/proc/self/fdinfo`: negative once the
/// process has exited, 0 if it is not visible from here.
fn pidfd_pid(pidfd: &OwnedFd) -> Option<i32> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse().ok())
}

fn read_at(dir: &OwnedFd, name: &str) -> Result<String, Unattested> {
    let fd = openat(dir, name, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(gone)?;
    let mut text = String::new();
    std::fs::File::from(fd)
        .read_to_string(&mut text)
        .map_err(|_| Unattested::Gone)?;
    Ok(text)
}

/// Field 22 of `/proc/PID/stat`. The command name (field 2) is in
/// parentheses and may hold anything, spaces and parentheses included: the
/// fields after it are counted from its last `)`.
fn start_time(dir: &OwnedFd) -> Result<u64, Unattested> {
    parse_start_time(&read_at(dir, "stat")?).ok_or(Unattested::Unpinned("unreadable stat"))
}

fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` begins with field 3 (state).
    rest.split_ascii_whitespace().nth(22 - 3)?.parse().ok()
}

/// The effective uid and gid of the process, from `/proc/PID/status` (the
/// credentials `SO_PEERCRED` reports are the effective ones).
fn owner(dir: &OwnedFd) -> Option<(u32, u32)> {
    let status = read_at(dir, "status").ok()?;
    let field = |name: &str| -> Option<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_ascii_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("Uid:")?, field("Gid:")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    #[test]
    fn the_start_time_is_counted_from_the_last_parenthesis() {
        let stat = "42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 100 18446744073709551615";
        assert_eq!(parse_start_time(stat), Some(987_654));
        assert_eq!(parse_start_time("42 (x"), None);
        assert_eq!(parse_start_time("42 (x) S 1"), None);
    }

    fn me() -> (i32, u32, u32) {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let cred =
            nix::sys::socket::getsockopt(&a, nix::sys::socket::sockopt::PeerCredentials).unwrap();
        (cred.pid(), cred.uid(), cred.gid())
    }

    #[test]
    fn this_process_pins_and_stays_itself() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (pid, uid, gid) = me();
        let p = Process::pin(&a, pid, uid, gid).unwrap();
        assert_eq!(p.pid(), std::process::id() as i32);
        assert_eq!(
            p.exe().map(std::path::PathBuf::from),
            Some(std::env::current_exe().unwrap())
        );
        assert!(p.same_user_namespace());
        p.check().unwrap();
        assert!(Process::pin(&a, 0, uid, gid).is_err());
        // The pidfd names this process: another pid is refused.
        assert!(Process::pin(&a, 1, uid, gid).is_err());
    }

    /// A process pinned while it runs one executable fails the check once
    /// it has run another, and once it has exited.
    #[test]
    fn h1_a_process_that_execs_or_exits_is_no_longer_the_attested_one() {
        let (_, uid, gid) = me();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("read line; exec sleep 30")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // Not the socket's peer: pinned as on a kernel without pidfds.
        let p = Process::pin_with(None, pid, uid, gid).unwrap();
        p.check().unwrap();
        child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while p.check().is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "the exec was not seen"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(matches!(p.check(), Err(Unattested::Changed(_))));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(p.check(), Err(Unattested::Gone));
    }
}
