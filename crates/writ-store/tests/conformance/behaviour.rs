//! Behaviour: refusals counted per agent.

use super::*;

/// Refusals are counted in 10-second buckets, per agent, kept for an hour,
/// and forgotten on request. None of it is audited by the store.
pub async fn denials_are_counted_in_buckets(s: Arc<dyn Store>) {
    let s = &*s;
    let (a, b) = (name("alpha"), name("beta"));
    let before = audit_len(s).await;
    assert_eq!(s.denials_since(&a, at(0)).await.unwrap(), 0);
    assert!(s.denial_counts(at(0)).await.unwrap().is_empty());
    // T0 is a multiple of 10 s: 0..10 is one bucket, 10..20 the next.
    for t in [
        at(1),
        at(5),
        Timestamp::from_millis(at(10).millis() - 1),
        at(12),
    ] {
        s.record_denial(&a, t).await.unwrap();
    }
    s.record_denial(&b, at(3)).await.unwrap();
    s.record_denial(&b, at(25)).await.unwrap();
    assert_eq!(s.denials_since(&a, at(0)).await.unwrap(), 4);
    // `since` is rounded down to its bucket.
    assert_eq!(s.denials_since(&a, at(9)).await.unwrap(), 4);
    assert_eq!(s.denials_since(&a, at(10)).await.unwrap(), 1);
    assert_eq!(s.denials_since(&a, at(19)).await.unwrap(), 1);
    assert_eq!(s.denials_since(&a, at(20)).await.unwrap(), 0);
    assert_eq!(s.denials_since(&a, at(-300)).await.unwrap(), 4);
    assert_eq!(s.denials_since(&name("gamma"), at(0)).await.unwrap(), 0);
    assert_eq!(
        s.denial_counts(at(0)).await.unwrap(),
        vec![(a.clone(), 4), (b.clone(), 2)]
    );
    assert_eq!(
        s.denial_counts(at(15)).await.unwrap(),
        vec![(a.clone(), 1), (b.clone(), 1)]
    );
    assert_eq!(s.denial_counts(at(20)).await.unwrap(), vec![(b.clone(), 1)]);

    // An hour on, the agent's old buckets are gone; another agent's stay.
    s.record_denial(&a, at(3_615)).await.unwrap();
    assert_eq!(s.denials_since(&a, at(0)).await.unwrap(), 2);
    s.record_denial(&a, at(3_625)).await.unwrap();
    assert_eq!(s.denials_since(&a, at(0)).await.unwrap(), 2);
    assert_eq!(s.denials_since(&b, at(0)).await.unwrap(), 2);

    s.clear_denials(&b, at(3_630)).await.unwrap();
    s.clear_denials(&name("gamma"), at(3_630)).await.unwrap();
    assert_eq!(s.denials_since(&b, at(0)).await.unwrap(), 0);
    assert_eq!(s.denial_counts(at(0)).await.unwrap(), vec![(a.clone(), 2)]);
    // A refusal made before the release, recorded after it (a gateway's,
    // delivered late), is forgiven with the rest; one made after counts.
    s.record_denial(&b, at(3_629)).await.unwrap();
    assert_eq!(s.denials_since(&b, at(0)).await.unwrap(), 0);
    s.record_denial(&b, at(3_631)).await.unwrap();
    assert_eq!(s.denials_since(&b, at(0)).await.unwrap(), 1);
    // An earlier release does not move the line back.
    s.clear_denials(&b, at(3_000)).await.unwrap();
    s.record_denial(&b, at(3_100)).await.unwrap();
    assert_eq!(s.denials_since(&b, at(0)).await.unwrap(), 0);
    assert_eq!(audit_len(s).await, before);
}

/// Many refusals at once all count, in a bounded number of rows.
pub async fn denials_under_concurrent_load(s: Arc<dyn Store>) {
    let a = name("alpha");
    let writers: Vec<_> = (0..200i64)
        .map(|i| {
            let (s, a) = (Arc::clone(&s), a.clone());
            tokio::spawn(async move { s.record_denial(&a, at(i % 30)).await.unwrap() })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(s.denials_since(&a, at(0)).await.unwrap(), 200);
    assert_eq!(s.denials_since(&a, at(20)).await.unwrap(), 60);
}

/// A gateway's refusals count against the agents they name, once each,
/// however often the batch is delivered.
pub async fn gateway_refusals_count_once(s: Arc<dyn Store>) {
    let s = &*s;
    s.create_gateway("gw-1", "hash-1", at(1), vec![])
        .await
        .unwrap();
    let call = |outcome: Outcome, agent: Option<&str>| {
        let e = AuditEvent::new(AuditKind::ToolCall, outcome, "gateway:gw-1");
        match agent {
            Some(a) => e.agent(a),
            None => e,
        }
    };
    let batch = vec![
        call(Outcome::Deny, Some("alpha")),
        call(Outcome::Success, Some("alpha")),
        call(Outcome::Deny, None),
        call(Outcome::Deny, Some("beta")),
        // Not an agent name: recorded in the audit, never counted.
        call(Outcome::Deny, Some("Not An Agent")),
        // Held for a person's approval: refused for now, not counted.
        call(Outcome::Deny, Some("beta")).detail(serde_json::json!({"held": true})),
    ];
    let (a, b) = (name("alpha"), name("beta"));
    assert_eq!(
        s.append_gateway_decisions("gw-1", 1, batch.clone(), at(100))
            .await
            .unwrap(),
        6
    );
    let counts = || async { s.denial_counts(at(0)).await.unwrap() };
    assert_eq!(counts().await, vec![(a.clone(), 1), (b.clone(), 1)]);
    // Redelivered whole: nothing new is counted.
    assert_eq!(
        s.append_gateway_decisions("gw-1", 1, batch.clone(), at(110))
            .await
            .unwrap(),
        6
    );
    assert_eq!(counts().await, vec![(a.clone(), 1), (b.clone(), 1)]);
    // Partly redelivered: only 7 and 8 are new.
    let mut more = batch[3..].to_vec();
    more.push(call(Outcome::Deny, Some("alpha")));
    more.push(call(Outcome::Deny, Some("alpha")));
    assert_eq!(
        s.append_gateway_decisions("gw-1", 4, more, at(120))
            .await
            .unwrap(),
        8
    );
    assert_eq!(counts().await, vec![(a.clone(), 3), (b.clone(), 1)]);
    // Counted at the time they were appended.
    assert_eq!(s.denials_since(&a, at(120)).await.unwrap(), 2);
    // A refused batch (a gap) counts nothing.
    assert!(
        s.append_gateway_decisions(
            "gw-1",
            10,
            vec![call(Outcome::Deny, Some("alpha"))],
            at(130)
        )
        .await
        .is_err()
    );
    assert_eq!(s.denials_since(&a, at(0)).await.unwrap(), 3);
    assert_chain(s).await;
}
