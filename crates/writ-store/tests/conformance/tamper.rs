//! Tamper detection.

use super::*;

/// Writes a few distinguishable records and closes the store; returns them.
pub(crate) async fn seed_audit(h: &dyn Harness) -> Vec<AuditRecord> {
    let s = h.open().await;
    register(&*s, "alpha").await;
    for i in 0..5 {
        s.append_audit(
            at(i),
            vec![ev(AuditKind::PolicyLoad).reason(format!("load-{i}"))],
        )
        .await
        .unwrap();
    }
    let records = all_audit(&*s).await;
    assert_eq!(records.len(), 6);
    assert_chain(&*s).await;
    records
}

pub(crate) async fn reopened_chain(h: &dyn Harness) -> Vec<AuditRecord> {
    let s = h.open().await;
    all_audit(&*s).await
}

pub async fn audit_table_is_append_only(h: &dyn Harness) {
    let records = seed_audit(h).await;
    let upd = h
        .exec_raw("UPDATE audit SET event = '{}' WHERE seq = 2")
        .await;
    assert!(upd.is_err(), "UPDATE of the audit table succeeded: {upd:?}");
    let del = h.exec_raw("DELETE FROM audit WHERE seq = 2").await;
    assert!(
        del.is_err(),
        "DELETE from the audit table succeeded: {del:?}"
    );
    assert_eq!(reopened_chain(h).await, records);
    let s = h.open().await;
    assert_chain(&*s).await;
}

pub async fn tamper_edit_is_detected(h: &dyn Harness) {
    let records = seed_audit(h).await;
    h.drop_audit_guards().await;
    let edited = records[2].event.replace("load-1", "load-X");
    assert_ne!(edited, records[2].event);
    let n = h
        .exec_raw(&format!(
            "UPDATE audit SET event = {} WHERE seq = 3",
            sql_str(&edited)
        ))
        .await
        .unwrap();
    assert_eq!(n, 1);
    let chain = reopened_chain(h).await;
    assert_eq!(chain[2].event, edited, "the edit did not reach the store");
    let brk = audit::verify(&chain).unwrap_err();
    assert_eq!(brk.seq, 3, "{brk}");
}

/// Rewriting a record's hash to match its edited event moves the break to
/// the next record, whose `prev_hash` no longer matches.
pub async fn tamper_edit_with_rehash_is_detected(h: &dyn Harness) {
    let records = seed_audit(h).await;
    h.drop_audit_guards().await;
    let r = &records[2];
    let edited = r.event.replace("load-1", "load-X");
    let rehash = audit::chain_hash(r.seq, r.ts, &r.prev_hash, &edited);
    let n = h
        .exec_raw(&format!(
            "UPDATE audit SET event = {}, hash = {} WHERE seq = 3",
            sql_str(&edited),
            sql_str(&rehash)
        ))
        .await
        .unwrap();
    assert_eq!(n, 1);
    let brk = audit::verify(&reopened_chain(h).await).unwrap_err();
    assert_eq!(brk.seq, 4, "{brk}");
}

pub async fn tamper_delete_is_detected(h: &dyn Harness) {
    let records = seed_audit(h).await;
    h.drop_audit_guards().await;
    let n = h.exec_raw("DELETE FROM audit WHERE seq = 3").await.unwrap();
    assert_eq!(n, 1);
    let chain = reopened_chain(h).await;
    assert_eq!(chain.len(), records.len() - 1);
    let brk = audit::verify(&chain).unwrap_err();
    assert_eq!(brk.seq, 3, "{brk}");
}

pub async fn tamper_swap_is_detected(h: &dyn Harness) {
    let records = seed_audit(h).await;
    h.drop_audit_guards().await;
    let (a, b) = (&records[2], &records[3]);
    for (target, source) in [(a, b), (b, a)] {
        let n = h
            .exec_raw(&format!(
                "UPDATE audit SET event = {}, hash = {} WHERE seq = {}",
                sql_str(&source.event),
                sql_str(&source.hash),
                target.seq
            ))
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
    let chain = reopened_chain(h).await;
    assert_eq!(chain[2].event, b.event);
    assert_eq!(chain[3].event, a.event);
    let brk = audit::verify(&chain).unwrap_err();
    assert_eq!(brk.seq, 3, "{brk}");
}
