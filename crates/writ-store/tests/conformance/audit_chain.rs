//! The audit chain.

use super::*;

pub async fn audit_chain_survives_concurrent_writes(s: Arc<dyn Store>) {
    register(&*s, "taken").await;
    let before = audit_len(&*s).await;

    let mut handles = Vec::new();
    for n in 0..200u32 {
        let s = Arc::clone(&s);
        handles.push(tokio::spawn(async move {
            // Every tenth writer also registers an agent, and every tenth
            // tries (and fails) to register a taken name, so successful and
            // failing jobs share group-commit batches.
            if n % 10 == 0 {
                let a = agent_record(&format!("agent-{n}"), at(i64::from(n)));
                s.create_agent(
                    &a,
                    vec![ev(AuditKind::AgentRegister).detail(serde_json::json!({ "agent": n }))],
                )
                .await
                .unwrap();
            }
            if n % 10 == 5 {
                let err = s
                    .create_agent(
                        &agent_record("taken", at(i64::from(n))),
                        vec![ev(AuditKind::AgentRegister).detail(serde_json::json!({ "dup": n }))],
                    )
                    .await
                    .unwrap_err();
                assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
            }
            let events = vec![
                AuditEvent::new(AuditKind::PolicyLoad, Outcome::Deny, "system")
                    .detail(serde_json::json!({ "n": n, "part": 0 })),
                AuditEvent::new(AuditKind::PolicyLoad, Outcome::Deny, "system")
                    .detail(serde_json::json!({ "n": n, "part": 1 })),
            ];
            s.append_audit(at(i64::from(n)), events).await.unwrap();
        }));
    }
    for h in handles {
        h.await.unwrap();
    }

    let n = assert_chain(&*s).await;
    assert_eq!(n as usize, before + 200 * 2 + 20);
    let records = all_audit(&*s).await;
    let mut appended = BTreeSet::new();
    let mut registered = BTreeSet::new();
    for r in &records[before..] {
        let e = r.parsed().unwrap();
        if let Some(n) = e.detail.get("n").and_then(serde_json::Value::as_u64) {
            let part = e.detail["part"].as_u64().unwrap();
            assert!(
                appended.insert((n, part)),
                "event {n}/{part} appended twice"
            );
            assert_eq!(r.ts, at(n as i64));
        } else if let Some(n) = e.detail.get("agent").and_then(serde_json::Value::as_u64) {
            registered.insert(n);
        } else {
            panic!("unexpected audit event {}", r.event);
        }
    }
    assert_eq!(appended.len(), 400);
    // The two events of one call are adjacent: a call's events are not
    // interleaved with another's.
    for w in records[before..].windows(2) {
        let (a, b) = (w[0].parsed().unwrap(), w[1].parsed().unwrap());
        if a.detail.get("part").and_then(serde_json::Value::as_u64) == Some(0) {
            assert_eq!(b.detail["n"], a.detail["n"]);
            assert_eq!(b.detail["part"], 1);
        }
    }
    assert_eq!(registered, (0..200).step_by(10).collect::<BTreeSet<u64>>());
    assert_eq!(s.list_agents().await.unwrap().len(), 21);
}

pub async fn failed_writes_append_no_audit(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let inst = attest(s, &alpha, None, "jti_inst", at(0)).await.unwrap();
    let task = start_task(s, &inst, "jti_t", at(0), at(60), at(300))
        .await
        .unwrap();
    end(s, &task.task_id, TaskEnd::Completed, at(1))
        .await
        .unwrap();
    let before = all_audit(s).await;

    let err = s
        .create_agent(
            &agent_record("alpha", at(2)),
            vec![ev(AuditKind::AgentRegister)],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert!(
        attest(s, &alpha, Some("jt-none"), "jti_x1", at(2))
            .await
            .is_err()
    );
    assert!(
        attest(s, &name("ghost"), None, "jti_x2", at(2))
            .await
            .is_err()
    );
    assert!(heartbeat(s, &task, "jti_x3", at(2), at(60)).await.is_err());
    assert!(
        start_task(s, &inst, "jti_t", at(2), at(60), at(300))
            .await
            .is_err()
    );
    assert!(
        s.create_join_token(
            &name("ghost"),
            "jt",
            at(60),
            at(2),
            vec![ev(AuditKind::JoinTokenCreate)]
        )
        .await
        .is_err()
    );
    assert!(
        s.set_quarantine(
            &name("ghost"),
            true,
            at(2),
            vec![ev(AuditKind::AgentQuarantine)]
        )
        .await
        .is_err()
    );

    assert_eq!(
        all_audit(s).await,
        before,
        "a failed write appended audit records"
    );
    // And the chain carries on from the same head.
    s.append_audit(at(3), vec![ev(AuditKind::PolicyLoad)])
        .await
        .unwrap();
    let after = all_audit(s).await;
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(after.last().unwrap().prev_hash, before.last().unwrap().hash);
    assert_chain(s).await;
}

pub async fn audit_pages(s: Arc<dyn Store>) {
    let s = &*s;
    assert!(all_audit(s).await.is_empty());
    assert_eq!(s.audit_head().await.unwrap(), 0);
    s.append_audit(at(0), vec![]).await.unwrap();
    assert!(
        all_audit(s).await.is_empty(),
        "an empty append made a record"
    );
    assert_eq!(s.audit_head().await.unwrap(), 0);
    let events: Vec<AuditEvent> = (0..10)
        .map(|i| ev(AuditKind::PolicyLoad).reason(format!("r{i}")))
        .collect();
    s.append_audit(at(1), events.clone()).await.unwrap();

    let all = all_audit(s).await;
    assert_eq!(all.len(), 10);
    assert_eq!(all[0].prev_hash, audit::GENESIS);
    for (r, e) in all.iter().zip(&events) {
        assert_eq!(r.event, e.to_canonical_json());
        assert_eq!(r.parsed().unwrap(), *e);
        assert_eq!(r.ts, at(1));
    }
    let page = s.audit_after(5, 3).await.unwrap();
    assert_eq!(
        page.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![6, 7, 8]
    );
    assert_eq!(page, all[5..8].to_vec());
    assert!(s.audit_after(10, 5).await.unwrap().is_empty());
    assert!(s.audit_after(0, 0).await.unwrap().is_empty());

    // Reading the chain page by page verifies like reading it whole.
    let mut v = audit::Verifier::default();
    let mut after = 0;
    loop {
        let page = s.audit_after(after, 4).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        for r in &page {
            v.push(r).unwrap();
        }
    }
    assert_eq!(v.head().0, 10);
    assert_eq!(v.head().1, all[9].hash);
}

/// A cursor past the end reads nothing, however large it is.
pub async fn audit_after_huge_cursor_is_empty(s: Arc<dyn Store>) {
    let s = &*s;
    s.append_audit(
        at(0),
        vec![ev(AuditKind::PolicyLoad), ev(AuditKind::PolicyLoad)],
    )
    .await
    .unwrap();
    assert!(s.audit_after(2, 10).await.unwrap().is_empty());
    for cursor in [
        u64::from(u32::MAX),
        i64::MAX as u64,
        i64::MAX as u64 + 1,
        u64::MAX,
    ] {
        let page = s.audit_after(cursor, 10).await.unwrap();
        assert!(
            page.is_empty(),
            "audit_after({cursor}) returned seqs {:?}",
            page.iter().map(|r| r.seq).collect::<Vec<_>>()
        );
    }
}
