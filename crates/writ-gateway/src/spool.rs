//! Decisions on their way to the broker's audit chain: numbered, queued,
//! delivered in order in batches, and spooled to disk while the broker is
//! unreachable so that a restart loses none of them.
//!
//! The broker records each number once, so delivery is at least once and
//! recording exactly once.

use std::collections::VecDeque;
use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use writ_core::api::{GatewayDecisions, GatewayDecisionsAck};
use writ_core::audit::AuditEvent;

use crate::state::View;

/// Most decisions per delivery (the broker takes 1,000 and 8 MiB; events
/// are at most a few KiB, their free-text fields being capped).
const BATCH: usize = 500;
/// Past this many undelivered decisions in memory, new ones go to disk only.
const MAX_QUEUED: usize = 100_000;

#[derive(Debug, Serialize, Deserialize)]
struct Spooled {
    seq: u64,
    event: AuditEvent,
}

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<(u64, AuditEvent)>,
    next_seq: u64,
    /// Every queued decision is also in the spool file.
    on_disk: bool,
}

#[derive(Debug)]
pub struct Spool {
    inner: Mutex<Inner>,
    wake: tokio::sync::Notify,
    file: Option<PathBuf>,
}

impl Spool {
    /// Loads what a previous run left in `dir`.
    pub fn open(dir: Option<PathBuf>) -> std::io::Result<Self> {
        let file = match dir {
            Some(d) => {
                std::fs::create_dir_all(&d)?;
                Some(d.join("decisions.jsonl"))
            }
            None => None,
        };
        let mut inner = Inner::default();
        if let Some(f) = &file
            && let Ok(fh) = std::fs::File::open(f)
        {
            let mut damaged = false;
            for line in std::io::BufReader::new(fh).lines() {
                let line = line?;
                match serde_json::from_str::<Spooled>(&line) {
                    Ok(s) => inner.queue.push_back((s.seq, s.event)),
                    // A torn last line from a crash: the decision was
                    // never acknowledged to anyone, so skipping it is safe.
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping a damaged spool line");
                        damaged = true;
                    }
                }
            }
            if damaged {
                // Rewrite the file without it, so that the next append does
                // not run into the torn line.
                let tmp = f.with_extension("jsonl.tmp");
                let mut buf = Vec::new();
                for (seq, event) in &inner.queue {
                    serde_json::to_writer(
                        &mut buf,
                        &Spooled {
                            seq: *seq,
                            event: event.clone(),
                        },
                    )
                    .map_err(std::io::Error::other)?;
                    buf.push(b'\n');
                }
                std::fs::write(&tmp, &buf)?;
                std::fs::rename(&tmp, f)?;
            }
            inner.on_disk = !inner.queue.is_empty();
            inner.next_seq = inner.queue.back().map_or(0, |(s, _)| s.saturating_add(1));
        }
        Ok(Self {
            inner: Mutex::new(inner),
            wake: tokio::sync::Notify::new(),
            file,
        })
    }

    /// Queues a decision.
    pub fn push(&self, event: AuditEvent) {
        let Ok(mut g) = self.inner.lock() else {
            tracing::error!("decision spool lock poisoned; decision dropped");
            return;
        };
        // Numbering starts once the broker said where it stands.
        let seq = g.next_seq.max(1);
        g.next_seq = seq.saturating_add(1);
        if g.on_disk || g.queue.len() >= MAX_QUEUED {
            if let Err(e) = self.append(&[(seq, &event)]) {
                tracing::error!(error = %e, "cannot spool a decision to disk");
            }
            g.on_disk = true;
        }
        g.queue.push_back((seq, event));
        if g.queue.len() >= 512 {
            self.wake.notify_one();
        }
    }

    fn append(&self, items: &[(u64, &AuditEvent)]) -> std::io::Result<()> {
        let Some(f) = &self.file else {
            return Ok(());
        };
        let mut fh = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(f)?;
        let mut buf = Vec::new();
        for (seq, event) in items {
            serde_json::to_writer(
                &mut buf,
                &Spooled {
                    seq: *seq,
                    event: (*event).clone(),
                },
            )
            .map_err(std::io::Error::other)?;
            buf.push(b'\n');
        }
        fh.write_all(&buf)?;
        fh.sync_data()
    }

    /// Writes every queued decision to the spool file (once).
    fn spill(&self, g: &mut Inner) {
        if g.on_disk || self.file.is_none() {
            return;
        }
        let items: Vec<(u64, &AuditEvent)> = g.queue.iter().map(|(s, e)| (*s, e)).collect();
        match self.append(&items) {
            Ok(()) => g.on_disk = true,
            Err(e) => tracing::error!(error = %e, "cannot spool decisions to disk"),
        }
    }

    fn acked(&self, acked: u64) {
        let Ok(mut g) = self.inner.lock() else {
            return;
        };
        while g.queue.front().is_some_and(|(s, _)| *s <= acked) {
            g.queue.pop_front();
        }
        g.next_seq = g.next_seq.max(acked.saturating_add(1));
        if g.queue.is_empty() && g.on_disk {
            if let Some(f) = &self.file
                && let Err(e) = std::fs::remove_file(f)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(error = %e, "cannot clear the decision spool");
            }
            g.on_disk = false;
        }
    }

    /// Undelivered decisions.
    pub fn pending(&self) -> usize {
        self.inner.lock().map(|g| g.queue.len()).unwrap_or(0)
    }

    async fn deliver(
        &self,
        view: &View,
        first_seq: u64,
        batch: Vec<AuditEvent>,
    ) -> Result<u64, crate::state::BrokerCall> {
        let ack: GatewayDecisionsAck = view
            .broker()
            .deliver_decisions(&GatewayDecisions {
                first_seq,
                decisions: batch,
            })
            .await
            .map_err(crate::state::BrokerCall::to("/v1/gateway/decisions"))?;
        Ok(ack.acked)
    }

    /// Delivers for ever: learns where the broker stands, then sends batches
    /// as they fill or every 200 ms.
    pub async fn run(self: Arc<Self>, view: Arc<View>) {
        let mut backoff = Duration::from_millis(100);
        // Where does the broker stand? (An empty delivery answers that.)
        loop {
            match self.deliver(&view, 1, Vec::new()).await {
                Ok(acked) => {
                    if let Ok(mut g) = self.inner.lock() {
                        // Queued before this point: renumber what the
                        // broker cannot have seen (not from the spool file).
                        let start = acked.saturating_add(1);
                        if !g.on_disk {
                            let mut n = start;
                            for item in g.queue.iter_mut() {
                                item.0 = n;
                                n = n.saturating_add(1);
                            }
                            g.next_seq = n;
                        } else {
                            let last = g.queue.back().map_or(0, |(s, _)| *s);
                            g.next_seq = start.max(last.saturating_add(1));
                        }
                    }
                    self.acked(acked);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "decision delivery: broker unreachable");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        loop {
            let _ = tokio::time::timeout(Duration::from_millis(200), self.wake.notified()).await;
            loop {
                let batch: Vec<(u64, AuditEvent)> = match self.inner.lock() {
                    Ok(g) => g.queue.iter().take(BATCH).cloned().collect(),
                    Err(_) => return,
                };
                let Some(first) = batch.first().map(|(s, _)| *s) else {
                    break;
                };
                let n = batch.len();
                match self
                    .deliver(&view, first, batch.into_iter().map(|(_, e)| e).collect())
                    .await
                {
                    Ok(acked) => {
                        backoff = Duration::from_millis(100);
                        self.acked(acked);
                        if n < BATCH {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, pending = self.pending(), "decision delivery failed; spooling");
                        if let Ok(mut g) = self.inner.lock() {
                            self.spill(&mut g);
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]
    use super::*;
    use writ_core::audit::{AuditKind, Outcome};

    fn ev(n: u64) -> AuditEvent {
        AuditEvent::new(AuditKind::ToolCall, Outcome::Success, "gateway").reason(format!("{n}"))
    }

    #[test]
    fn numbered_in_order_and_acknowledged_from_the_front() {
        let s = Spool::open(None).unwrap();
        for n in 0..5 {
            s.push(ev(n));
        }
        let seqs: Vec<u64> = s
            .inner
            .lock()
            .unwrap()
            .queue
            .iter()
            .map(|(q, _)| *q)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        s.acked(3);
        let g = s.inner.lock().unwrap();
        assert_eq!(g.queue.front().unwrap().0, 4);
        assert_eq!(g.next_seq, 6);
    }

    #[test]
    fn spilled_decisions_survive_a_restart_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(Some(dir.path().to_owned())).unwrap();
        for n in 0..3 {
            s.push(ev(n));
        }
        {
            let mut g = s.inner.lock().unwrap();
            s.spill(&mut g);
        }
        // Pushed after the spill: straight to disk as well.
        s.push(ev(3));
        drop(s);
        // A crash tore a last line: it is dropped when the spool is opened.
        {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(dir.path().join("decisions.jsonl"))
                .unwrap();
            f.write_all(b"{\"seq\":5,\"ev").unwrap();
        }
        let again = Spool::open(Some(dir.path().to_owned())).unwrap();
        let g = again.inner.lock().unwrap();
        let got: Vec<(u64, String)> = g
            .queue
            .iter()
            .map(|(q, e)| (*q, e.reason.clone().unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, "0".into()),
                (2, "1".into()),
                (3, "2".into()),
                (4, "3".into())
            ]
        );
        assert_eq!(g.next_seq, 5);
        drop(g);
        // Everything acknowledged: the file goes.
        again.acked(4);
        assert!(!dir.path().join("decisions.jsonl").exists());
    }
}
