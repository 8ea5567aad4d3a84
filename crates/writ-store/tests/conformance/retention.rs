//! Retention: the store forgets expired grants, stale revocations, old
//! ended tasks and expired instances, and lets audit records go only once archived.

use super::*;
use crate::approvals::{call_approval_record, hold_call};

/// A grant pruned after its expiry is unknown: it can never read as live.
pub async fn pruned_grants_read_as_unknown_never_live(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let inst = attest(s, &alpha, None, "jti_inst", at(0)).await.unwrap();
    // The task's token expires with its lease, at 61 s; the instance's at 3,600 s.
    start_task(s, &inst, "jti_t1", at(1), at(61), at(3_600))
        .await
        .unwrap();
    assert_eq!(s.prune_grants(at(61), 100).await.unwrap(), 0);
    assert_eq!(s.prune_grants(at(62), 100).await.unwrap(), 1);
    assert!(s.grant_state("jti_t1").await.unwrap().is_none());
    assert!(grant(s, "jti_inst").await.is_live(at(62)));
    assert_chain(s).await;
}

/// Revocations of expired tokens go, in bounded batches; the newest stays
/// so the feed's head never moves back.
pub async fn pruned_revocations_keep_the_feed_head(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let inst = attest(s, &alpha, None, "jti_inst", at(0)).await.unwrap();
    for i in 0..3 {
        let t = start_task(s, &inst, &format!("jti_t{i}"), at(1), at(61), at(3_600))
            .await
            .unwrap();
        end(s, &t.task_id, TaskEnd::Completed, at(2)).await.unwrap();
    }
    let head = s.revocation_head().await.unwrap();
    assert_eq!(s.revocations_after(0, 100).await.unwrap().len(), 3);
    assert_eq!(s.prune_revocations(at(61), 100).await.unwrap(), 0);
    assert_eq!(s.prune_revocations(at(62), 1).await.unwrap(), 1);
    assert_eq!(s.prune_revocations(at(62), 100).await.unwrap(), 1);
    let left = s.revocations_after(0, 100).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].seq, head);
    assert_eq!(s.revocation_head().await.unwrap(), head);
}

/// Ended tasks older than the retention go with their grants and
/// approvals; live tasks stay, and a parent stays while its child does.
pub async fn pruned_tasks_are_only_old_ended_ones(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let inst = attest(s, &alpha, None, "jti_inst", at(0)).await.unwrap();
    let live = start_task(s, &inst, "jti_live", at(1), at(600), at(3_600))
        .await
        .unwrap();
    let done = start_task(s, &inst, "jti_done", at(1), at(600), at(3_600))
        .await
        .unwrap();
    hold_call(s, &call_approval_record(&done, "/repos/x", at(2)), "fp")
        .await
        .unwrap();
    let parent = start_task(s, &inst, "jti_parent", at(1), at(600), at(3_600))
        .await
        .unwrap();
    let (mut child, g) = task_and_grant(&inst, "jti_child", at(2), at(600), at(3_600));
    child.parent_task_id = Some(parent.task_id.clone());
    child.depth = 1;
    s.create_task(
        &child,
        &g,
        vec![ev(AuditKind::TaskStart).task(&child.task_id)],
    )
    .await
    .unwrap();
    end(s, &done.task_id, TaskEnd::Completed, at(10))
        .await
        .unwrap();
    // Ending the parent ends its child with it.
    end(s, &parent.task_id, TaskEnd::Completed, at(20))
        .await
        .unwrap();

    // Not old enough yet.
    assert_eq!(s.prune_tasks(at(10), 100).await.unwrap(), 0);
    // The child goes first; its parent in the next batch.
    assert_eq!(s.prune_tasks(at(21), 1).await.unwrap(), 1);
    assert!(s.get_task(&done.task_id).await.unwrap().is_none());
    assert!(s.grant_state("jti_done").await.unwrap().is_none());
    assert!(
        s.call_approval(&done.task_id, "fp")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(s.prune_tasks(at(21), 1).await.unwrap(), 1);
    assert!(s.get_task(&child.task_id).await.unwrap().is_none());
    assert!(s.get_task(&parent.task_id).await.unwrap().is_some());
    assert_eq!(s.prune_tasks(at(21), 100).await.unwrap(), 1);
    assert!(s.get_task(&parent.task_id).await.unwrap().is_none());
    assert_eq!(s.prune_tasks(at(10_000), 100).await.unwrap(), 0);
    assert_eq!(task_of(s, &live.task_id).await.status, TaskStatus::Active);
    assert!(grant(s, "jti_live").await.is_live(at(30)));
    assert_chain(s).await;
}

/// Expired instances go once no task names them, in bounded batches;
/// an instance still named by a kept task stays, as does a live one.
pub async fn pruned_instances_are_expired_and_unreferenced(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    // Each expires at 86,400 s.
    let busy = attest(s, &alpha, None, "jti_busy", at(0)).await.unwrap();
    let idle1 = attest(s, &alpha, None, "jti_idle1", at(0)).await.unwrap();
    let idle2 = attest(s, &alpha, None, "jti_idle2", at(0)).await.unwrap();
    let live = attest(s, &alpha, None, "jti_live", at(50_000))
        .await
        .unwrap();
    let t = start_task(s, &busy, "jti_t", at(1), at(61), at(3_600))
        .await
        .unwrap();
    end(s, &t.task_id, TaskEnd::Completed, at(2)).await.unwrap();

    assert_eq!(s.prune_instances(at(86_400), 100).await.unwrap(), 0);
    assert_eq!(s.prune_instances(at(86_401), 1).await.unwrap(), 1);
    assert_eq!(s.prune_instances(at(86_401), 100).await.unwrap(), 1);
    assert_eq!(s.prune_instances(at(86_401), 100).await.unwrap(), 0);
    for gone in [&idle1, &idle2] {
        assert!(s.get_instance(&gone.id).await.unwrap().is_none());
    }
    // Named by its (ended, kept) task: it stays until the task goes.
    assert!(s.get_instance(&busy.id).await.unwrap().is_some());
    assert_eq!(s.prune_tasks(at(3), 100).await.unwrap(), 1);
    assert_eq!(s.prune_instances(at(86_401), 100).await.unwrap(), 1);
    assert!(s.get_instance(&busy.id).await.unwrap().is_none());
    assert!(s.get_instance(&live.id).await.unwrap().is_some());
    assert_chain(s).await;
}

/// Records leave the log only once archived, through the store, up to
/// the recorded point and never the head; the chain goes on after them.
pub async fn audit_records_leave_only_once_archived(h: &dyn Harness) {
    let records = seed_audit(h).await;
    let s = h.open().await;
    assert_eq!(s.audit_archive_state().await.unwrap(), Default::default());
    let bad = s.archive_audit(3, &records[2].prev_hash, "seg-1").await;
    assert!(matches!(bad, Err(StoreError::ArchiveRefused(_))), "{bad:?}");
    let head = s.archive_audit(6, &records[5].hash, "seg-1").await;
    assert!(
        matches!(head, Err(StoreError::ArchiveRefused(_))),
        "{head:?}"
    );
    assert_eq!(
        s.archive_audit(3, &records[2].hash, "seg-1").await.unwrap(),
        3
    );
    let again = s.archive_audit(2, &records[1].hash, "seg-0").await;
    assert!(
        matches!(again, Err(StoreError::ArchiveRefused(_))),
        "{again:?}"
    );
    let state = s.audit_archive_state().await.unwrap();
    assert_eq!((state.through, state.segment_hash.as_str()), (3, "seg-1"));
    assert_eq!(all_audit(&*s).await, records[3..].to_vec());
    drop(s);
    // Underneath the store: what is not archived cannot be deleted.
    let del = h.exec_raw("DELETE FROM audit WHERE seq = 5").await;
    assert!(
        del.is_err(),
        "DELETE of a record not archived succeeded: {del:?}"
    );
    let s = h.open().await;
    s.append_audit(at(100), vec![ev(AuditKind::PolicyLoad)])
        .await
        .unwrap();
    let after = all_audit(&*s).await;
    assert_eq!(after.len(), 4);
    assert_eq!(after[3].seq, 7);
    assert_eq!(after[3].prev_hash, records[5].hash);
}
