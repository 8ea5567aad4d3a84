//! Call approvals: one request through a gateway held for a person.

use super::*;

/// A pending call approval of `task`, requested at `requested_at` and open
/// for five minutes.
pub(crate) fn call_approval_record(task: &Task, path: &str, requested_at: Timestamp) -> Approval {
    Approval {
        approval_id: ApprovalId::generate().unwrap(),
        task_id: task.task_id.clone(),
        status: ApprovalStatus::Pending,
        ttl: 0,
        exception: false,
        justification: Some("needs a person".to_owned()),
        requested_at,
        expires_at: requested_at.add_secs(300),
        decided_at: None,
        reason: None,
        decided_by: None,
        on_behalf_of_may_approve: false,
        task: task.clone(),
        call: Some(ApprovalCall {
            tool: "github".parse::<ToolName>().unwrap(),
            agent: task.agent.clone(),
            method: "DELETE".to_owned(),
            path: path.to_owned(),
            query: String::new(),
            mcp_method: None,
            mcp_tool: None,
            mcp_resource: None,
            mcp_prompt: None,
            arguments: None,
            window_secs: 0,
            used_at: None,
        }),
    }
}

pub(crate) async fn hold_call(
    s: &dyn Store,
    a: &Approval,
    fingerprint: &str,
) -> Result<(), StoreError> {
    let audit = vec![ev(AuditKind::Approval).task(&a.task_id)];
    s.create_call_approval(a, fingerprint, audit).await
}

pub(crate) async fn decide(
    s: &dyn Store,
    id: &ApprovalId,
    approve: bool,
    now: Timestamp,
) -> Result<Approval, StoreError> {
    let audit = vec![ev(AuditKind::Approval)];
    s.decide_approval(id, approve, "looked at it", "operator:ann", now, audit)
        .await
}

/// An agent with one active task, for the call approval checks.
pub(crate) async fn agent_with_task(s: &dyn Store, n: &str) -> Task {
    let agent = register(s, n).await;
    let inst = attest(s, &agent, None, &format!("jti_{n}_i"), at(1))
        .await
        .unwrap();
    start_task(s, &inst, &format!("jti_{n}_t"), at(2), at(3_000), at(7_200))
        .await
        .unwrap()
}

/// A task waiting for its start to be approved, and that approval.
pub(crate) async fn pending_task(
    s: &dyn Store,
    n: &str,
    requested_at: Timestamp,
) -> (Task, Approval) {
    let agent = register(s, n).await;
    let inst = attest(s, &agent, None, &format!("jti_{n}_i"), at(1))
        .await
        .unwrap();
    let (mut task, _) = task_and_grant(&inst, "unused", requested_at, at(600), at(3_600));
    task.status = TaskStatus::PendingApproval;
    let approval = Approval {
        approval_id: ApprovalId::generate().unwrap(),
        task_id: task.task_id.clone(),
        status: ApprovalStatus::Pending,
        ttl: 3_600,
        exception: false,
        justification: None,
        requested_at,
        expires_at: requested_at.add_secs(600),
        decided_at: None,
        reason: None,
        decided_by: None,
        on_behalf_of_may_approve: false,
        task: task.clone(),
        call: None,
    };
    s.create_pending_task(&task, &approval, vec![ev(AuditKind::Approval)])
        .await
        .unwrap();
    (task, approval)
}

/// Call approvals are found by task and fingerprint (newest first), listed
/// beside task approvals, decided without touching their task, and used
/// once.
pub async fn call_approvals_round_trip(s: Arc<dyn Store>) {
    let s = &*s;
    let task = agent_with_task(s, "alpha").await;
    let a1 = call_approval_record(&task, "/repos/x", at(10));
    let a2 = call_approval_record(&task, "/repos/x", at(20));
    let a3 = call_approval_record(&task, "/repos/y", at(15));
    hold_call(s, &a1, "fp-x").await.unwrap();
    hold_call(s, &a2, "fp-x").await.unwrap();
    hold_call(s, &a3, "fp-y").await.unwrap();

    // Found by task and fingerprint: the newest of that fingerprint.
    assert_eq!(
        s.call_approval(&task.task_id, "fp-x").await.unwrap(),
        Some(a2.clone())
    );
    assert_eq!(
        s.call_approval(&task.task_id, "fp-y").await.unwrap(),
        Some(a3.clone())
    );
    assert_eq!(s.call_approval(&task.task_id, "fp-z").await.unwrap(), None);
    // Read back exactly as recorded, in the shared id space.
    assert_eq!(
        s.get_approval(&a1.approval_id).await.unwrap(),
        Some(a1.clone())
    );
    assert_eq!(s.pending_call_approvals(&task.task_id).await.unwrap(), 3);
    // `approval_for_task` is about task starts only.
    assert_eq!(s.approval_for_task(&task.task_id).await.unwrap(), None);

    // Refusals: no call, an unknown task, an id already taken (by either kind).
    let mut no_call = call_approval_record(&task, "/x", at(30));
    no_call.call = None;
    assert!(hold_call(s, &no_call, "fp").await.is_err());
    let mut orphan = call_approval_record(&task, "/x", at(30));
    orphan.task_id = TaskId::generate().unwrap();
    assert_eq!(
        hold_call(s, &orphan, "fp").await,
        Err(StoreError::NotFound("task"))
    );
    assert!(matches!(
        hold_call(s, &a1, "fp-x").await,
        Err(StoreError::Conflict(_))
    ));
    let (_, start) = pending_task(s, "beta", at(12)).await;
    let mut taken = call_approval_record(&task, "/x", at(30));
    taken.approval_id = start.approval_id.clone();
    assert!(matches!(
        hold_call(s, &taken, "fp").await,
        Err(StoreError::Conflict(_))
    ));

    // Both kinds listed: pending oldest first, all newest first.
    let ids = |v: Vec<Approval>| v.into_iter().map(|a| a.approval_id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.list_approvals(true).await.unwrap()),
        vec![
            a1.approval_id.clone(),
            start.approval_id.clone(),
            a3.approval_id.clone(),
            a2.approval_id.clone()
        ]
    );
    let all = s.list_approvals(false).await.unwrap();
    assert_eq!(all.iter().filter(|a| a.call.is_some()).count(), 3);
    assert_eq!(
        ids(all),
        vec![
            a2.approval_id.clone(),
            a3.approval_id.clone(),
            start.approval_id.clone(),
            a1.approval_id.clone()
        ]
    );

    // Approve one, deny another: the task stays active either way.
    let before = audit_len(s).await;
    let approved = decide(s, &a2.approval_id, true, at(40)).await.unwrap();
    assert_eq!(approved.status, ApprovalStatus::Approved);
    assert_eq!(approved.decided_at, Some(at(40)));
    assert_eq!(approved.reason.as_deref(), Some("looked at it"));
    assert_eq!(approved.decided_by.as_deref(), Some("operator:ann"));
    assert_eq!(approved.call.as_ref().unwrap().used_at, None);
    let denied = decide(s, &a3.approval_id, false, at(41)).await.unwrap();
    assert_eq!(denied.status, ApprovalStatus::Denied);
    assert_eq!(task_of(s, &task.task_id).await.status, TaskStatus::Active);
    assert_eq!(audit_len(s).await, before + 2);
    assert_eq!(
        decide(s, &a2.approval_id, false, at(42)).await,
        Err(StoreError::NotActive("approval already decided"))
    );
    assert_eq!(s.pending_call_approvals(&task.task_id).await.unwrap(), 1);
    assert_eq!(
        ids(s.list_approvals(true).await.unwrap()),
        vec![a1.approval_id.clone(), start.approval_id.clone()]
    );

    // Used once: the second use, and any use of one not approved, is false.
    let used = |id: &ApprovalId, n: i64| {
        let id = id.clone();
        async move {
            s.use_call_approval(&id, at(n), vec![ev(AuditKind::ToolCall)])
                .await
                .unwrap()
        }
    };
    assert!(
        !used(&a1.approval_id, 50).await,
        "a pending approval was used"
    );
    assert!(
        !used(&a3.approval_id, 50).await,
        "a denied approval was used"
    );
    assert!(
        !used(&start.approval_id, 50).await,
        "a task approval was used"
    );
    let before = audit_len(s).await;
    assert!(used(&a2.approval_id, 51).await);
    assert!(!used(&a2.approval_id, 52).await, "used twice");
    assert_eq!(audit_len(s).await, before + 1);
    let after = s.get_approval(&a2.approval_id).await.unwrap().unwrap();
    assert_eq!(after.call.unwrap().used_at, Some(at(51)));
    // Still the newest of its fingerprint, used or not.
    let found = s
        .call_approval(&task.task_id, "fp-x")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.approval_id, a2.approval_id);
    assert_eq!(found.call.unwrap().used_at, Some(at(51)));
    assert_chain(s).await;
}

/// A pending call approval past its deadline cannot be decided; it is
/// listed as overdue and expires without touching its task.
pub async fn call_approvals_expire(s: Arc<dyn Store>) {
    let s = &*s;
    let task = agent_with_task(s, "alpha").await;
    let a = call_approval_record(&task, "/repos/x", at(10));
    hold_call(s, &a, "fp").await.unwrap();
    let (_, start) = pending_task(s, "beta", at(20)).await;
    let deadline = a.expires_at;
    assert!(
        s.overdue_approvals(deadline.add_secs(-1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !s.expire_approval(&a.approval_id, deadline.add_secs(-1), vec![])
            .await
            .unwrap()
    );
    assert_eq!(
        decide(s, &a.approval_id, true, deadline).await,
        Err(StoreError::NotActive("approval expired"))
    );
    // Both kinds are overdue, earliest deadline first.
    assert_eq!(
        s.overdue_approvals(start.expires_at, 10).await.unwrap(),
        vec![a.approval_id.clone(), start.approval_id.clone()]
    );
    assert_eq!(
        s.overdue_approvals(start.expires_at, 1).await.unwrap(),
        vec![a.approval_id.clone()]
    );
    let before = audit_len(s).await;
    assert!(
        s.expire_approval(&a.approval_id, deadline, vec![ev(AuditKind::Approval)])
            .await
            .unwrap()
    );
    assert!(
        !s.expire_approval(&a.approval_id, deadline, vec![ev(AuditKind::Approval)])
            .await
            .unwrap()
    );
    assert_eq!(audit_len(s).await, before + 1);
    let expired = s.get_approval(&a.approval_id).await.unwrap().unwrap();
    assert_eq!(expired.status, ApprovalStatus::Expired);
    assert_eq!(expired.decided_at, Some(deadline));
    assert_eq!(task_of(s, &task.task_id).await.status, TaskStatus::Active);
    assert_eq!(s.pending_call_approvals(&task.task_id).await.unwrap(), 0);
    assert!(
        !s.use_call_approval(&a.approval_id, deadline, vec![])
            .await
            .unwrap()
    );
    assert_eq!(
        decide(s, &a.approval_id, true, deadline).await,
        Err(StoreError::NotActive("approval already decided"))
    );
    assert_eq!(
        s.overdue_approvals(start.expires_at, 10).await.unwrap(),
        vec![start.approval_id.clone()]
    );
    assert_chain(s).await;
}

/// Of many callers racing to use one once-only approval, exactly one wins.
pub async fn call_approval_is_used_once_under_race(s: Arc<dyn Store>) {
    let task = agent_with_task(&*s, "alpha").await;
    let a = call_approval_record(&task, "/repos/x", at(10));
    hold_call(&*s, &a, "fp").await.unwrap();
    decide(&*s, &a.approval_id, true, at(11)).await.unwrap();
    let before = audit_len(&*s).await;
    let racers: Vec<_> = (0..16)
        .map(|i| {
            let (s, id) = (Arc::clone(&s), a.approval_id.clone());
            tokio::spawn(async move {
                s.use_call_approval(&id, at(20 + i), vec![ev(AuditKind::ToolCall)])
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut wins = 0;
    for r in racers {
        wins += usize::from(r.await.unwrap());
    }
    assert_eq!(wins, 1, "{wins} callers used a once-only approval");
    assert_eq!(audit_len(&*s).await, before + 1);
    assert_chain(&*s).await;
}

/// Quarantining an agent expires its pending call approvals (not decided
/// ones), and no new one can be opened for it.
pub async fn quarantine_expires_pending_call_approvals(s: Arc<dyn Store>) {
    let s = &*s;
    let task = agent_with_task(s, "alpha").await;
    let other = agent_with_task(s, "beta").await;
    let p1 = call_approval_record(&task, "/a", at(10));
    let p2 = call_approval_record(&task, "/b", at(11));
    let ok = call_approval_record(&task, "/c", at(12));
    let theirs = call_approval_record(&other, "/a", at(13));
    for (a, fp) in [(&p1, "fp1"), (&p2, "fp2"), (&ok, "fp3"), (&theirs, "fp1")] {
        hold_call(s, a, fp).await.unwrap();
    }
    decide(s, &ok.approval_id, true, at(20)).await.unwrap();
    s.set_quarantine(
        &task.agent,
        true,
        at(30),
        vec![ev(AuditKind::AgentQuarantine)],
    )
    .await
    .unwrap();
    for p in [&p1, &p2] {
        let a = s.get_approval(&p.approval_id).await.unwrap().unwrap();
        assert_eq!(a.status, ApprovalStatus::Expired);
        assert_eq!(a.reason.as_deref(), Some("agent quarantined"));
        assert_eq!(a.decided_at, Some(at(30)));
        assert_eq!(
            decide(s, &p.approval_id, true, at(31)).await,
            Err(StoreError::NotActive("approval already decided"))
        );
    }
    let a = s.get_approval(&ok.approval_id).await.unwrap().unwrap();
    assert_eq!(a.status, ApprovalStatus::Approved);
    assert_eq!(s.pending_call_approvals(&task.task_id).await.unwrap(), 0);
    // Another agent's are untouched.
    assert_eq!(s.pending_call_approvals(&other.task_id).await.unwrap(), 1);
    let late = call_approval_record(&task, "/d", at(32));
    assert_eq!(
        hold_call(s, &late, "fp4").await,
        Err(StoreError::Quarantined)
    );
    assert_chain(s).await;
}
