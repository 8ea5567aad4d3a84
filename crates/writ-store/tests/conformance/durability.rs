//! Durability across reopen.

use super::*;

pub async fn durable_across_reopen(h: &dyn Harness) {
    let s = h.open().await;
    let alpha = register(&*s, "alpha").await;
    join_token(&*s, &alpha, "jt-1", at(600)).await;
    join_token(&*s, &alpha, "jt-2", at(600)).await;
    let inst = attest(&*s, &alpha, Some("jt-1"), "jti_inst", at(1))
        .await
        .unwrap();
    let task = start_task(&*s, &inst, "jti_t", at(2), at(60), at(300))
        .await
        .unwrap();
    let done = start_task(&*s, &inst, "jti_done", at(3), at(60), at(300))
        .await
        .unwrap();
    let (done, _) = end(&*s, &done.task_id, TaskEnd::Completed, at(4))
        .await
        .unwrap();
    s.add_admin_token(
        "ops",
        "admin-hash",
        writ_core::api::Role::Admin,
        false,
        at(0),
        vec![ev(AuditKind::AdminTokenCreate)],
    )
    .await
    .unwrap();
    let agent = s.get_agent(&alpha).await.unwrap();
    let records = all_audit(&*s).await;
    let head = assert_chain(&*s).await;
    drop(s);

    let s = h.open().await;
    assert_eq!(s.get_agent(&alpha).await.unwrap(), agent);
    assert_eq!(s.get_instance(&inst.id).await.unwrap(), Some(inst.clone()));
    assert_eq!(task_of(&*s, &task.task_id).await, task);
    assert_eq!(task_of(&*s, &done.task_id).await, done);
    assert!(grant(&*s, "jti_t").await.is_live(at(5)));
    assert_eq!(grant(&*s, "jti_done").await.revoked_at, Some(at(4)));
    assert!(s.admin_token("admin-hash").await.unwrap().is_some());
    assert_eq!(all_audit(&*s).await, records);
    // Consumed join tokens stay consumed; unused ones stay usable.
    assert_eq!(
        attest(&*s, &alpha, Some("jt-1"), "jti_x", at(6))
            .await
            .unwrap_err(),
        StoreError::JoinToken(JoinTokenError::Used)
    );
    attest(&*s, &alpha, Some("jt-2"), "jti_inst2", at(6))
        .await
        .unwrap();

    // The chain continues from the stored head.
    s.append_audit(at(7), vec![ev(AuditKind::PolicyLoad)])
        .await
        .unwrap();
    let after = all_audit(&*s).await;
    let first_new = &after[records.len()];
    assert_eq!(first_new.seq, head + 1);
    assert_eq!(first_new.prev_hash, records.last().unwrap().hash);
    let head2 = assert_chain(&*s).await;
    assert_eq!(head2, head + 3);
    drop(s);

    // And once more.
    let s = h.open().await;
    assert_eq!(assert_chain(&*s).await, head2);
    s.append_audit(at(8), vec![ev(AuditKind::PolicyLoad)])
        .await
        .unwrap();
    assert_eq!(assert_chain(&*s).await, head2 + 1);
}
