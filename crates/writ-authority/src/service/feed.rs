//! The revocation feed: every revocation in order, resumable by sequence,
//! long-polled by enforcement points.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use writ_core::api::RevocationPage;
use writ_store::Store;

use crate::error::Error;

/// The longest a feed request waits for news.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
const PAGE: u32 = 1000;

/// A follower that took news has this long to come back for more before
/// acknowledgements stop waiting for it.
const COME_BACK: Duration = Duration::from_secs(1);
/// A follower not seen for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(300);
/// Most followers tracked per gateway credential (the least recently seen
/// one goes first).
const MAX_FOLLOWERS_PER_GATEWAY: usize = 64;

/// The gateways following the feed, and how far each has taken it: a
/// follower's `after` says it holds everything up to there.
///
/// An acknowledgement waits only for followers that keep up: one that asked
/// holding everything it was handed last (a new one: everything there was),
/// and is in its poll or just out of it. A follower that asks with an old
/// sequence is catching up and is not waited for, so one stale long-poll
/// cannot hold every revocation up; it fails closed on its side once its
/// view is older than its staleness bound. A follower that took news and
/// does not come back within [`COME_BACK`] is not waited for either.
#[derive(Debug, Default)]
pub(crate) struct Followers {
    by_key: Mutex<HashMap<(String, String), Follower>>,
    acked: tokio::sync::Notify,
}

#[derive(Debug, Clone, Copy)]
struct Follower {
    acked: u64,
    /// The `next` of its last answer: what it should hold when it asks
    /// again.
    handed: u64,
    /// Whether it held what it was handed when it last asked.
    keeping_up: bool,
    /// Waited for until then: the poll it is in, then a moment to come
    /// back.
    live_until: Instant,
    seen: Instant,
}

/// Whether every follower an acknowledgement waits for holds a sequence.
#[derive(Debug, PartialEq, Eq)]
enum Holding {
    All,
    /// Not yet; the soonest one of those that do not stops being waited
    /// for then.
    Waiting(Instant),
}

/// A follower's poll in progress: when it ends (answered or dropped), the
/// follower has [`COME_BACK`] to ask again.
pub(crate) struct Following<'a> {
    followers: &'a Followers,
    key: (String, String),
    next: Option<u64>,
}

impl Following<'_> {
    fn answered(&mut self, next: u64) {
        self.next = Some(next);
    }
}

impl Drop for Following<'_> {
    fn drop(&mut self) {
        let now = Instant::now();
        if let Ok(mut m) = self.followers.by_key.lock()
            && let Some(f) = m.get_mut(&self.key)
        {
            if let Some(n) = self.next {
                f.handed = f.handed.max(n);
            }
            f.live_until = f.live_until.min(now + COME_BACK);
            f.seen = now;
        }
    }
}

impl Followers {
    /// `follower` of `gateway` asks for what follows `after`, `head` being
    /// the newest revocation now; it waits up to `wait`.
    fn asked(
        &self,
        gateway: &str,
        follower: &str,
        after: u64,
        head: u64,
        wait: Duration,
    ) -> Following<'_> {
        let key = (gateway.to_owned(), follower.to_owned());
        let now = Instant::now();
        if let Ok(mut m) = self.by_key.lock() {
            if !m.contains_key(&key) {
                forget_stale(&mut m, gateway, now);
            }
            let f = m.entry(key.clone()).or_insert(Follower {
                acked: 0,
                handed: head,
                keeping_up: false,
                live_until: now,
                seen: now,
            });
            f.keeping_up = after >= f.handed;
            f.acked = f.acked.max(after);
            f.live_until = now + wait.min(MAX_WAIT) + COME_BACK;
            f.seen = now;
        }
        self.acked.notify_waiters();
        Following {
            followers: self,
            key,
            next: None,
        }
    }

    /// Whether every follower that keeps up and is live holds `seq`.
    fn holding(&self, seq: u64) -> Holding {
        let now = Instant::now();
        let Ok(m) = self.by_key.lock() else {
            return Holding::All;
        };
        m.values()
            .filter(|f| f.keeping_up && f.live_until > now && f.acked < seq)
            .map(|f| f.live_until)
            .min()
            .map_or(Holding::All, Holding::Waiting)
    }

    /// Every follower tracked now: `(gateway, process, held, last seen,
    /// in or just out of a poll)`.
    fn snapshot(&self) -> Vec<(String, String, u64, Instant, bool)> {
        let now = Instant::now();
        let Ok(m) = self.by_key.lock() else {
            return Vec::new();
        };
        m.iter()
            .map(|((g, p), f)| (g.clone(), p.clone(), f.acked, f.seen, f.live_until > now))
            .collect()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_key.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// Forgets followers not seen for a while, and makes room for one more of
/// `gateway`.
fn forget_stale(m: &mut HashMap<(String, String), Follower>, gateway: &str, now: Instant) {
    m.retain(|_, f| f.live_until > now || now.duration_since(f.seen) < FORGET_AFTER);
    let mine = m.keys().filter(|(g, _)| g == gateway).count();
    if mine >= MAX_FOLLOWERS_PER_GATEWAY {
        let oldest = m
            .iter()
            .filter(|((g, _), _)| g == gateway)
            .min_by_key(|(_, f)| f.seen)
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            m.remove(&k);
        }
    }
}

/// Who follows the revocation feed, against its head.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FeedFollowers {
    /// The newest revocation's sequence number.
    pub head: u64,
    pub followers: Vec<FeedFollower>,
}

/// One gateway process following the feed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FeedFollower {
    /// The gateway credential's name (`embedded`: the one in `writ serve`).
    pub gateway: String,
    /// Which of its processes (as it names itself; may be empty).
    pub process: String,
    /// The last revocation it said it holds.
    pub held: u64,
    /// Revocations it does not hold yet (the head less `held`).
    pub behind: u64,
    /// How long the oldest revocation it does not hold has been out
    /// (milliseconds; 0 when it holds them all): how late a revoked token
    /// may still pass there.
    pub lag_ms: u64,
    /// Since it last asked or its poll ended (milliseconds).
    pub seen_ms_ago: u64,
    /// Whether it is in a poll now (or just out of one).
    pub polling: bool,
}

/// The revocation feed as a service of its own: the store it reads, who
/// follows it, and the wake-ups a revocation sends.
pub struct Revocations {
    store: Arc<dyn Store>,
    followers: Followers,
    /// Woken whenever a revocation may have been written.
    revoked: Notify,
    /// Woken when a task ends, so its database roles are dropped at once.
    pub(crate) tasks_ended: Notify,
    /// How long a change waits for the gateways that keep up to hold it.
    propagation_wait: Duration,
}

impl Revocations {
    pub fn new(store: Arc<dyn Store>, propagation_wait: Duration) -> Self {
        Self {
            store,
            followers: Followers::default(),
            revoked: Notify::new(),
            tasks_ended: Notify::new(),
            propagation_wait,
        }
    }

    /// The gateways following the feed of this broker and how far behind
    /// its head each is (the console's overview), most behind first.
    /// `now`: the clock revocations are stamped by, for their lag.
    pub async fn followers(&self, now: writ_core::Timestamp) -> Result<FeedFollowers, Error> {
        let head = self.store.revocation_head().await?;
        let at = Instant::now();
        let mut followers: Vec<FeedFollower> = self
            .followers
            .snapshot()
            .into_iter()
            .map(|(gateway, process, held, seen, polling)| FeedFollower {
                gateway,
                process,
                held,
                behind: head.saturating_sub(held),
                lag_ms: 0,
                seen_ms_ago: u64::try_from(at.duration_since(seen).as_millis()).unwrap_or(u64::MAX),
                polling,
            })
            .collect();
        // The oldest revocation each does not hold, read once per place
        // in the feed (processes of one gateway mostly hold the same).
        let mut out_since = HashMap::new();
        for f in followers.iter_mut().filter(|f| f.behind > 0) {
            let since = match out_since.get(&f.held) {
                Some(s) => *s,
                None => {
                    let s = self
                        .store
                        .revocations_after(f.held, 1)
                        .await?
                        .first()
                        .map(|r| r.revoked_at);
                    out_since.insert(f.held, s);
                    s
                }
            };
            f.lag_ms = since.map_or(0, |s| {
                u64::try_from(now.millis().saturating_sub(s.millis())).unwrap_or(0)
            });
        }
        followers.sort_by(|a, b| {
            b.behind
                .cmp(&a.behind)
                .then_with(|| a.gateway.cmp(&b.gateway))
                .then_with(|| a.process.cmp(&b.process))
        });
        Ok(FeedFollowers { head, followers })
    }

    /// Wakes feed readers after another replica wrote revocations.
    pub(crate) fn wake_readers(&self) {
        self.revoked.notify_waiters();
    }

    /// Revocations after `after`; with nothing new, waits up to `wait` for
    /// the next one. `follower`: the gateway asking and which of its
    /// processes (its `after` is its acknowledgement).
    pub async fn page(
        &self,
        follower: Option<(&str, &str)>,
        after: u64,
        wait: Duration,
    ) -> Result<RevocationPage, Error> {
        // Everything up to the head now is in the page read below (unless
        // it is full): a follower that reaches it is caught up.
        let head = self.store.revocation_head().await?;
        let mut following = follower.map(|(g, f)| self.followers.asked(g, f, after, head, wait));
        let notified = self.revoked.notified();
        tokio::pin!(notified);
        // Register for the wake-up before looking, so none is missed.
        notified.as_mut().enable();
        let mut page = self.store.revocations_after(after, PAGE).await?;
        if page.is_empty() && !wait.is_zero() {
            let _ = tokio::time::timeout(wait.min(MAX_WAIT), notified).await;
            page = self.store.revocations_after(after, PAGE).await?;
        }
        let next = page.last().map_or(after, |r| r.seq);
        if let Some(f) = following.as_mut() {
            f.answered(next);
        }
        Ok(RevocationPage {
            revocations: page,
            next,
            head: Some(head),
        })
    }

    /// Wakes feed readers after a change that may have revoked something,
    /// then waits (bounded by `propagation_wait`) until every gateway that
    /// keeps up holds it, so that once the change is acknowledged the next
    /// request through any such gateway is refused.
    pub(crate) async fn changed(&self) {
        self.revoked.notify_waiters();
        self.tasks_ended.notify_one();
        let head = match self.store.revocation_head().await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the revocation head; not waiting for gateways");
                return;
            }
        };
        let deadline = tokio::time::Instant::now() + self.propagation_wait;
        loop {
            let notified = self.followers.acked.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let until = match self.followers.holding(head) {
                Holding::All => return,
                Holding::Waiting(at) => deadline.min(tokio::time::Instant::from_std(at)),
            };
            if tokio::time::timeout_at(until, notified).await.is_err()
                && tokio::time::Instant::now() >= deadline
            {
                tracing::warn!(
                    seq = head,
                    "a gateway did not take a revocation in time; it fails closed once stale"
                );
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(30);

    #[test]
    fn followers_are_shown_with_what_they_hold() {
        let f = Followers::default();
        let mut poll = f.asked("edge", "p1", 5, 7, WAIT);
        poll.answered(7);
        drop(poll);
        drop(f.asked("other", "", 7, 7, WAIT));
        let mut seen = f.snapshot();
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        let held: Vec<_> = seen
            .iter()
            .map(|(g, p, held, _, _)| (g.as_str(), p.as_str(), *held))
            .collect();
        assert_eq!(held, [("edge", "p1", 5), ("other", "", 7)]);
        assert!(seen.iter().all(|s| s.4), "both polled a moment ago");
    }

    #[test]
    fn h11_a_stale_follower_is_not_waited_for() {
        let f = Followers::default();
        // An honest follower, caught up at 10, in its poll.
        let honest = f.asked("edge", "p1", 10, 10, WAIT);
        // A stale one: asks from 0 with 10 revocations out.
        let stale = f.asked("edge", "p2", 0, 10, WAIT);
        assert!(matches!(f.holding(11), Holding::Waiting(_)));
        drop(honest);
        // The honest one comes back holding 11: nothing else is waited for.
        let _again = f.asked("edge", "p1", 11, 11, WAIT);
        assert_eq!(f.holding(11), Holding::All);
        drop(stale);
    }

    #[test]
    fn h11_a_follower_keeps_up_by_holding_what_it_was_handed() {
        let f = Followers::default();
        let mut poll = f.asked("edge", "p1", 10, 10, WAIT);
        poll.answered(12);
        drop(poll);
        // Handed 12, back with 12 while the head moved to 13: keeping up,
        // so revocation 13 waits for it.
        let back = f.asked("edge", "p1", 12, 13, WAIT);
        assert!(matches!(f.holding(13), Holding::Waiting(_)));
        drop(back);
        // Back with 10 instead (it did not take what it was handed): not
        // waited for.
        let _stale = f.asked("edge", "p1", 10, 13, WAIT);
        assert_eq!(f.holding(13), Holding::All);
    }

    #[test]
    fn h11_a_follower_that_took_news_has_a_moment_to_come_back() {
        let f = Followers::default();
        let mut poll = f.asked("edge", "p1", 10, 10, WAIT);
        poll.answered(11);
        drop(poll);
        match f.holding(11) {
            Holding::Waiting(until) => assert!(until <= Instant::now() + COME_BACK),
            Holding::All => panic!("a follower just answered is waited for a moment"),
        }
    }

    #[test]
    fn h11_followers_are_pruned_and_bounded_per_gateway() {
        let f = Followers::default();
        for i in 0..(MAX_FOLLOWERS_PER_GATEWAY + 10) {
            drop(f.asked("edge", &format!("p{i}"), 0, 0, Duration::ZERO));
        }
        drop(f.asked("other", "p0", 0, 0, Duration::ZERO));
        assert_eq!(f.len(), MAX_FOLLOWERS_PER_GATEWAY + 1);
        // Followers long unseen are forgotten when a new one comes.
        let later = Instant::now() + FORGET_AFTER + WAIT + COME_BACK;
        if let Ok(mut m) = f.by_key.lock() {
            forget_stale(&mut m, "edge", later);
        }
        assert_eq!(f.len(), 0);
        drop(f.asked("edge", "new", 0, 0, Duration::ZERO));
        assert_eq!(f.len(), 1);
    }
}
