//! OAuth clients, their used assertions, and gateways' transaction-token
//! keys.

use super::*;
use writ_store::OAuthClient;

fn client(id: &str, t: Timestamp) -> OAuthClient {
    OAuthClient {
        client_id: id.to_owned(),
        secret_hash: Some(format!("hash-of-{id}")),
        jwks: None,
        audiences: vec!["https://a.example".into()],
        created_at: t,
        revoked_at: None,
    }
}

pub async fn oauth_clients_create_list_revoke(s: Arc<dyn Store>) {
    let s = &*s;
    let reg = || vec![ev(AuditKind::GatewayRegister)];
    s.create_client(client("rs-b", at(0)), at(0), reg())
        .await
        .unwrap();
    let mut jwt = client("rs-a", at(1));
    jwt.secret_hash = None;
    jwt.jwks = Some(r#"{"keys":[]}"#.into());
    s.create_client(jwt.clone(), at(1), reg()).await.unwrap();
    let before = audit_len(s).await;
    let err = s
        .create_client(client("rs-b", at(2)), at(2), reg())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(
        audit_len(s).await,
        before,
        "a refused registration records nothing"
    );
    assert_eq!(s.client("rs-a").await.unwrap(), Some(jwt));
    let ids: Vec<String> = s
        .clients()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.client_id)
        .collect();
    assert_eq!(ids, ["rs-a", "rs-b"]);
    s.revoke_client("rs-b", at(5), reg()).await.unwrap();
    assert_eq!(
        s.client("rs-b").await.unwrap().unwrap().revoked_at,
        Some(at(5))
    );
    let err = s.revoke_client("nobody", at(6), reg()).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_chain(s).await;
}

pub async fn client_assertions_are_used_once(s: Arc<dyn Store>) {
    let s = &*s;
    assert!(
        s.use_client_assertion("rs", "j1", at(60), at(0))
            .await
            .unwrap()
    );
    assert!(
        !s.use_client_assertion("rs", "j1", at(60), at(1))
            .await
            .unwrap(),
        "a replay"
    );
    // Another client may use the same jti.
    assert!(
        s.use_client_assertion("rs2", "j1", at(60), at(1))
            .await
            .unwrap()
    );
    // Once expired it is forgotten (its exp check refuses it by then).
    assert!(
        s.use_client_assertion("rs", "j1", at(200), at(61))
            .await
            .unwrap()
    );
}

pub async fn gateway_keys_are_published_while_their_gateway_lives(s: Arc<dyn Store>) {
    let s = &*s;
    let reg = || vec![ev(AuditKind::GatewayRegister)];
    s.create_gateway("gw1", "h-gw1", at(0), reg())
        .await
        .unwrap();
    s.create_gateway("gw2", "h-gw2", at(0), reg())
        .await
        .unwrap();
    for (n, kid) in ["txn.a", "txn.b", "txn.c"].iter().enumerate() {
        let t = at(n as i64);
        s.put_gateway_key("gw1", kid, &format!("{{\"kid\":\"{kid}\"}}"), t, reg())
            .await
            .unwrap();
    }
    s.put_gateway_key("gw2", "txn.z", r#"{"kid":"txn.z"}"#, at(3), reg())
        .await
        .unwrap();
    let keys = s.gateway_keys().await.unwrap();
    assert_eq!(
        keys,
        [
            r#"{"kid":"txn.b"}"#,
            r#"{"kid":"txn.c"}"#,
            r#"{"kid":"txn.z"}"#
        ],
        "a gateway's newest two keys"
    );
    let err = s
        .put_gateway_key("gw2", "txn.z", r#"{"kid":"txn.z"}"#, at(4), reg())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    s.revoke_gateway("gw1", at(5), reg()).await.unwrap();
    assert_eq!(s.gateway_keys().await.unwrap(), [r#"{"kid":"txn.z"}"#]);
    assert_chain(s).await;
}
