//! When the store cannot write, nothing is minted and nothing is claimed.

use writ_core::api::AttestRequest;

use crate::harness::Broker;

/// S3 and promise 1: with the database locked by another process (as when
/// storage is full, read-only or wedged), issuance, revocation and task ends
/// answer 503, mint nothing, and change nothing; they work again after.
#[tokio::test]
async fn s3_store_unwritable_means_503_and_nothing_minted() {
    let b = Broker::start();
    let inst = b.attest("demo-agent").await;
    let t = b
        .start_task(&inst.access_token, &["tickets:read"])
        .await
        .unwrap();
    let jt = b
        .admin()
        .join_token(&"demo-agent".parse().unwrap(), 600)
        .await
        .unwrap()
        .join_token;
    let head = b.admin().audit_last(1).await.unwrap().next;

    // Another process takes the write lock and holds it.
    let lock = rusqlite::Connection::open(b.data_dir().join("writ.db")).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let anon = b.anon();
    let req = AttestRequest {
        agent: "demo-agent".parse().unwrap(),
        join_token: Some(jt.clone()),
        oidc_token: None,
        jwt_svid: None,
    };
    let attest = anon.attest(&req);
    let start = b.start_task(&inst.access_token, &["tickets:read"]);
    let admin = b.admin();
    let revoke = admin.revoke(&t.access_token);
    let agent = b.as_token(&inst.access_token);
    let complete = agent.complete(&t.task_id);
    let (attest, start, revoke, complete) = tokio::join!(attest, start, revoke, complete);

    assert_eq!(attest.unwrap_err().status(), Some(503));
    assert_eq!(start.unwrap_err().status(), Some(503));
    let e = revoke.unwrap_err();
    assert_eq!(e.status(), Some(503));
    assert!(e.to_string().contains("temporarily_unavailable"), "{e}");
    assert_eq!(complete.unwrap_err().status(), Some(503));

    lock.execute_batch("ROLLBACK").unwrap();

    // Nothing happened: no record, the task and its token live, and the join
    // token was not consumed.
    assert_eq!(b.admin().audit_last(1).await.unwrap().next, head);
    assert!(b.active(&t.access_token).await);
    let att = b
        .anon()
        .attest(&AttestRequest {
            agent: "demo-agent".parse().unwrap(),
            join_token: Some(jt),
            oidc_token: None,
            jwt_svid: None,
        })
        .await
        .unwrap();
    assert!(b.active(&att.access_token).await);
    assert!(b.admin().audit_verify().await.unwrap().valid);
}
