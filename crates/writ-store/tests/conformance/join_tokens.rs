//! Join tokens.

use super::*;

pub async fn join_token_is_consumed_once(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    join_token(s, &alpha, "jt-1", at(600)).await;

    let inst = attest(s, &alpha, Some("jt-1"), "jti_1", at(10))
        .await
        .unwrap();
    assert_eq!(s.get_instance(&inst.id).await.unwrap(), Some(inst.clone()));
    let g = grant(s, "jti_1").await;
    assert_eq!(g.grant.kind, GrantKind::InstanceToken);
    assert_eq!(g.grant.instance_id, inst.id);
    assert_eq!(g.grant.task_id, None);
    assert_eq!(g.revoked_at, None);
    assert_eq!(g.task_status, None);
    assert!(g.is_live(at(10)));

    let before = audit_len(s).await;
    let (second, second_grant) = instance_and_grant(&alpha, "jti_2", at(20));
    let err = s
        .create_instance(
            &second,
            Some("jt-1"),
            &second_grant,
            attest_events(&second, "jti_2"),
        )
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::JoinToken(JoinTokenError::Used));
    assert_eq!(s.get_instance(&second.id).await.unwrap(), None);
    assert_eq!(s.grant_state("jti_2").await.unwrap(), None);
    assert_eq!(audit_len(s).await, before);
    // The first instance is untouched by the refused second use.
    assert_eq!(s.get_instance(&inst.id).await.unwrap(), Some(inst));
    assert_chain(s).await;
}

/// H13: attestation reads a join token before anything else (so that an
/// unknown agent and an unknown token cost the same), without consuming
/// it, and refuses it for the same reasons, in the same order, as the
/// store does when it consumes it.
pub async fn h13_a_join_token_is_read_without_being_consumed(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let beta = register(s, "beta").await;
    join_token(s, &alpha, "jt-1", at(600)).await;
    let before = audit_len(s).await;
    assert_eq!(s.join_token("jt-unknown").await.unwrap(), None);
    let jt = s.join_token("jt-1").await.unwrap().unwrap();
    assert_eq!(jt.agent, alpha);
    assert_eq!(jt.expires_at, at(600));
    assert_eq!(jt.used_at, None);
    assert_eq!(jt.refusal(&alpha, at(1)), None);
    assert_eq!(jt.refusal(&beta, at(1)), Some(JoinTokenError::WrongAgent));
    assert_eq!(jt.refusal(&alpha, at(600)), Some(JoinTokenError::Expired));
    assert_eq!(s.join_token("jt-1").await.unwrap(), Some(jt));
    assert_eq!(audit_len(s).await, before, "reading records nothing");

    attest(s, &alpha, Some("jt-1"), "jti_1", at(2))
        .await
        .unwrap();
    let used = s.join_token("jt-1").await.unwrap().unwrap();
    assert_eq!(used.used_at, Some(at(2)));
    assert_eq!(used.refusal(&alpha, at(3)), Some(JoinTokenError::Used));
    assert_eq!(
        attest(s, &alpha, Some("jt-1"), "jti_2", at(3))
            .await
            .unwrap_err(),
        StoreError::JoinToken(JoinTokenError::Used)
    );
}

pub async fn join_token_refusals(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let beta = register(s, "beta").await;
    join_token(s, &alpha, "jt-expiring", at(60)).await;
    join_token(s, &alpha, "jt-alpha", at(600)).await;

    let refused = |join: &'static str, agent: AgentName, jti: &'static str, now: Timestamp| async move {
        let before = audit_len(s).await;
        let (inst, g) = instance_and_grant(&agent, jti, now);
        let err = s
            .create_instance(&inst, Some(join), &g, attest_events(&inst, jti))
            .await
            .unwrap_err();
        assert_eq!(
            s.get_instance(&inst.id).await.unwrap(),
            None,
            "{join}: instance left behind"
        );
        assert_eq!(
            s.grant_state(jti).await.unwrap(),
            None,
            "{join}: grant left behind"
        );
        assert_eq!(
            audit_len(s).await,
            before,
            "{join}: audit appended on failure"
        );
        err
    };

    // Expired: at the expiry instant and after it.
    assert_eq!(
        refused("jt-expiring", alpha.clone(), "jti_e1", at(60)).await,
        StoreError::JoinToken(JoinTokenError::Expired)
    );
    assert_eq!(
        refused("jt-expiring", alpha.clone(), "jti_e2", at(61)).await,
        StoreError::JoinToken(JoinTokenError::Expired)
    );
    // Another agent's token.
    assert_eq!(
        refused("jt-alpha", beta.clone(), "jti_w", at(10)).await,
        StoreError::JoinToken(JoinTokenError::WrongAgent)
    );
    // Unknown token.
    assert_eq!(
        refused("jt-nope", alpha.clone(), "jti_u", at(10)).await,
        StoreError::JoinToken(JoinTokenError::Unknown)
    );

    // None of the refusals consumed the token it named.
    attest(s, &alpha, Some("jt-alpha"), "jti_ok", at(10))
        .await
        .unwrap();
    // A token one millisecond before its expiry still works.
    join_token(s, &alpha, "jt-edge", at(60)).await;
    attest(
        s,
        &alpha,
        Some("jt-edge"),
        "jti_edge",
        Timestamp::from_millis(at(60).millis() - 1),
    )
    .await
    .unwrap();
    assert_chain(s).await;
}

pub async fn join_token_creation_rules(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    join_token(s, &alpha, "jt-1", at(600)).await;
    let before = audit_len(s).await;

    let err = s
        .create_join_token(
            &alpha,
            "jt-1",
            at(900),
            at(1),
            vec![ev(AuditKind::JoinTokenCreate)],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

    let err = s
        .create_join_token(
            &name("ghost"),
            "jt-2",
            at(900),
            at(1),
            vec![ev(AuditKind::JoinTokenCreate)],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(audit_len(s).await, before);

    // The duplicate did not extend or reset the original token: it still
    // expires at 600.
    let (inst, g) = instance_and_grant(&alpha, "jti_late", at(700));
    let err = s
        .create_instance(&inst, Some("jt-1"), &g, attest_events(&inst, "jti_late"))
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::JoinToken(JoinTokenError::Expired));

    // A quarantined agent gets no join tokens.
    s.set_quarantine(&alpha, true, at(2), vec![ev(AuditKind::AgentQuarantine)])
        .await
        .unwrap();
    let before = audit_len(s).await;
    let err = s
        .create_join_token(
            &alpha,
            "jt-3",
            at(900),
            at(3),
            vec![ev(AuditKind::JoinTokenCreate)],
        )
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::Quarantined);
    assert_eq!(audit_len(s).await, before);
}

/// A child task delegated from `parent` to the instance `inst`.
pub(crate) async fn delegate(
    s: &dyn Store,
    parent: &Task,
    inst: &Instance,
    jti: &str,
    now: Timestamp,
) -> Result<Task, StoreError> {
    let (mut task, grant) =
        task_and_grant(inst, jti, now, parent.lease_expires_at, parent.expires_at);
    task.parent_task_id = Some(parent.task_id.clone());
    task.depth = parent.depth + 1;
    let audit = vec![ev(AuditKind::TaskStart).task(&task.task_id).jti(jti)];
    s.create_task(&task, &grant, audit).await?;
    Ok(task)
}

/// Ending a task ends its whole delegation tree, revoking every grant in
/// it, in one call; a dead parent takes no new children.
pub async fn delegation_tree_ends_as_one(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let beta = register(s, "beta").await;
    let gamma = register(s, "gamma").await;
    let ia = attest(s, &alpha, None, "jti_ia", at(1)).await.unwrap();
    let ib = attest(s, &beta, None, "jti_ib", at(1)).await.unwrap();
    let ic = attest(s, &gamma, None, "jti_ic", at(1)).await.unwrap();
    let root = start_task(s, &ia, "jti_root", at(2), at(600), at(3_600))
        .await
        .unwrap();
    let sibling = start_task(s, &ia, "jti_sib", at(2), at(600), at(3_600))
        .await
        .unwrap();
    let child = delegate(s, &root, &ib, "jti_child", at(3)).await.unwrap();
    let grandchild = delegate(s, &child, &ic, "jti_grand", at(4)).await.unwrap();
    assert_eq!(grandchild.depth, 2);

    let tree = s.task_tree(&root.task_id).await.unwrap();
    let ids: Vec<&TaskId> = tree.iter().map(|t| &t.task_id).collect();
    assert_eq!(ids, [&root.task_id, &child.task_id, &grandchild.task_id]);
    assert_eq!(tree[1].parent_task_id.as_ref(), Some(&root.task_id));

    let ended = s
        .end_task(
            &root.task_id,
            TaskEnd::Completed,
            at(10),
            vec![ev(AuditKind::TaskEnd)],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.descendants, 2);
    assert_eq!(ended.revoked_tokens, 3);
    for jti in ["jti_root", "jti_child", "jti_grand"] {
        assert!(
            !grant(s, jti).await.is_live(at(11)),
            "{jti} outlived its tree"
        );
    }
    assert!(
        grant(s, "jti_sib").await.is_live(at(11)),
        "a sibling tree is untouched"
    );
    assert!(
        grant(s, "jti_ib").await.is_live(at(11)),
        "instances live on"
    );
    assert_eq!(task_of(s, &child.task_id).await.status, TaskStatus::Revoked);
    assert_eq!(
        task_of(s, &grandchild.task_id).await.status,
        TaskStatus::Revoked
    );
    assert_eq!(
        task_of(s, &sibling.task_id).await.status,
        TaskStatus::Active
    );

    let before = audit_len(s).await;
    let err = delegate(s, &root, &ib, "jti_late", at(12))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotActive(_)), "{err:?}");
    assert_eq!(s.grant_state("jti_late").await.unwrap(), None);
    assert_eq!(audit_len(s).await, before);
}

/// Quarantining an agent ends the tasks delegated from its tasks, even
/// when other agents run them.
pub async fn quarantine_cascades_into_delegated_tasks(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let beta = register(s, "beta").await;
    let ia = attest(s, &alpha, None, "jti_ia", at(1)).await.unwrap();
    let ib = attest(s, &beta, None, "jti_ib", at(1)).await.unwrap();
    let root = start_task(s, &ia, "jti_root", at(2), at(600), at(3_600))
        .await
        .unwrap();
    let child = delegate(s, &root, &ib, "jti_child", at(3)).await.unwrap();
    let own = start_task(s, &ib, "jti_own", at(3), at(600), at(3_600))
        .await
        .unwrap();
    let out = s
        .set_quarantine(&alpha, true, at(10), vec![ev(AuditKind::AgentQuarantine)])
        .await
        .unwrap();
    assert_eq!(out.ended_tasks, 2);
    assert!(!grant(s, "jti_child").await.is_live(at(11)));
    assert_eq!(task_of(s, &child.task_id).await.status, TaskStatus::Revoked);
    assert!(
        grant(s, "jti_own").await.is_live(at(11)),
        "beta's own work is untouched"
    );
    assert_eq!(task_of(s, &own.task_id).await.status, TaskStatus::Active);
}

/// H12: revoking an instance token revokes the instance, and what it
/// started dies with it: its tasks (active and waiting for approval), their
/// tool tokens, the tasks delegated from them and their tokens, and calls
/// held for approval. Other instances, of the same agent or another, and a
/// sub-agent's own work are untouched.
pub async fn h12_revoking_an_instance_token_ends_the_instance_and_its_tasks(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let beta = register(s, "beta").await;
    let ia = attest(s, &alpha, None, "jti_ia", at(1)).await.unwrap();
    let ia2 = attest(s, &alpha, None, "jti_ia2", at(1)).await.unwrap();
    let ib = attest(s, &beta, None, "jti_ib", at(1)).await.unwrap();
    let root = start_task(s, &ia, "jti_root", at(2), at(600), at(3_600))
        .await
        .unwrap();
    let tool = Grant {
        jti: "jti_tool".into(),
        kind: GrantKind::ToolToken,
        agent: alpha.clone(),
        instance_id: ia.id.clone(),
        task_id: Some(root.task_id.clone()),
        issued_at: at(3),
        expires_at: at(300),
        jkt: None,
        audience: Some("https://github.example".into()),
    };
    s.record_grant(&tool, vec![ev(AuditKind::TokenIssue).jti("jti_tool")])
        .await
        .unwrap();
    let child = delegate(s, &root, &ib, "jti_child", at(3)).await.unwrap();
    let held = call_approval_record(&root, "/a", at(4));
    hold_call(s, &held, "fp1").await.unwrap();
    let (mut waiting, _) = task_and_grant(&ia, "unused", at(4), at(600), at(3_600));
    waiting.status = TaskStatus::PendingApproval;
    let approval = Approval {
        approval_id: ApprovalId::generate().unwrap(),
        task_id: waiting.task_id.clone(),
        status: ApprovalStatus::Pending,
        ttl: 3_600,
        exception: false,
        justification: None,
        requested_at: at(4),
        expires_at: at(604),
        decided_at: None,
        reason: None,
        decided_by: None,
        on_behalf_of_may_approve: true,
        task: waiting.clone(),
        call: None,
    };
    s.create_pending_task(&waiting, &approval, vec![ev(AuditKind::Approval)])
        .await
        .unwrap();
    let kept = s
        .get_approval(&approval.approval_id)
        .await
        .unwrap()
        .unwrap();
    assert!(kept.on_behalf_of_may_approve, "who may decide is kept");
    let sibling = start_task(s, &ia2, "jti_sibling", at(5), at(600), at(3_600))
        .await
        .unwrap();
    let own = start_task(s, &ib, "jti_own", at(5), at(600), at(3_600))
        .await
        .unwrap();
    let head = s.revocation_head().await.unwrap();
    let before = audit_len(s).await;

    let out = s
        .revoke_grant(
            "jti_ia",
            at(10),
            vec![ev(AuditKind::TokenRevoke).jti("jti_ia")],
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        Some(Revoked {
            revoked_tokens: 4,
            ended_tasks: 3
        }),
        "the instance token, the task token, its tool token and the child's token; \
         the task, its child and the task waiting for approval"
    );
    assert_eq!(audit_len(s).await, before + 1);
    assert_eq!(
        s.get_instance(&ia.id).await.unwrap().unwrap().revoked_at,
        Some(at(10))
    );
    for jti in ["jti_ia", "jti_root", "jti_tool", "jti_child"] {
        let g = grant(s, jti).await;
        assert_eq!(g.revoked_at, Some(at(10)), "{jti}");
        assert!(!g.is_live(at(10)), "{jti}");
    }
    let root_now = task_of(s, &root.task_id).await;
    assert_eq!(root_now.status, TaskStatus::Revoked);
    assert_eq!(root_now.end_reason.as_deref(), Some("instance revoked"));
    assert_eq!(task_of(s, &child.task_id).await.status, TaskStatus::Revoked);
    let w = task_of(s, &waiting.task_id).await;
    assert_eq!(w.status, TaskStatus::Revoked);
    assert_eq!(w.end_reason.as_deref(), Some("instance revoked"));
    for id in [&approval.approval_id, &held.approval_id] {
        let a = s.get_approval(id).await.unwrap().unwrap();
        assert_eq!(a.status, ApprovalStatus::Expired);
        assert_eq!(a.reason.as_deref(), Some("instance revoked"));
    }
    // Every revoked token reaches the feed gateways follow.
    let fed: BTreeSet<String> = s
        .revocations_after(head, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.jti)
        .collect();
    for jti in ["jti_ia", "jti_root", "jti_tool", "jti_child"] {
        assert!(fed.contains(jti), "{jti} is not in the feed");
    }

    // Nothing revives it: no heartbeat, no tool token, no new task.
    assert_eq!(
        heartbeat(s, &root, "jti_hb", at(11), at(700)).await,
        Err(StoreError::NotActive("revoked"))
    );
    let mut again = tool.clone();
    again.jti = "jti_tool2".into();
    again.issued_at = at(11);
    assert!(s.record_grant(&again, vec![]).await.is_err());
    assert_eq!(
        start_task(s, &ia, "jti_new", at(11), at(600), at(3_600))
            .await
            .unwrap_err(),
        StoreError::InstanceRevoked
    );

    // The rest carries on.
    for jti in ["jti_ia2", "jti_sibling", "jti_ib", "jti_own"] {
        assert!(grant(s, jti).await.is_live(at(11)), "{jti}");
    }
    assert_eq!(
        task_of(s, &sibling.task_id).await.status,
        TaskStatus::Active
    );
    assert_eq!(task_of(s, &own.task_id).await.status, TaskStatus::Active);

    // Revoking it again changes and records nothing.
    assert_eq!(
        s.revoke_grant("jti_ia", at(12), vec![ev(AuditKind::TokenRevoke)])
            .await
            .unwrap(),
        None
    );
    assert_eq!(audit_len(s).await, before + 1);
    assert_chain(s).await;
}

/// A failure after the token check (a duplicate instance id or jti) rolls
/// the consumption back with everything else.
pub async fn failed_attest_does_not_consume_join_token(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    join_token(s, &alpha, "jt-1", at(600)).await;
    let existing = attest(s, &alpha, None, "jti_taken", at(1)).await.unwrap();
    let before = audit_len(s).await;

    // Duplicate jti.
    let (inst, g) = instance_and_grant(&alpha, "jti_taken", at(2));
    let err = s
        .create_instance(&inst, Some("jt-1"), &g, attest_events(&inst, "jti_taken"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(s.get_instance(&inst.id).await.unwrap(), None);
    assert_eq!(grant(s, "jti_taken").await.grant.instance_id, existing.id);

    // Duplicate instance id.
    let (mut inst, g) = instance_and_grant(&alpha, "jti_fresh", at(3));
    inst.id = existing.id.clone();
    let g = Grant {
        instance_id: existing.id.clone(),
        ..g
    };
    let err = s
        .create_instance(&inst, Some("jt-1"), &g, attest_events(&inst, "jti_fresh"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(s.grant_state("jti_fresh").await.unwrap(), None);
    assert_eq!(s.get_instance(&existing.id).await.unwrap(), Some(existing));
    assert_eq!(audit_len(s).await, before);

    // The token is still good, once.
    attest(s, &alpha, Some("jt-1"), "jti_ok", at(4))
        .await
        .unwrap();
    assert_eq!(
        attest(s, &alpha, Some("jt-1"), "jti_again", at(5))
            .await
            .unwrap_err(),
        StoreError::JoinToken(JoinTokenError::Used)
    );
    assert_chain(s).await;
}

pub async fn join_token_race_has_one_winner(s: Arc<dyn Store>) {
    let alpha = register(&*s, "alpha").await;
    join_token(&*s, &alpha, "jt-race", at(600)).await;
    let before = audit_len(&*s).await;

    let mut handles = Vec::new();
    for n in 0..20 {
        let s = Arc::clone(&s);
        let alpha = alpha.clone();
        handles.push(tokio::spawn(async move {
            let jti = format!("jti_{n}");
            let (inst, g) = instance_and_grant(&alpha, &jti, at(10));
            let res = s
                .create_instance(&inst, Some("jt-race"), &g, attest_events(&inst, &jti))
                .await;
            (inst, jti, res)
        }));
    }
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for h in handles {
        let (inst, jti, res) = h.await.unwrap();
        match res {
            Ok(()) => winners.push((inst, jti)),
            Err(e) => {
                assert_eq!(e, StoreError::JoinToken(JoinTokenError::Used));
                losers.push((inst, jti));
            }
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "{} attestations won the race",
        winners.len()
    );
    assert_eq!(losers.len(), 19);

    let (inst, jti) = &winners[0];
    assert_eq!(s.get_instance(&inst.id).await.unwrap().as_ref(), Some(inst));
    assert!(grant(&*s, jti).await.is_live(at(10)));
    for (inst, jti) in &losers {
        assert_eq!(s.get_instance(&inst.id).await.unwrap(), None);
        assert_eq!(s.grant_state(jti).await.unwrap(), None);
    }
    // Exactly the winner's two events were appended.
    assert_eq!(audit_len(&*s).await, before + 2);
    assert_chain(&*s).await;
}

/// What the console reads: the tokens of a delegation tree (with their
/// revocation), an agent's live instances with their active tasks, and
/// the sources of a set that was once live.
pub async fn console_reads_tree_tokens_instances_and_policy_sources(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let beta = register(s, "beta").await;
    let ia = attest(s, &alpha, None, "jti_ia", at(1)).await.unwrap();
    let ia2 = attest(s, &alpha, None, "jti_ia2", at(5)).await.unwrap();
    let ib = attest(s, &beta, None, "jti_ib", at(1)).await.unwrap();
    let root = start_task(s, &ia, "jti_root", at(2), at(600), at(3_600))
        .await
        .unwrap();
    let other = start_task(s, &ia, "jti_other", at(2), at(600), at(3_600))
        .await
        .unwrap();
    let child = delegate(s, &root, &ib, "jti_child", at(3)).await.unwrap();
    let tool = Grant {
        jti: "jti_tool".into(),
        kind: GrantKind::ToolToken,
        agent: beta.clone(),
        instance_id: ib.id.clone(),
        task_id: Some(child.task_id.clone()),
        issued_at: at(4),
        expires_at: at(300),
        jkt: None,
        audience: Some("https://crm.example".into()),
    };
    s.record_grant(&tool, vec![ev(AuditKind::TokenIssue).jti("jti_tool")])
        .await
        .unwrap();

    let jtis =
        |g: &[(Grant, Option<Timestamp>)]| g.iter().map(|(g, _)| g.jti.clone()).collect::<Vec<_>>();
    let tokens = s.task_tree_grants(&root.task_id).await.unwrap();
    assert_eq!(jtis(&tokens), ["jti_root", "jti_child", "jti_tool"]);
    assert!(tokens.iter().all(|(_, revoked)| revoked.is_none()));
    assert_eq!(tokens[2].0.audience.as_deref(), Some("https://crm.example"));
    // A subtree has only its own; another task's tokens are never there.
    assert_eq!(
        jtis(&s.task_tree_grants(&child.task_id).await.unwrap()),
        ["jti_child", "jti_tool"]
    );
    assert_eq!(
        jtis(&s.task_tree_grants(&other.task_id).await.unwrap()),
        ["jti_other"]
    );

    // Alpha: two live instances, newest first, the first with both its tasks.
    let live = s.live_instances(&alpha, at(10), 10).await.unwrap();
    let seen: Vec<_> = live.iter().map(|(i, n)| (i.id.clone(), *n)).collect();
    assert_eq!(seen, [(ia2.id.clone(), 0), (ia.id.clone(), 2)]);
    assert_eq!(s.live_instances(&alpha, at(10), 1).await.unwrap().len(), 1);

    // Ending the tree revokes its tokens; the tasks are no longer active.
    end(s, &root.task_id, TaskEnd::Completed, at(20))
        .await
        .unwrap();
    let tokens = s.task_tree_grants(&root.task_id).await.unwrap();
    assert_eq!(tokens.len(), 3);
    assert!(
        tokens.iter().all(|(_, revoked)| revoked.is_some()),
        "{tokens:?}"
    );
    let live = s.live_instances(&alpha, at(30), 10).await.unwrap();
    assert_eq!(live.iter().map(|(_, n)| *n).collect::<Vec<_>>(), [0, 1]);
    // Past their end, instances are not live.
    assert!(
        s.live_instances(&alpha, at(90_000), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Policy sources by version: a set once live, and none for another.
    let v1 = vec![(
        "a.cedar".to_owned(),
        "permit (principal, action, resource);".to_owned(),
    )];
    s.activate_policy("v1", &v1, "push", at(40), vec![ev(AuditKind::PolicyLoad)])
        .await
        .unwrap();
    assert_eq!(s.policy_sources("v1").await.unwrap(), Some(v1));
    assert_eq!(s.policy_sources("v2").await.unwrap(), None);
}
