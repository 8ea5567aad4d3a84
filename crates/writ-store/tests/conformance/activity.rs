//! Decisions over time, grouped in the store.

use super::*;

fn decided(kind: AuditKind, outcome: Outcome, policies: &[&str]) -> AuditEvent {
    AuditEvent::new(kind, outcome, "gateway")
        .policy("v1", policies.iter().map(|p| (*p).to_owned()).collect())
}

pub async fn decisions_over_time_are_grouped_in_the_store_over_the_whole_range(s: Arc<dyn Store>) {
    let s = &*s;
    let (from, until) = (at(600), at(900));
    let empty = s.audit_activity(from, until, 10, 10).await.unwrap();
    assert_eq!(empty, writ_store::AuditActivity::default());

    // Many records before the range, none of them counted.
    for _ in 0..5 {
        let before: Vec<AuditEvent> = (0..100)
            .map(|_| decided(AuditKind::ToolCall, Outcome::Deny, &["no-deletes"]))
            .collect();
        s.append_audit(at(0), before).await.unwrap();
    }
    // Minute 0: two allowed decisions and a denial.
    s.append_audit(
        at(610),
        vec![
            decided(AuditKind::TaskStart, Outcome::Success, &["reads"]),
            decided(AuditKind::ToolCall, Outcome::Success, &["reads"]),
            decided(AuditKind::Decision, Outcome::Deny, &["no-deletes"]),
        ],
    )
    .await
    .unwrap();
    // Minute 2: a denial by two policies, one by none; a success that is
    // no decision and a failure, neither counted.
    s.append_audit(
        at(725),
        vec![
            decided(AuditKind::ToolCall, Outcome::Deny, &["a", "b"]),
            decided(AuditKind::TokenRefused, Outcome::Deny, &[]),
            ev(AuditKind::PolicyLoad),
            decided(AuditKind::Approval, Outcome::Failure, &[]),
        ],
    )
    .await
    .unwrap();
    // Minute 1, written after minute 2 (a write that waited): counted in
    // its own minute.
    s.append_audit(
        at(670),
        vec![decided(AuditKind::TokenExchange, Outcome::Success, &[])],
    )
    .await
    .unwrap();
    // At the end of the range: outside it.
    s.append_audit(
        until,
        vec![decided(AuditKind::ToolCall, Outcome::Deny, &["no-deletes"])],
    )
    .await
    .unwrap();

    let a = s.audit_activity(from, until, 10, 2).await.unwrap();
    assert_eq!(a.minutes, vec![(0, 2, 1), (1, 1, 0), (2, 0, 2)]);
    assert_eq!(
        a.denied_by,
        vec![
            ("(no policy)".to_owned(), 1),
            ("a".to_owned(), 1),
            ("b".to_owned(), 1),
            ("no-deletes".to_owned(), 1),
        ]
    );
    let kinds: Vec<AuditKind> = a
        .recent_denials
        .iter()
        .map(|r| r.parsed().unwrap().kind)
        .collect();
    assert_eq!(kinds, vec![AuditKind::TokenRefused, AuditKind::ToolCall]);
    let all = all_audit(s).await;
    for r in &a.recent_denials {
        assert!(all.contains(r), "a record as it is in the chain");
    }

    // The policies most denied first, at most as many as asked for.
    s.append_audit(
        at(800),
        vec![decided(AuditKind::ToolCall, Outcome::Deny, &["b"])],
    )
    .await
    .unwrap();
    let a = s.audit_activity(from, until, 2, 0).await.unwrap();
    assert_eq!(
        a.denied_by,
        vec![("b".to_owned(), 2), ("(no policy)".to_owned(), 1)]
    );
    assert!(a.recent_denials.is_empty());
    assert_eq!(a.minutes.last(), Some(&(3, 0, 1)));

    // A range with nothing in it, and one before every record.
    let later = s.audit_activity(at(5000), at(6000), 10, 10).await.unwrap();
    assert_eq!(later, writ_store::AuditActivity::default());
    let earlier = s.audit_activity(at(-600), at(-1), 10, 10).await.unwrap();
    assert_eq!(earlier, writ_store::AuditActivity::default());
}
