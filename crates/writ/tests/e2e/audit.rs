//! The audit chain: complete, and tamper-evident.

use crate::harness::{Broker, json};

/// Fills the log with a few real events, stops the broker, lets `edit`
/// change the database behind its back, restarts, and runs `writ audit verify`.
async fn tamper(edit: impl FnOnce(&rusqlite::Connection)) -> (Option<i32>, serde_json::Value) {
    let mut b = Broker::start();
    let inst = b.attest("demo-agent").await;
    let t = b
        .start_task(&inst.access_token, &["tickets:read"])
        .await
        .unwrap();
    b.as_token(&inst.access_token)
        .complete(&t.task_id)
        .await
        .unwrap();
    assert!(b.admin().audit_verify().await.unwrap().valid);
    b.stop();
    {
        let c = rusqlite::Connection::open(b.data_dir().join("writ.db")).unwrap();
        // An attacker with the file can drop the append-only triggers.
        c.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
            .unwrap();
        edit(&c);
    }
    b.restart();
    let out = b.cli(&["audit", "verify"]);
    (out.status.code(), json(&out))
}

#[tokio::test]
async fn s4_an_edited_record_is_detected() {
    // The first record that names the agent is rewritten to name another.
    let edited = std::sync::Arc::new(std::sync::Mutex::new(0i64));
    let seen = std::sync::Arc::clone(&edited);
    let (code, v) = tamper(move |c| {
        let seq: i64 = c
            .query_row(
                "SELECT MIN(seq) FROM audit WHERE event LIKE '%demo-agent%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let n = c
            .execute(
                "UPDATE audit SET event = replace(event, 'demo-agent', 'someone-else') WHERE seq = ?1",
                [seq],
            )
            .unwrap();
        assert_eq!(n, 1);
        *seen.lock().unwrap() = seq;
    })
    .await;
    assert_eq!(code, Some(4));
    assert_eq!(v["valid"], false);
    assert_eq!(v["error"]["seq"], *edited.lock().unwrap());
}

#[tokio::test]
async fn s4_a_deleted_record_is_detected() {
    let (code, v) = tamper(|c| {
        c.execute("DELETE FROM audit WHERE seq = 4", []).unwrap();
    })
    .await;
    assert_eq!(code, Some(4));
    assert_eq!(v["error"]["seq"], 4);
}

#[tokio::test]
async fn s4_reordered_records_are_detected() {
    let (code, v) = tamper(|c| {
        // Swap the contents of records 4 and 5, keeping their numbers.
        c.execute_batch(
            "UPDATE audit SET seq = -4 WHERE seq = 4;
             UPDATE audit SET seq = 4 WHERE seq = 5;
             UPDATE audit SET seq = 5 WHERE seq = -4;",
        )
        .unwrap();
    })
    .await;
    assert_eq!(code, Some(4));
    assert_eq!(v["valid"], false);
}

#[tokio::test]
async fn every_kind_of_change_is_recorded_with_who_and_why() {
    let b = Broker::start();
    let inst = b.attest("demo-agent").await;
    let t = b
        .start_task(&inst.access_token, &["tickets:read"])
        .await
        .unwrap();
    b.as_token(&inst.access_token)
        .heartbeat(&t.task_id)
        .await
        .unwrap();
    b.as_token(&inst.access_token)
        .complete(&t.task_id)
        .await
        .unwrap();
    b.admin()
        .quarantine(&"demo-agent".parse().unwrap())
        .await
        .unwrap();
    b.admin().rotate_keys().await.unwrap();
    let kinds: Vec<String> = b
        .admin()
        .audit(0, 1000)
        .await
        .unwrap()
        .records
        .iter()
        .map(|r| {
            serde_json::from_str::<serde_json::Value>(&r.event).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    for k in [
        "key_rotate",
        "admin_token_create",
        "policy_load",
        "agent_register",
        "tool_register",
        "join_token_create",
        "attest",
        "token_issue",
        "task_start",
        "task_heartbeat",
        "task_end",
        "agent_quarantine",
    ] {
        assert!(kinds.iter().any(|x| x == k), "no {k} record in {kinds:?}");
    }
    let start: serde_json::Value = b
        .admin()
        .audit(0, 1000)
        .await
        .unwrap()
        .records
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(&r.event).unwrap())
        .find(|e| e["kind"] == "task_start")
        .unwrap();
    assert_eq!(start["agent"], "demo-agent");
    assert_eq!(start["instance"], inst.instance_id.as_str());
    assert_eq!(start["task"], t.task_id.as_str());
    assert_eq!(start["determining_policies"][0], "read-only");
    assert!(
        start["policy_version"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
}

/// S4: truncating the tail of the log is caught against a checkpoint kept
/// outside writ (signed by writ's key).
#[tokio::test]
async fn s4_a_truncated_tail_is_detected_against_a_saved_checkpoint() {
    let mut b = Broker::start();
    let inst = b.attest("demo-agent").await;
    b.start_task(&inst.access_token, &["tickets:read"])
        .await
        .unwrap();
    let outside = tempfile::tempdir().unwrap();
    let cp = outside.path().join("audit.checkpoint");
    let out = b.cli(&["audit", "verify", "--checkpoint", cp.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let first = json(&out);
    assert!(cp.exists());
    // More activity, then a verify against the saved checkpoint passes and moves it on.
    b.start_task(&inst.access_token, &["tickets:read"])
        .await
        .unwrap();
    let out = b.cli(&["audit", "verify", "--checkpoint", cp.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let second = json(&out);
    assert_eq!(second["checkpoint_check"]["previous_seq"], first["records"]);
    assert_eq!(second["checkpoint_check"]["signature"], "valid");

    // Someone with the data directory cuts the tail: the chain alone still verifies...
    b.stop();
    {
        let c = rusqlite::Connection::open(b.data_dir().join("writ.db")).unwrap();
        c.execute_batch("DROP TRIGGER audit_no_delete;").unwrap();
        let keep = first["records"].as_u64().unwrap() - 2;
        c.execute("DELETE FROM audit WHERE seq > ?1", [keep as i64])
            .unwrap();
    }
    b.restart();
    assert!(b.admin().audit_verify().await.unwrap().valid);
    // ...but not against the checkpoint.
    let out = b.cli(&["audit", "verify", "--checkpoint", cp.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("truncated"),
        "{out:?}"
    );
}
