//! Detection rules' state: counts, one-off firings, attestation sources,
//! releases and approval holds, once for every replica.

use super::*;

/// A rule's events are counted per agent in its window; reaching the
/// threshold fires once and starts the count again; one agent's events
/// never move another's count.
pub async fn rule_counts_fire_once_per_threshold_per_agent(s: Arc<dyn Store>) {
    let (r, w) = ("refused", 60);
    assert_eq!(s.count_rule_event(r, "a", at(0), w, 3).await.unwrap(), None);
    assert_eq!(s.count_rule_event(r, "a", at(1), w, 3).await.unwrap(), None);
    // Another agent, another rule: their own counts.
    for i in 0..2 {
        assert_eq!(s.count_rule_event(r, "b", at(i), w, 3).await.unwrap(), None);
        assert_eq!(
            s.count_rule_event("other", "a", at(i), w, 3).await.unwrap(),
            None
        );
    }
    assert_eq!(
        s.count_rule_event(r, "a", at(2), w, 3).await.unwrap(),
        Some(3)
    );
    // Fired: counting starts again.
    assert_eq!(s.count_rule_event(r, "a", at(3), w, 3).await.unwrap(), None);
    assert_eq!(s.count_rule_event(r, "a", at(4), w, 3).await.unwrap(), None);
    // The window slides: the events at 3 and 4 are out of it at 64.
    assert_eq!(
        s.count_rule_event(r, "a", at(64), w, 3).await.unwrap(),
        None
    );
    assert_eq!(
        s.count_rule_event(r, "a", at(65), w, 3).await.unwrap(),
        None
    );
    assert_eq!(
        s.count_rule_event(r, "a", at(66), w, 3).await.unwrap(),
        Some(3)
    );
    assert_eq!(
        s.count_rule_event(r, "b", at(2), w, 3).await.unwrap(),
        Some(3)
    );
}

/// However many count at once (replicas, a flood), a threshold's worth of
/// events fires exactly once.
pub async fn rule_counts_fire_once_under_concurrent_load(s: Arc<dyn Store>) {
    let mut joins = Vec::new();
    for _ in 0..40 {
        let s = Arc::clone(&s);
        joins.push(tokio::spawn(async move {
            s.count_rule_event("burst", "a", at(0), 60, 40)
                .await
                .unwrap()
        }));
    }
    let mut fired = 0;
    for j in joins {
        if j.await.unwrap().is_some() {
            fired += 1;
        }
    }
    assert_eq!(fired, 1);
}

/// One-off firings, attestation sources, automatic releases and approval
/// holds.
pub async fn rule_state_round_trip(s: Arc<dyn Store>) {
    assert!(s.fire_once("expiring", "task-1", at(0)).await.unwrap());
    assert!(!s.fire_once("expiring", "task-1", at(5)).await.unwrap());
    assert!(s.fire_once("expiring", "task-2", at(5)).await.unwrap());

    let a = name("agent-a");
    // The first source is not new: there was none before it.
    assert!(
        !s.note_attestation_source(&a, "issuer:https://ci", at(0))
            .await
            .unwrap()
    );
    assert!(
        !s.note_attestation_source(&a, "issuer:https://ci", at(1))
            .await
            .unwrap()
    );
    assert!(
        s.note_attestation_source(&a, "node:other", at(2))
            .await
            .unwrap()
    );
    assert!(
        !s.note_attestation_source(&name("agent-b"), "node:other", at(2))
            .await
            .unwrap()
    );

    s.schedule_release(&a, "refused", at(100)).await.unwrap();
    assert!(s.due_releases(at(99)).await.unwrap().is_empty());
    assert_eq!(
        s.due_releases(at(100)).await.unwrap(),
        vec![(a.clone(), "refused".to_owned())]
    );
    assert_eq!(s.claim_release(&a, at(99)).await.unwrap(), None);
    assert_eq!(
        s.claim_release(&a, at(100)).await.unwrap(),
        Some("refused".into())
    );
    // Claimed once: a second replica gets nothing.
    assert_eq!(s.claim_release(&a, at(101)).await.unwrap(), None);
    s.schedule_release(&a, "refused", at(200)).await.unwrap();
    s.cancel_release(&a).await.unwrap();
    assert!(s.due_releases(at(300)).await.unwrap().is_empty());

    assert!(!s.approval_held(&a, at(0)).await.unwrap());
    s.hold_for_approval(&a, "r1", at(100)).await.unwrap();
    // A shorter hold does not shorten a longer one.
    s.hold_for_approval(&a, "r2", at(50)).await.unwrap();
    assert!(s.approval_held(&a, at(99)).await.unwrap());
    assert!(!s.approval_held(&a, at(100)).await.unwrap());
    assert_eq!(s.approval_holds(at(10)).await.unwrap(), vec![a.clone()]);
    assert!(s.approval_holds(at(100)).await.unwrap().is_empty());
}

/// Committed audit records reach the tap in order; a full tap drops
/// copies instead of holding the writer.
pub async fn audit_tap_sees_committed_records_and_never_blocks(s: Arc<dyn Store>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    assert!(s.tap_audit(tx.clone()));
    assert!(!s.tap_audit(tx), "one tap per store");
    let events: Vec<AuditEvent> = (0..5)
        .map(|i| ev(AuditKind::AgentUpdate).agent(format!("agent-{i}")))
        .collect();
    // Five records through a queue of two: the write still completes.
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        s.append_audit(at(0), events),
    )
    .await
    .unwrap()
    .unwrap();
    let first = rx.recv().await.unwrap();
    let second = rx.recv().await.unwrap();
    assert_eq!(first.event.agent.as_deref(), Some("agent-0"));
    assert_eq!(second.seq, first.seq + 1);
    assert!(rx.try_recv().is_err());
}
