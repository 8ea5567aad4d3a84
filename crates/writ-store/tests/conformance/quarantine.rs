//! Quarantine.

use super::*;

pub async fn quarantine_revokes_everything_and_release_restores(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let beta = register(s, "beta").await;
    join_token(s, &alpha, "jt-first", at(3_600)).await;
    join_token(s, &alpha, "jt-later", at(3_600)).await;

    let i1 = attest(s, &alpha, Some("jt-first"), "jti_i1", at(1))
        .await
        .unwrap();
    let i2 = attest(s, &alpha, None, "jti_i2", at(2)).await.unwrap();
    let t1 = start_task(s, &i1, "jti_t1", at(3), at(600), at(3_600))
        .await
        .unwrap();
    heartbeat(s, &t1, "jti_t1b", at(10), at(700)).await.unwrap();
    let t2 = start_task(s, &i2, "jti_t2", at(4), at(600), at(3_600))
        .await
        .unwrap();
    let done = start_task(s, &i1, "jti_done", at(5), at(600), at(3_600))
        .await
        .unwrap();
    let (done, _) = end(s, &done.task_id, TaskEnd::Completed, at(6))
        .await
        .unwrap();

    let bi = attest(s, &beta, None, "jti_bi", at(1)).await.unwrap();
    let bt = start_task(s, &bi, "jti_bt", at(3), at(600), at(3_600))
        .await
        .unwrap();

    let before = audit_len(s).await;
    let out = s
        .set_quarantine(
            &alpha,
            true,
            at(100),
            vec![ev(AuditKind::AgentQuarantine).agent(&alpha)],
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        QuarantineOutcome {
            revoked_tokens: 5,
            ended_tasks: 2
        }
    );
    assert_eq!(audit_len(s).await, before + 1);
    assert!(s.get_agent(&alpha).await.unwrap().unwrap().quarantined);
    assert!(!s.get_agent(&beta).await.unwrap().unwrap().quarantined);

    for jti in ["jti_i1", "jti_i2", "jti_t1", "jti_t1b", "jti_t2"] {
        let g = grant(s, jti).await;
        assert_eq!(g.revoked_at, Some(at(100)), "{jti}");
        assert!(g.agent_quarantined, "{jti}");
        assert!(g.instance_revoked, "{jti}");
        assert!(!g.is_live(at(100)), "{jti}");
    }
    // Already revoked before: keeps its original revocation time.
    assert_eq!(grant(s, "jti_done").await.revoked_at, Some(at(6)));
    for i in [&i1, &i2] {
        assert_eq!(
            s.get_instance(&i.id).await.unwrap().unwrap().revoked_at,
            Some(at(100))
        );
    }
    for t in [&t1, &t2] {
        let t = task_of(s, &t.task_id).await;
        assert_eq!(t.status, TaskStatus::Revoked);
        assert_eq!(t.ended_at, Some(at(100)));
        assert!(t.end_reason.is_some());
    }
    assert_eq!(task_of(s, &done.task_id).await, done);

    // Another agent is untouched.
    assert!(grant(s, "jti_bi").await.is_live(at(100)));
    assert!(grant(s, "jti_bt").await.is_live(at(100)));
    assert_eq!(
        s.get_instance(&bi.id).await.unwrap().unwrap().revoked_at,
        None
    );
    assert_eq!(task_of(s, &bt.task_id).await.status, TaskStatus::Active);

    // While quarantined: no new tasks, no new instances, nothing lingers.
    let before = audit_len(s).await;
    let err = start_task(s, &i1, "jti_q1", at(110), at(700), at(3_600))
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::Quarantined);
    assert_eq!(s.grant_state("jti_q1").await.unwrap(), None);
    let (qi, qg) = instance_and_grant(&alpha, "jti_q2", at(110));
    assert_eq!(
        s.create_instance(&qi, None, &qg, attest_events(&qi, "jti_q2"))
            .await
            .unwrap_err(),
        StoreError::Quarantined
    );
    let (qi2, qg2) = instance_and_grant(&alpha, "jti_q3", at(110));
    assert_eq!(
        s.create_instance(&qi2, Some("jt-later"), &qg2, attest_events(&qi2, "jti_q3"))
            .await
            .unwrap_err(),
        StoreError::Quarantined
    );
    for (i, jti) in [(&qi, "jti_q2"), (&qi2, "jti_q3")] {
        assert_eq!(s.get_instance(&i.id).await.unwrap(), None);
        assert_eq!(s.grant_state(jti).await.unwrap(), None);
    }
    let err = heartbeat(s, &t1, "jti_q4", at(110), at(800))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotActive(_)), "{err:?}");
    assert_eq!(end(s, &t1.task_id, TaskEnd::Completed, at(110)).await, None);
    assert_eq!(audit_len(s).await, before);

    // Quarantining again changes nothing more.
    let again = s
        .set_quarantine(&alpha, true, at(120), vec![ev(AuditKind::AgentQuarantine)])
        .await
        .unwrap();
    assert_eq!(again, QuarantineOutcome::default());
    assert_eq!(grant(s, "jti_i1").await.revoked_at, Some(at(100)));

    // Release.
    let out = s
        .set_quarantine(
            &alpha,
            false,
            at(200),
            vec![ev(AuditKind::AgentRelease).agent(&alpha)],
        )
        .await
        .unwrap();
    assert_eq!(out, QuarantineOutcome::default());
    assert!(!s.get_agent(&alpha).await.unwrap().unwrap().quarantined);
    // What was revoked stays revoked.
    for jti in ["jti_i1", "jti_t1", "jti_t1b"] {
        let g = grant(s, jti).await;
        assert!(!g.agent_quarantined, "{jti}");
        assert!(!g.is_live(at(200)), "{jti}");
    }
    assert_eq!(task_of(s, &t1.task_id).await.status, TaskStatus::Revoked);
    let err = start_task(s, &i1, "jti_r1", at(210), at(800), at(3_600))
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::InstanceRevoked);
    // Join tokens outstanding at quarantine were burned: a release does not
    // revive them. A join token minted after the release works.
    let (li, lg) = instance_and_grant(&alpha, "jti_r0", at(205));
    assert_eq!(
        s.create_instance(&li, Some("jt-later"), &lg, attest_events(&li, "jti_r0"))
            .await
            .unwrap_err(),
        StoreError::JoinToken(JoinTokenError::Used)
    );
    join_token(s, &alpha, "jt-after-release", at(3_600)).await;
    let fresh = attest(s, &alpha, Some("jt-after-release"), "jti_r2", at(210))
        .await
        .unwrap();
    let t = start_task(s, &fresh, "jti_r3", at(211), at(800), at(3_600))
        .await
        .unwrap();
    assert!(grant(s, "jti_r3").await.is_live(at(211)));
    assert_eq!(task_of(s, &t.task_id).await.status, TaskStatus::Active);

    // Unknown agent.
    let err = s
        .set_quarantine(
            &name("ghost"),
            true,
            at(300),
            vec![ev(AuditKind::AgentQuarantine)],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_chain(s).await;
}

pub async fn revoke_single_grant(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let inst = attest(s, &alpha, None, "jti_inst", at(0)).await.unwrap();
    let task = start_task(s, &inst, "jti_t", at(0), at(60), at(300))
        .await
        .unwrap();
    let before = audit_len(s).await;
    assert_eq!(
        s.revoke_grant(
            "jti_t",
            at(5),
            vec![ev(AuditKind::TokenRevoke).jti("jti_t")]
        )
        .await
        .unwrap(),
        Some(Revoked {
            revoked_tokens: 1,
            ended_tasks: 0
        })
    );
    assert_eq!(audit_len(s).await, before + 1);
    let g = grant(s, "jti_t").await;
    assert_eq!(g.revoked_at, Some(at(5)));
    assert!(!g.is_live(at(5)));
    // The task itself carries on, and so does the instance token.
    assert_eq!(task_of(s, &task.task_id).await.status, TaskStatus::Active);
    assert!(grant(s, "jti_inst").await.is_live(at(5)));

    // Already revoked, or unknown: false, nothing recorded.
    assert!(
        s.revoke_grant("jti_t", at(6), vec![ev(AuditKind::TokenRevoke)])
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.revoke_grant("jti_nope", at(6), vec![ev(AuditKind::TokenRevoke)])
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(grant(s, "jti_t").await.revoked_at, Some(at(5)));
    assert_eq!(audit_len(s).await, before + 1);
    assert_eq!(s.grant_state("jti_nope").await.unwrap(), None);

    // Ending the task counts only what was still unrevoked.
    let (_, n) = end(s, &task.task_id, TaskEnd::Completed, at(10))
        .await
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(grant(s, "jti_t").await.revoked_at, Some(at(5)));
    assert_chain(s).await;
}
