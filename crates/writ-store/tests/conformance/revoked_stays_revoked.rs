//! A revoked grant never becomes active again, whatever follows: heartbeats,
//! new tasks, quarantine and release, ending, revoking again, time passing.

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    Heartbeat,
    NewTask,
    Quarantine,
    Release,
    End,
    RevokeAgain,
    Wait(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Heartbeat),
        Just(Op::NewTask),
        Just(Op::Quarantine),
        Just(Op::Release),
        Just(Op::End),
        Just(Op::RevokeAgain),
        (1..200i64).prop_map(Op::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn a_revoked_grant_is_never_live_again(ops in prop::collection::vec(op(), 1..12)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store: Arc<dyn Store> = Arc::new(writ_store::SqlStore::open_sqlite(&dir.path().join("p.db")).unwrap());
            let s = &*store;
            let alpha = register(s, "alpha").await;
            let inst = attest(s, &alpha, None, "jti_i", at(1)).await.unwrap();
            let task = start_task(s, &inst, "jti_t", at(2), at(600), at(3_600)).await.unwrap();
            assert!(s.revoke_grant("jti_t", at(3), vec![ev(AuditKind::TokenRevoke)]).await.unwrap().is_some());
            let mut now = 3;
            for (n, op) in ops.iter().enumerate() {
                now += 1;
                let jti = format!("jti_op{n}");
                match op {
                    Op::Heartbeat => {
                        let _ = heartbeat(s, &task, &jti, at(now), at(now + 120)).await;
                    }
                    Op::NewTask => {
                        let _ = start_task(s, &inst, &jti, at(now), at(now + 120), at(now + 3_600)).await;
                    }
                    Op::Quarantine => {
                        let _ = s.set_quarantine(&alpha, true, at(now), vec![ev(AuditKind::AgentQuarantine)]).await;
                    }
                    Op::Release => {
                        let _ = s.set_quarantine(&alpha, false, at(now), vec![ev(AuditKind::AgentRelease)]).await;
                    }
                    Op::End => {
                        let _ = end(s, &task.task_id, TaskEnd::Completed, at(now)).await;
                    }
                    Op::RevokeAgain => {
                        let again = s.revoke_grant("jti_t", at(now), vec![ev(AuditKind::TokenRevoke)]).await.unwrap();
                        assert!(again.is_none(), "a revoked grant was revoked twice");
                    }
                    Op::Wait(secs) => now += secs,
                }
                let g = grant(s, "jti_t").await;
                assert!(g.revoked_at.is_some());
                assert!(!g.is_live(at(now)), "revoked grant live again after {op:?}");
            }
        });
    }
}
