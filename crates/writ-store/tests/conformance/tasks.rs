//! Tasks.

use super::*;

pub async fn task_round_trip(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let inst = attest(s, &alpha, None, "jti_i", at(0)).await.unwrap();
    let task = start_task(s, &inst, "jti_t", at(1), at(61), at(301))
        .await
        .unwrap();
    assert_eq!(task_of(s, &task.task_id).await, task);
    assert_eq!(
        s.get_task(&TaskId::generate().unwrap()).await.unwrap(),
        None
    );
    let g = grant(s, "jti_t").await;
    assert_eq!(g.grant.kind, GrantKind::TaskToken);
    assert_eq!(g.grant.task_id.as_ref(), Some(&task.task_id));
    assert_eq!(g.task_status, Some(TaskStatus::Active));
    assert!(g.is_live(at(1)));
    assert!(!g.is_live(at(61)), "a grant must die at its own expiry");

    // A task on an unknown instance is refused and leaves nothing behind.
    let (ghost, _) = instance_and_grant(&alpha, "unused", at(0));
    let before = audit_len(s).await;
    let err = start_task(s, &ghost, "jti_ghost", at(2), at(62), at(302))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(s.grant_state("jti_ghost").await.unwrap(), None);
    assert_eq!(audit_len(s).await, before);

    // A duplicate task id is a conflict.
    let (mut dup, dup_grant) = task_and_grant(&inst, "jti_dup", at(3), at(63), at(303));
    dup.task_id = task.task_id.clone();
    let dup_grant = Grant {
        task_id: Some(task.task_id.clone()),
        ..dup_grant
    };
    let err = s
        .create_task(&dup, &dup_grant, vec![ev(AuditKind::TaskStart)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(s.grant_state("jti_dup").await.unwrap(), None);
    assert_eq!(task_of(s, &task.task_id).await, task);
    assert_eq!(audit_len(s).await, before);
}

/// Nodes: registered once, attested with a join token exactly once (the
/// credential replaced by each attestation), found by their credential
/// until quarantined; the trust domain's keys round-trip.
pub async fn nodes_and_spiffe_keys(s: Arc<dyn Store>) {
    let s = &*s;
    let node = |n: &str| writ_core::api::Node {
        name: n.to_owned(),
        attestation: writ_core::api::Attestation::JoinToken,
        quarantined: false,
        created_at: at(0),
        attested_at: None,
    };
    s.create_node(&node("node-b"), vec![ev(AuditKind::Node)])
        .await
        .unwrap();
    s.create_node(&node("node-a"), vec![ev(AuditKind::Node)])
        .await
        .unwrap();
    let dup = s
        .create_node(&node("node-a"), vec![ev(AuditKind::Node)])
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    let names: Vec<String> = s
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["node-a", "node-b"]);
    assert_eq!(s.get_node("node-a").await.unwrap(), Some(node("node-a")));
    assert_eq!(s.get_node("nope").await.unwrap(), None);

    s.create_node_join_token("node-a", "jt-a", at(100), at(1), vec![])
        .await
        .unwrap();
    let wrong = s
        .attest_node("node-b", "jt-a", "cred-x", at(2), vec![])
        .await;
    assert!(
        matches!(
            wrong,
            Err(StoreError::JoinToken(JoinTokenError::WrongAgent))
        ),
        "{wrong:?}"
    );
    let unknown = s
        .attest_node("node-a", "jt-zz", "cred-x", at(2), vec![])
        .await;
    assert!(
        matches!(unknown, Err(StoreError::JoinToken(JoinTokenError::Unknown))),
        "{unknown:?}"
    );
    s.attest_node("node-a", "jt-a", "cred-1", at(3), vec![ev(AuditKind::Node)])
        .await
        .unwrap();
    let again = s
        .attest_node("node-a", "jt-a", "cred-2", at(4), vec![])
        .await;
    assert!(
        matches!(again, Err(StoreError::JoinToken(JoinTokenError::Used))),
        "{again:?}"
    );
    let found = s.node_by_token("cred-1").await.unwrap().unwrap();
    assert_eq!(
        (found.name.as_str(), found.attested_at),
        ("node-a", Some(at(3)))
    );
    s.create_node_join_token("node-a", "jt-late", at(10), at(5), vec![])
        .await
        .unwrap();
    let late = s
        .attest_node("node-a", "jt-late", "cred-3", at(10), vec![])
        .await;
    assert!(
        matches!(late, Err(StoreError::JoinToken(JoinTokenError::Expired))),
        "{late:?}"
    );

    // Quarantine: the credential and outstanding join tokens die.
    s.create_node_join_token("node-a", "jt-q", at(100), at(6), vec![])
        .await
        .unwrap();
    s.set_node_quarantine("node-a", true, at(7), vec![ev(AuditKind::Node)])
        .await
        .unwrap();
    assert_eq!(s.node_by_token("cred-1").await.unwrap(), None);
    let q = s
        .attest_node("node-a", "jt-q", "cred-4", at(8), vec![])
        .await;
    assert!(matches!(q, Err(StoreError::Quarantined)), "{q:?}");
    let q = s
        .create_node_join_token("node-a", "jt-q2", at(100), at(8), vec![])
        .await;
    assert!(matches!(q, Err(StoreError::Quarantined)), "{q:?}");
    s.set_node_quarantine("node-a", false, at(9), vec![ev(AuditKind::Node)])
        .await
        .unwrap();
    assert_eq!(
        s.node_by_token("cred-1").await.unwrap(),
        None,
        "a release revives nothing"
    );
    let released_old = s
        .attest_node("node-a", "jt-q", "cred-5", at(10), vec![])
        .await;
    assert!(
        matches!(
            released_old,
            Err(StoreError::JoinToken(JoinTokenError::Used))
        ),
        "{released_old:?}"
    );
    let missing = s.set_node_quarantine("nope", true, at(11), vec![]).await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );

    let key = |kid: &str, kind: &str, cert: Option<Vec<u8>>| writ_store::StoredSpiffeKey {
        kid: kid.to_owned(),
        kind: kind.to_owned(),
        sealed: vec![1, 2, 3],
        cert,
        created_at: at(1),
        not_after: at(1_000),
    };
    s.add_spiffe_key(
        key("ca-1", "x509-ca", Some(vec![0x30, 0x01])),
        at(1),
        vec![ev(AuditKind::KeyRotate)],
    )
    .await
    .unwrap();
    s.add_spiffe_key(
        key("jwt-1", "jwt-svid", None),
        at(1),
        vec![ev(AuditKind::KeyRotate)],
    )
    .await
    .unwrap();
    let keys = s.spiffe_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].kid, "ca-1");
    assert_eq!(keys[0].cert.as_deref(), Some(&[0x30, 0x01][..]));
    assert_eq!(
        (keys[1].kind.as_str(), keys[1].cert.as_ref()),
        ("jwt-svid", None)
    );
    assert_eq!(keys[1].sealed, vec![1, 2, 3]);
    assert_eq!(keys[1].not_after, at(1_000));
    assert_chain(s).await;
}

/// A database role's lease: recorded only for an active task and within a
/// cap, confirmed once the role exists, overdue once its task ends or its
/// hard end passes (or, never confirmed, after a grace), retried later when
/// a drop fails, dropped once.
pub async fn db_leases_follow_their_task(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let db = Tool {
        name: "warehouse".parse::<ToolName>().unwrap(),
        audience: "postgres://warehouse".to_owned(),
        scopes: vec!["read".parse().unwrap()],
        attributes: BTreeMap::new(),
        upstream: Some(writ_core::api::Upstream::Postgres {
            grants: vec!["GRANT pg_read_all_data TO {role}".to_owned()],
        }),
        secret_header: None,
        gateway: None,
        created_at: at(0),
    };
    s.create_tool(&db, vec![ev(AuditKind::ToolRegister)])
        .await
        .unwrap();
    let inst = attest(s, &alpha, None, "jti_inst", at(0)).await.unwrap();
    let task = start_task(s, &inst, "jti_t1", at(1), at(61), at(3_600))
        .await
        .unwrap();
    let other = start_task(s, &inst, "jti_t2", at(1), at(61), at(3_600))
        .await
        .unwrap();
    let lease = |role: &str, t: &Task, now: Timestamp| DbLease {
        role: role.to_owned(),
        task_id: t.task_id.clone(),
        tool: db.name.clone(),
        created_at: now,
        expires_at: t.expires_at,
    };
    let roles = |v: Vec<DbLease>| v.into_iter().map(|l| l.role).collect::<Vec<_>>();
    let before = audit_len(s).await;
    s.create_db_lease(&lease("writ_a", &task, at(2)), 8, vec![])
        .await
        .unwrap();
    s.create_db_lease(&lease("writ_b", &other, at(2)), 8, vec![])
        .await
        .unwrap();
    let dup = s
        .create_db_lease(&lease("writ_a", &other, at(3)), 8, vec![])
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    let capped = s
        .create_db_lease(&lease("writ_x", &task, at(3)), 1, vec![])
        .await;
    assert!(matches!(capped, Err(StoreError::Conflict(_))), "{capped:?}");
    // Past the lease of the task (61 s), no new role.
    let late = s
        .create_db_lease(&lease("writ_c", &task, at(70)), 8, vec![])
        .await;
    assert!(matches!(late, Err(StoreError::NotActive(_))), "{late:?}");

    // Unconfirmed and young: left to the request creating it.
    assert!(
        s.overdue_db_leases(at(3_600), at(0), 100)
            .await
            .unwrap()
            .is_empty()
    );
    for role in ["writ_a", "writ_b"] {
        s.confirm_db_lease(role, at(3), vec![ev(AuditKind::CredentialIssue)])
            .await
            .unwrap();
    }
    assert_eq!(audit_len(s).await, before + 2);
    assert!(
        s.overdue_db_leases(at(10), at(0), 100)
            .await
            .unwrap()
            .is_empty()
    );
    // Past the hard end, both are overdue, whatever the task's status.
    assert_eq!(
        roles(s.overdue_db_leases(at(3_600), at(0), 100).await.unwrap()),
        ["writ_a", "writ_b"]
    );
    end(s, &task.task_id, TaskEnd::Completed, at(20))
        .await
        .unwrap();
    let overdue = s.overdue_db_leases(at(21), at(0), 100).await.unwrap();
    assert_eq!(overdue, vec![lease("writ_a", &task, at(2))]);
    // A failed drop waits for its retry time.
    s.retry_db_lease("writ_a", at(50)).await.unwrap();
    assert!(
        s.overdue_db_leases(at(22), at(0), 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        roles(s.overdue_db_leases(at(50), at(0), 100).await.unwrap()),
        ["writ_a"]
    );

    assert!(
        s.db_lease_dropped("writ_a", at(51), vec![ev(AuditKind::CredentialRevoke)])
            .await
            .unwrap()
    );
    let n = audit_len(s).await;
    assert!(
        !s.db_lease_dropped("writ_a", at(52), vec![ev(AuditKind::CredentialRevoke)])
            .await
            .unwrap()
    );
    assert_eq!(audit_len(s).await, n, "a second drop is not recorded");
    assert!(
        s.overdue_db_leases(at(53), at(0), 100)
            .await
            .unwrap()
            .is_empty()
    );
    let ended = s
        .create_db_lease(&lease("writ_d", &task, at(54)), 8, vec![])
        .await;
    assert!(matches!(ended, Err(StoreError::NotActive(_))), "{ended:?}");

    // Never confirmed: overdue once older than the grace, task or not.
    s.create_db_lease(&lease("writ_e", &other, at(30)), 8, vec![])
        .await
        .unwrap();
    assert!(
        s.overdue_db_leases(at(31), at(29), 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        roles(s.overdue_db_leases(at(40), at(30), 100).await.unwrap()),
        ["writ_e"]
    );
    // A confirmation after the task ended is refused.
    s.create_db_lease(&lease("writ_f", &other, at(31)), 8, vec![])
        .await
        .unwrap();
    end(s, &other.task_id, TaskEnd::Completed, at(32))
        .await
        .unwrap();
    let refused = s
        .confirm_db_lease("writ_f", at(33), vec![ev(AuditKind::CredentialIssue)])
        .await;
    assert!(
        matches!(refused, Err(StoreError::NotActive(_))),
        "{refused:?}"
    );
    assert_chain(s).await;
}

pub async fn end_task_revokes_its_grants(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let inst = attest(s, &alpha, None, "jti_inst", at(0)).await.unwrap();
    let task = start_task(s, &inst, "jti_t1", at(1), at(61), at(3_600))
        .await
        .unwrap();
    heartbeat(s, &task, "jti_t2", at(30), at(90)).await.unwrap();
    heartbeat(s, &task, "jti_t3", at(60), at(120))
        .await
        .unwrap();
    let other = start_task(s, &inst, "jti_other", at(2), at(62), at(3_600))
        .await
        .unwrap();

    let (ended, revoked) = end(s, &task.task_id, TaskEnd::Completed, at(100))
        .await
        .unwrap();
    assert_eq!(revoked, 3);
    assert_eq!(ended.status, TaskStatus::Completed);
    assert_eq!(ended.ended_at, Some(at(100)));
    assert!(ended.end_reason.is_some());
    assert_eq!(task_of(s, &task.task_id).await, ended);

    for jti in ["jti_t1", "jti_t2", "jti_t3"] {
        let g = grant(s, jti).await;
        assert_eq!(g.revoked_at, Some(at(100)), "{jti}");
        assert_eq!(g.task_status, Some(TaskStatus::Completed), "{jti}");
        assert!(!g.is_live(at(100)), "{jti}");
        assert!(
            !g.is_live(at(50)),
            "{jti}: a revoked grant is dead at any time"
        );
    }
    // Siblings are untouched: the instance token and the other task's token.
    assert!(grant(s, "jti_inst").await.is_live(at(100)));
    let g = grant(s, "jti_other").await;
    assert_eq!(g.revoked_at, None);
    assert!(g.is_live(at(61)));
    assert_eq!(task_of(s, &other.task_id).await.status, TaskStatus::Active);

    // Ending again, in any way, is a no-op that reports None.
    let before = all_audit(s).await;
    assert_eq!(
        end(s, &task.task_id, TaskEnd::Completed, at(200)).await,
        None
    );
    assert_eq!(
        end(s, &task.task_id, TaskEnd::Revoked("again".into()), at(200)).await,
        None
    );
    assert_eq!(
        end(s, &task.task_id, TaskEnd::Lapsed, at(9_999)).await,
        None
    );
    assert_eq!(task_of(s, &task.task_id).await, ended);
    assert_eq!(grant(s, "jti_t1").await.revoked_at, Some(at(100)));
    assert_eq!(
        all_audit(s).await,
        before,
        "a no-op end appended audit records"
    );

    // An admin revocation records its reason.
    let (revoked_task, n) = end(
        s,
        &other.task_id,
        TaskEnd::Revoked("kill switch".into()),
        at(101),
    )
    .await
    .unwrap();
    assert_eq!(n, 1);
    assert_eq!(revoked_task.status, TaskStatus::Revoked);
    assert_eq!(revoked_task.end_reason.as_deref(), Some("kill switch"));
    assert_eq!(task_of(s, &other.task_id).await, revoked_task);

    // Unknown task.
    let err = s
        .end_task(
            &TaskId::generate().unwrap(),
            TaskEnd::Completed,
            at(102),
            vec![],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_chain(s).await;
}

pub async fn heartbeat_extends_lease_within_lifetime(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let inst = attest(s, &alpha, None, "jti_inst", at(0)).await.unwrap();
    let task = start_task(s, &inst, "jti_t0", at(0), at(60), at(300))
        .await
        .unwrap();

    let t = heartbeat(s, &task, "jti_t1", at(30), at(90)).await.unwrap();
    assert_eq!(t.lease_expires_at, at(90));
    assert_eq!(t.status, TaskStatus::Active);
    assert_eq!(task_of(s, &task.task_id).await.lease_expires_at, at(90));
    let g = grant(s, "jti_t1").await;
    assert_eq!(g.grant.task_id.as_ref(), Some(&task.task_id));
    assert!(g.is_live(at(31)));

    // Asking past the hard lifetime gets the hard lifetime.
    let t = heartbeat(s, &task, "jti_t2", at(80), at(10_000))
        .await
        .unwrap();
    assert_eq!(t.lease_expires_at, at(300));
    assert_eq!(t.expires_at, at(300));
    assert_eq!(task_of(s, &task.task_id).await.lease_expires_at, at(300));

    // A heartbeat with a jti already in use fails whole: lease unchanged.
    let before = audit_len(s).await;
    let err = heartbeat(s, &task, "jti_t1", at(90), at(200))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(task_of(s, &task.task_id).await.lease_expires_at, at(300));
    assert_eq!(audit_len(s).await, before);

    // At the end of the hard lifetime it is too late.
    let err = heartbeat(s, &task, "jti_late", at(300), at(400))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotActive(_)), "{err:?}");
    assert_eq!(s.grant_state("jti_late").await.unwrap(), None);

    // Unknown task.
    let (ghost, _) = task_and_grant(&inst, "unused", at(0), at(60), at(300));
    let err = heartbeat(s, &ghost, "jti_ghost", at(10), at(70))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(s.grant_state("jti_ghost").await.unwrap(), None);
    assert_eq!(audit_len(s).await, before);
    assert_chain(s).await;
}

pub async fn heartbeat_after_end_is_refused(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let inst = attest(s, &alpha, None, "jti_inst", at(0)).await.unwrap();
    let task = start_task(s, &inst, "jti_t0", at(0), at(60), at(300))
        .await
        .unwrap();
    end(s, &task.task_id, TaskEnd::Completed, at(10))
        .await
        .unwrap();

    let before = audit_len(s).await;
    let err = heartbeat(s, &task, "jti_t1", at(20), at(80))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotActive(_)), "{err:?}");
    assert_eq!(s.grant_state("jti_t1").await.unwrap(), None);
    let t = task_of(s, &task.task_id).await;
    assert_eq!(t.status, TaskStatus::Completed);
    assert_eq!(t.lease_expires_at, at(60));
    assert_eq!(audit_len(s).await, before);
}

pub async fn lapsed_tasks_are_reaped_and_only_they(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let inst = attest(s, &alpha, None, "jti_inst", at(0)).await.unwrap();
    let a = start_task(s, &inst, "jti_a", at(0), at(60), at(3_600))
        .await
        .unwrap();
    let b = start_task(s, &inst, "jti_b", at(0), at(120), at(3_600))
        .await
        .unwrap();
    let c = start_task(s, &inst, "jti_c", at(0), at(600), at(3_600))
        .await
        .unwrap();
    // D started with a short lease but kept it alive.
    let d = start_task(s, &inst, "jti_d", at(0), at(60), at(3_600))
        .await
        .unwrap();
    heartbeat(s, &d, "jti_d2", at(50), at(200)).await.unwrap();
    // E lapsed but was completed before anyone reaped it.
    let e = start_task(s, &inst, "jti_e", at(0), at(30), at(3_600))
        .await
        .unwrap();
    end(s, &e.task_id, TaskEnd::Completed, at(20))
        .await
        .unwrap();

    assert!(s.lapsed_tasks(at(59), 100).await.unwrap().is_empty());
    assert_eq!(
        s.lapsed_tasks(at(60), 100).await.unwrap(),
        vec![a.task_id.clone()]
    );
    assert_eq!(
        sorted_ids(s.lapsed_tasks(at(130), 100).await.unwrap()),
        sorted_ids(vec![a.task_id.clone(), b.task_id.clone()])
    );
    let limited = s.lapsed_tasks(at(130), 1).await.unwrap();
    assert_eq!(limited.len(), 1);
    assert!(limited[0] == a.task_id || limited[0] == b.task_id);

    // Lapsed does not end a task whose lease is still in the future, even
    // when asked to directly.
    assert_eq!(end(s, &c.task_id, TaskEnd::Lapsed, at(130)).await, None);
    assert_eq!(end(s, &d.task_id, TaskEnd::Lapsed, at(130)).await, None);
    for (t, jti) in [(&c, "jti_c"), (&d, "jti_d2")] {
        assert_eq!(task_of(s, &t.task_id).await.status, TaskStatus::Active);
        assert!(grant(s, jti).await.is_live(at(130)), "{jti}");
    }

    // Reap everything lapsed at 130.
    for id in s.lapsed_tasks(at(130), 100).await.unwrap() {
        let (t, n) = end(s, &id, TaskEnd::Lapsed, at(130)).await.unwrap();
        assert_eq!(t.status, TaskStatus::Expired);
        assert_eq!(t.ended_at, Some(at(130)));
        assert_eq!(n, 1);
    }
    for (t, jti) in [(&a, "jti_a"), (&b, "jti_b")] {
        assert_eq!(task_of(s, &t.task_id).await.status, TaskStatus::Expired);
        let g = grant(s, jti).await;
        assert_eq!(g.revoked_at, Some(at(130)), "{jti}");
        assert_eq!(g.task_status, Some(TaskStatus::Expired));
    }
    assert_eq!(task_of(s, &c.task_id).await.status, TaskStatus::Active);
    assert_eq!(task_of(s, &d.task_id).await.status, TaskStatus::Active);
    assert_eq!(task_of(s, &e.task_id).await.status, TaskStatus::Completed);
    assert!(s.lapsed_tasks(at(130), 100).await.unwrap().is_empty());

    // A heartbeat cannot revive a lapsed lease.
    let f = start_task(s, &inst, "jti_f", at(0), at(100), at(3_600))
        .await
        .unwrap();
    let err = heartbeat(s, &f, "jti_f2", at(100), at(200))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotActive(_)), "{err:?}");
    assert_eq!(task_of(s, &f.task_id).await.lease_expires_at, at(100));

    // Later, D and C lapse in turn.
    assert_eq!(
        sorted_ids(s.lapsed_tasks(at(600), 100).await.unwrap()),
        sorted_ids(vec![
            c.task_id.clone(),
            d.task_id.clone(),
            f.task_id.clone()
        ])
    );
    assert_chain(s).await;
}

/// The trait promises `lapsed_tasks` finds tasks whose lease *or* hard
/// lifetime has run out, and `end_task(Lapsed)` ends a task past its hard
/// lifetime even when its lease is still in the future.
pub async fn lapsed_tasks_include_hard_lifetime(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let inst = attest(s, &alpha, None, "jti_inst", at(0)).await.unwrap();
    // Lease (600) beyond the hard lifetime (100): nothing in the Store
    // contract forbids recording it.
    let t = start_task(s, &inst, "jti_t", at(0), at(600), at(100))
        .await
        .unwrap();
    assert!(s.lapsed_tasks(at(99), 100).await.unwrap().is_empty());
    assert_eq!(
        s.lapsed_tasks(at(100), 100).await.unwrap(),
        vec![t.task_id.clone()],
        "a task past its hard lifetime is not reported by lapsed_tasks"
    );
    let (ended, _) = end(s, &t.task_id, TaskEnd::Lapsed, at(100)).await.unwrap();
    assert_eq!(ended.status, TaskStatus::Expired);
}

/// What is live, for the metrics' gauges: tasks not ended, grants neither
/// revoked nor expired, approvals pending.
pub async fn live_counts_follow_tasks_and_grants(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let inst = attest(s, &alpha, None, "jti_inst", at(0)).await.unwrap();
    let before = s.live_counts(at(1)).await.unwrap();
    assert_eq!((before.tasks, before.approvals_pending), (0, 0));
    let a = start_task(s, &inst, "jti_a", at(0), at(60), at(3_600))
        .await
        .unwrap();
    start_task(s, &inst, "jti_b", at(0), at(60), at(3_600))
        .await
        .unwrap();
    let live = s.live_counts(at(1)).await.unwrap();
    assert_eq!(live.tasks, 2);
    assert_eq!(live.grants, before.grants + 2);
    end(s, &a.task_id, TaskEnd::Completed, at(2)).await.unwrap();
    let after = s.live_counts(at(3)).await.unwrap();
    assert_eq!(after.tasks, 1);
    assert_eq!(after.grants, before.grants + 1);
    assert_eq!(after.approvals_pending, 0);
}

/// The console's task search: filtered, counted and paged by the store,
/// newest first, its text matched as written (no wildcards).
pub async fn tasks_are_searched_and_paged_in_the_store(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let beta = register(s, "beta").await;
    let ia = attest(s, &alpha, None, "jti_ia", at(0)).await.unwrap();
    let ib = attest(s, &beta, None, "jti_ib", at(0)).await.unwrap();
    let mut ids = Vec::new();
    for (i, (inst, intent)) in [
        (&ia, "read 100% of tickets"),
        (&ia, "read ticket_7"),
        (&ib, "read tickets"),
        (&ia, "summarise"),
    ]
    .into_iter()
    .enumerate()
    {
        let n = i64::try_from(i).unwrap();
        let (mut t, g) = task_and_grant(inst, &format!("jti_s{i}"), at(10 + n), at(600), at(3600));
        t.intent = intent.into();
        s.create_task(&t, &g, vec![ev(AuditKind::TaskStart)])
            .await
            .unwrap();
        ids.push(t.task_id.clone());
    }
    end(s, &ids[3], TaskEnd::Completed, at(20)).await.unwrap();
    let search =
        |status: Option<&str>, agent: Option<&str>, text: Option<&str>, offset, limit| TaskSearch {
            status: status.map(str::to_owned),
            agent: agent.map(str::to_owned),
            text: text.map(str::to_owned),
            offset,
            limit,
        };
    let found = |r: (Vec<Task>, u64)| (r.0.into_iter().map(|t| t.intent).collect::<Vec<_>>(), r.1);
    let all = s
        .search_tasks(&search(None, None, None, 0, 10))
        .await
        .unwrap();
    assert_eq!(
        found(all),
        (
            vec![
                "summarise".to_owned(),
                "read tickets".into(),
                "read ticket_7".into(),
                "read 100% of tickets".into()
            ],
            4
        )
    );
    let page = s
        .search_tasks(&search(None, None, None, 1, 2))
        .await
        .unwrap();
    assert_eq!(
        found(page),
        (vec!["read tickets".to_owned(), "read ticket_7".into()], 4)
    );
    let live_alpha = s
        .search_tasks(&search(Some("active"), Some("alpha"), None, 0, 10))
        .await
        .unwrap();
    assert_eq!(
        found(live_alpha),
        (
            vec!["read ticket_7".to_owned(), "read 100% of tickets".into()],
            2
        )
    );
    for (text, want) in [
        ("100%", vec!["read 100% of tickets"]),
        ("t_7", vec!["read ticket_7"]),
        // As wildcards, these would match "read tickets" and more.
        ("t%s", vec![]),
        ("ticke_s", vec![]),
    ] {
        let r = s
            .search_tasks(&search(None, None, Some(text), 0, 10))
            .await
            .unwrap();
        let n = want.len() as u64;
        assert_eq!(
            found(r),
            (want.into_iter().map(str::to_owned).collect(), n),
            "{text}"
        );
    }
    let id = ids[2].to_string();
    let by_id = s
        .search_tasks(&search(None, None, id.get(5..15), 0, 10))
        .await
        .unwrap();
    assert_eq!(found(by_id), (vec!["read tickets".to_owned()], 1));
}
