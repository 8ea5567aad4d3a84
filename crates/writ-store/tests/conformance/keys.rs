//! Admin tokens, signing keys, tools.

use super::*;

pub async fn admin_tokens(s: Arc<dyn Store>) {
    let s = &*s;
    let create = || vec![ev(AuditKind::AdminTokenCreate)];
    assert_eq!(s.admin_token_count().await.unwrap(), 0);
    assert_eq!(s.admin_token("h1").await.unwrap(), None);
    s.add_admin_token("ops", "h1", Role::Admin, false, at(0), create())
        .await
        .unwrap();
    s.add_admin_token("ci", "h2", Role::Admin, false, at(1), create())
        .await
        .unwrap();
    let ops = s.admin_token("h1").await.unwrap().unwrap();
    assert_eq!((ops.name.as_str(), ops.dev), ("ops", false));
    assert!(s.admin_token("h2").await.unwrap().is_some());
    assert_eq!(s.admin_token("h3").await.unwrap(), None);
    assert_eq!(s.admin_token_count().await.unwrap(), 2);
    // A name or a secret is taken once.
    let before = audit_len(s).await;
    assert!(matches!(
        s.add_admin_token("ops", "h9", Role::Admin, false, at(2), create())
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.add_admin_token("other", "h2", Role::Admin, false, at(2), create())
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(audit_len(s).await, before, "a refused add records nothing");

    // A dev credential replaces the last dev one, and is not counted.
    s.add_admin_token("dev", "d1", Role::Admin, true, at(3), create())
        .await
        .unwrap();
    s.add_admin_token("dev", "d2", Role::Admin, true, at(4), create())
        .await
        .unwrap();
    assert_eq!(s.admin_token("d1").await.unwrap(), None);
    assert!(s.admin_token("d2").await.unwrap().unwrap().dev);
    assert_eq!(s.admin_token_count().await.unwrap(), 2);
    let names: Vec<_> = s
        .admin_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.name, c.dev))
        .collect();
    assert_eq!(
        names,
        [
            ("ci".to_owned(), false),
            ("dev".to_owned(), true),
            ("ops".to_owned(), false)
        ]
    );

    // Revoked: gone. Unknown: false. The last one not made by a dev start
    // stays, and the refusal records nothing.
    let revoke = || vec![ev(AuditKind::AdminTokenRevoke)];
    assert!(s.revoke_admin_token("dev", at(5), revoke()).await.unwrap());
    assert!(s.revoke_admin_token("ci", at(5), revoke()).await.unwrap());
    assert!(!s.revoke_admin_token("ci", at(5), revoke()).await.unwrap());
    assert_eq!(s.admin_token("h2").await.unwrap(), None);
    let before = audit_len(s).await;
    assert!(matches!(
        s.revoke_admin_token("ops", at(6), revoke()).await,
        Err(StoreError::LastAdminCredential(_))
    ));
    assert_eq!(audit_len(s).await, before);
    assert!(s.admin_token("h1").await.unwrap().is_some());
    assert_chain(s).await;
}

/// An identity token signs an operator in once: a second use is a replay
/// until the token is forgotten at its end (by then it is refused as
/// stale), and the sweeper's prune forgets only ended ones.
pub async fn an_identity_token_signs_in_once(s: Arc<dyn Store>) {
    let s = &*s;
    assert!(s.use_identity_token("k1", at(60), at(0)).await.unwrap());
    assert!(
        !s.use_identity_token("k1", at(60), at(1)).await.unwrap(),
        "a replay"
    );
    assert!(s.use_identity_token("k2", at(600), at(1)).await.unwrap());
    assert!(!s.use_identity_token("k1", at(60), at(60)).await.unwrap());
    // Ended at 60: pruned at 61, k2 stays.
    assert_eq!(s.prune_identity_tokens(at(61)).await.unwrap(), 1);
    assert_eq!(s.prune_identity_tokens(at(61)).await.unwrap(), 0);
    assert!(
        !s.use_identity_token("k2", at(600), at(62)).await.unwrap(),
        "a prune keeps the tokens still live"
    );
    assert!(s.use_identity_token("k1", at(200), at(62)).await.unwrap());
    // An ended row is replaced, pruned or not.
    assert!(s.use_identity_token("k2", at(900), at(601)).await.unwrap());
}

/// Single sign-on sessions: credentials with an end, which a person's next
/// sign-in replaces (and which sweeps ended ones away), which never take a
/// made credential's name and never count as the last admin.
pub async fn operator_sessions_end_and_are_replaced(s: Arc<dyn Store>) {
    let s = &*s;
    let create = || vec![ev(AuditKind::AdminTokenCreate)];
    s.add_admin_token("ops", "h1", Role::Admin, false, at(0), create())
        .await
        .unwrap();
    s.add_operator_session("alice@x", "s1", Role::Approver, at(100), at(1), create())
        .await
        .unwrap();
    let alice = s.admin_token("s1").await.unwrap().unwrap();
    assert_eq!(
        (alice.name.as_str(), alice.role, alice.expires_at),
        ("alice@x", Role::Approver, Some(at(100)))
    );
    assert_eq!(s.admin_token("h1").await.unwrap().unwrap().expires_at, None);
    // The same person again: the old session is gone.
    s.add_operator_session("alice@x", "s2", Role::Approver, at(200), at(2), create())
        .await
        .unwrap();
    assert_eq!(s.admin_token("s1").await.unwrap(), None);
    assert!(s.admin_token("s2").await.unwrap().is_some());
    // A made credential's name, or a secret in use: refused, nothing recorded.
    let before = audit_len(s).await;
    assert!(matches!(
        s.add_operator_session("ops", "s3", Role::Admin, at(200), at(3), create())
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.add_operator_session("bob@x", "h1", Role::Admin, at(200), at(3), create())
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(audit_len(s).await, before);
    // Admin sessions are not counted, and do not keep the last made admin.
    s.add_operator_session("bob@x", "s4", Role::Admin, at(200), at(4), create())
        .await
        .unwrap();
    assert_eq!(s.admin_token_count().await.unwrap(), 1);
    let revoke = || vec![ev(AuditKind::AdminTokenRevoke)];
    assert!(matches!(
        s.revoke_admin_token("ops", at(5), revoke()).await,
        Err(StoreError::LastAdminCredential(_))
    ));
    assert!(
        s.revoke_admin_token("bob@x", at(5), revoke())
            .await
            .unwrap()
    );
    // A later sign-in sweeps the ended sessions away.
    s.add_operator_session("carol@x", "s5", Role::Auditor, at(900), at(300), create())
        .await
        .unwrap();
    let names: Vec<_> = s
        .admin_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["carol@x", "ops"]);
    assert_chain(s).await;
}

fn session(name: &str, role: Role, dev: bool, end: i64, now: i64) -> AdminCredential {
    AdminCredential {
        console_session: true,
        name: name.into(),
        role,
        dev,
        created_at: at(now),
        expires_at: Some(at(end)),
    }
}

/// Console sessions: found by their secret with their credential's name
/// and role, ended by sign-out, and by their credential's rotation or
/// revocation; ended ones are swept away.
pub async fn console_sessions_end_with_sign_out_and_their_credential(s: Arc<dyn Store>) {
    let s = &*s;
    let create = || vec![ev(AuditKind::AdminTokenCreate)];
    let revoke = || vec![ev(AuditKind::AdminTokenRevoke)];
    s.add_admin_token("root", "r1", Role::Admin, false, at(0), create())
        .await
        .unwrap();
    s.add_admin_token("ann", "a1", Role::Auditor, false, at(0), create())
        .await
        .unwrap();
    s.add_console_session(
        &session("ann", Role::Auditor, false, 100, 1),
        "c1",
        create(),
    )
    .await
    .unwrap();
    s.add_console_session(
        &session("ann", Role::Auditor, false, 100, 1),
        "c2",
        create(),
    )
    .await
    .unwrap();
    s.add_console_session(&session("root", Role::Admin, false, 100, 1), "c3", create())
        .await
        .unwrap();
    s.add_console_session(&session("dev", Role::Admin, true, 100, 1), "c0", create())
        .await
        .unwrap();
    assert!(s.admin_token("c0").await.unwrap().unwrap().dev);
    let c1 = s.admin_token("c1").await.unwrap().unwrap();
    assert_eq!(
        (c1.name.as_str(), c1.role, c1.expires_at, c1.dev),
        ("ann", Role::Auditor, Some(at(100)), false)
    );
    // Not listed or counted as credentials.
    assert_eq!(s.admin_tokens().await.unwrap().len(), 2);
    assert_eq!(s.admin_token_count().await.unwrap(), 1);
    // A secret in use is refused, recording nothing.
    let before = audit_len(s).await;
    assert!(matches!(
        s.add_console_session(
            &session("ann", Role::Auditor, false, 100, 2),
            "r1",
            create()
        )
        .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(audit_len(s).await, before);
    // Sign-out ends one session, once.
    assert!(s.end_console_session("c1", at(2), revoke()).await.unwrap());
    assert!(!s.end_console_session("c1", at(2), revoke()).await.unwrap());
    assert_eq!(s.admin_token("c1").await.unwrap(), None);
    assert!(s.admin_token("c2").await.unwrap().is_some());
    // The credential's rotation or revocation ends the rest.
    assert!(
        s.rotate_admin_token("root", "r2", at(3), vec![ev(AuditKind::AdminTokenRotate)])
            .await
            .unwrap()
    );
    assert_eq!(s.admin_token("c3").await.unwrap(), None);
    assert!(s.revoke_admin_token("ann", at(4), revoke()).await.unwrap());
    assert_eq!(s.admin_token("c2").await.unwrap(), None);
    // An ended session is swept at the next sign-in.
    s.add_console_session(&session("root", Role::Admin, false, 10, 5), "c4", create())
        .await
        .unwrap();
    s.add_console_session(
        &session("root", Role::Admin, false, 100, 50),
        "c5",
        create(),
    )
    .await
    .unwrap();
    assert_eq!(s.admin_token("c4").await.unwrap(), None);
    assert!(s.admin_token("c5").await.unwrap().is_some());
    assert_chain(s).await;
}

/// Sign-out ends exactly the session whose secret it is given, by its
/// hash, in whichever table it is (a console session or a single sign-on
/// session); a credential without an end is never ended by it, and a
/// second sign-out ends nothing.
pub async fn sign_out_ends_exactly_the_session_with_its_secret(s: Arc<dyn Store>) {
    let s = &*s;
    let create = || vec![ev(AuditKind::AdminTokenCreate)];
    let revoke = || vec![ev(AuditKind::AdminTokenRevoke)];
    s.add_admin_token("root", "r1", Role::Admin, false, at(0), create())
        .await
        .unwrap();
    s.add_operator_session("alice", "sso1", Role::Approver, at(100), at(1), create())
        .await
        .unwrap();
    s.add_console_session(&session("root", Role::Admin, false, 100, 1), "c1", create())
        .await
        .unwrap();
    s.add_console_session(
        &session("alice", Role::Approver, false, 100, 1),
        "c2",
        create(),
    )
    .await
    .unwrap();
    // A credential without an end: never ended by a sign-out.
    let before = audit_len(s).await;
    assert!(!s.end_console_session("r1", at(2), revoke()).await.unwrap());
    assert_eq!(audit_len(s).await, before);
    // The console session, once; its credential stays.
    assert!(s.end_console_session("c1", at(2), revoke()).await.unwrap());
    assert!(!s.end_console_session("c1", at(2), revoke()).await.unwrap());
    assert!(s.admin_token("r1").await.unwrap().is_some());
    // The single sign-on session, by its secret, once.
    assert!(
        s.end_console_session("sso1", at(3), revoke())
            .await
            .unwrap()
    );
    assert!(
        !s.end_console_session("sso1", at(3), revoke())
            .await
            .unwrap()
    );
    assert_eq!(s.admin_token("sso1").await.unwrap(), None);
    assert_eq!(s.admin_tokens().await.unwrap().len(), 1);
    assert_chain(s).await;
}

/// Console sessions end with their source: a new single sign-on session
/// for the name, the dev credential's replacement, revoking or rotating
/// the name (even when no credential has it), signing the source session
/// out; the live ones are listed, marked as sessions.
pub async fn console_sessions_end_with_their_source_and_are_listed(s: Arc<dyn Store>) {
    let s = &*s;
    let create = || vec![ev(AuditKind::AdminTokenCreate)];
    let revoke = || vec![ev(AuditKind::AdminTokenRevoke)];
    let live = |h: &'static str| async move { s.admin_token(h).await.unwrap().is_some() };
    s.add_admin_token("root", "r1", Role::Admin, false, at(0), create())
        .await
        .unwrap();
    // The dev credential replaced: its console sessions end.
    s.add_admin_token("dev", "d1", Role::Admin, true, at(0), create())
        .await
        .unwrap();
    s.add_console_session(&session("dev", Role::Admin, true, 100, 1), "c0", create())
        .await
        .unwrap();
    s.add_admin_token("dev", "d2", Role::Admin, true, at(1), create())
        .await
        .unwrap();
    assert!(!live("c0").await);
    // A new sign-on session for a name (a demoted admin): the console
    // sessions made from the old one end.
    s.add_operator_session("alice", "sso1", Role::Admin, at(100), at(1), create())
        .await
        .unwrap();
    s.add_console_session(
        &session("alice", Role::Admin, false, 100, 1),
        "c1",
        create(),
    )
    .await
    .unwrap();
    s.add_operator_session("alice", "sso2", Role::Auditor, at(100), at(2), create())
        .await
        .unwrap();
    assert!(!live("c1").await);
    // Listed: live sessions only, marked, by name.
    s.add_console_session(&session("bob", Role::Admin, false, 100, 2), "c2", create())
        .await
        .unwrap();
    s.add_console_session(
        &session("carol", Role::Admin, false, 100, 2),
        "c3",
        create(),
    )
    .await
    .unwrap();
    s.add_console_session(
        &session("alice", Role::Auditor, false, 100, 2),
        "c4",
        create(),
    )
    .await
    .unwrap();
    let listed = s.console_sessions(at(3)).await.unwrap();
    let names: Vec<_> = listed.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    assert!(listed.iter().all(|c| c.console_session));
    assert!(s.console_sessions(at(100)).await.unwrap().is_empty());
    assert!(
        s.admin_tokens()
            .await
            .unwrap()
            .iter()
            .all(|c| !c.console_session)
    );
    // Revoking or rotating a name no credential has: its sessions end.
    assert!(s.revoke_admin_token("bob", at(3), revoke()).await.unwrap());
    assert!(!live("c2").await);
    assert!(!s.revoke_admin_token("bob", at(3), revoke()).await.unwrap());
    assert!(
        !s.rotate_admin_token("carol", "x1", at(3), vec![ev(AuditKind::AdminTokenRotate)])
            .await
            .unwrap()
    );
    assert!(!live("c3").await);
    assert!(!live("x1").await);
    // Signing the source session out ends the sessions made from it.
    assert!(
        s.end_console_session("sso2", at(4), revoke())
            .await
            .unwrap()
    );
    assert!(!live("c4").await);
    assert!(live("r1").await);
    assert_chain(s).await;
}

/// Operator credentials carry their role; rotation replaces the secret at
/// once; only credentials of role admin count as the last way in.
pub async fn operator_credentials_have_roles_and_rotate(s: Arc<dyn Store>) {
    let s = &*s;
    let create = || vec![ev(AuditKind::AdminTokenCreate)];
    s.add_admin_token("root", "r1", Role::Admin, false, at(0), create())
        .await
        .unwrap();
    s.add_admin_token("ann", "a1", Role::Approver, false, at(1), create())
        .await
        .unwrap();
    s.add_admin_token("pat", "p1", Role::PolicyAuthor, false, at(1), create())
        .await
        .unwrap();
    assert_eq!(
        s.admin_token("a1").await.unwrap().unwrap().role,
        Role::Approver
    );
    assert_eq!(
        s.admin_token("p1").await.unwrap().unwrap().role,
        Role::PolicyAuthor
    );
    assert_eq!(s.admin_token_count().await.unwrap(), 1, "admins only");
    let roles: Vec<_> = s
        .admin_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.name, c.role))
        .collect();
    assert_eq!(
        roles,
        [
            ("ann".to_owned(), Role::Approver),
            ("pat".to_owned(), Role::PolicyAuthor),
            ("root".to_owned(), Role::Admin)
        ]
    );
    // Rotated: the old secret is gone at once, the new one has the role.
    let rotate = || vec![ev(AuditKind::AdminTokenRotate)];
    assert!(
        s.rotate_admin_token("ann", "a2", at(2), rotate())
            .await
            .unwrap()
    );
    assert_eq!(s.admin_token("a1").await.unwrap(), None);
    let ann = s.admin_token("a2").await.unwrap().unwrap();
    assert_eq!((ann.name.as_str(), ann.role), ("ann", Role::Approver));
    assert!(
        !s.rotate_admin_token("nobody", "x", at(2), rotate())
            .await
            .unwrap()
    );
    let before = audit_len(s).await;
    assert!(matches!(
        s.rotate_admin_token("ann", "r1", at(2), rotate()).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        audit_len(s).await,
        before,
        "a refused rotation records nothing"
    );
    // The approver and the author are not the last way in; the admin is.
    let revoke = || vec![ev(AuditKind::AdminTokenRevoke)];
    assert!(s.revoke_admin_token("ann", at(3), revoke()).await.unwrap());
    assert!(s.revoke_admin_token("pat", at(3), revoke()).await.unwrap());
    assert!(matches!(
        s.revoke_admin_token("root", at(3), revoke()).await,
        Err(StoreError::LastAdminCredential(_))
    ));
    assert_chain(s).await;
}

pub async fn audit_checkpoints_are_kept_once_per_record(s: Arc<dyn Store>) {
    let s = &*s;
    assert_eq!(s.last_audit_checkpoint().await.unwrap(), None);
    s.add_audit_checkpoint(4, "cp4").await.unwrap();
    s.add_audit_checkpoint(12, "cp12").await.unwrap();
    s.add_audit_checkpoint(8, "cp8").await.unwrap();
    // A second one for the same record (another replica) is ignored.
    s.add_audit_checkpoint(8, "cp8-again").await.unwrap();
    assert_eq!(
        s.audit_checkpoints().await.unwrap(),
        vec![
            (4, "cp4".to_owned()),
            (8, "cp8".to_owned()),
            (12, "cp12".to_owned())
        ]
    );
    assert_eq!(
        s.last_audit_checkpoint().await.unwrap(),
        Some((12, "cp12".to_owned()))
    );
}

pub async fn signing_keys_rotate_atomically(s: Arc<dyn Store>) {
    let s = &*s;
    let key = |kid: &str, t: Timestamp| StoredKey {
        kid: kid.to_owned(),
        alg: "EdDSA".to_owned(),
        sealed: vec![1, 2, 3, kid.len() as u8],
        created_at: t,
        retired_at: None,
    };
    s.add_signing_key(key("k1", at(0)), at(0), vec![ev(AuditKind::KeyRotate)])
        .await
        .unwrap();
    s.add_signing_key(key("k2", at(10)), at(10), vec![ev(AuditKind::KeyRotate)])
        .await
        .unwrap();
    let keys = s.signing_keys().await.unwrap();
    let by_kid: BTreeMap<&str, &StoredKey> = keys.iter().map(|k| (k.kid.as_str(), k)).collect();
    assert_eq!(by_kid.len(), 2);
    assert_eq!(by_kid["k1"].retired_at, Some(at(10)));
    assert_eq!(by_kid["k2"].retired_at, None);
    assert_eq!(by_kid["k2"].sealed, vec![1, 2, 3, 2]);
    assert_eq!(by_kid["k2"].alg, "EdDSA");

    // A duplicate kid fails as a whole: k2 is not retired by it, no audit.
    let before = audit_len(s).await;
    let err = s
        .add_signing_key(key("k2", at(20)), at(20), vec![ev(AuditKind::KeyRotate)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let keys = s.signing_keys().await.unwrap();
    let k2 = keys.iter().find(|k| k.kid == "k2").unwrap();
    assert_eq!(
        k2.retired_at, None,
        "a failed rotation retired the current key"
    );
    assert_eq!(audit_len(s).await, before);
    assert_chain(s).await;
}

/// Every sealed value is listed with where it lives, and a re-sealing
/// replaces them all in one transaction: one that names a value that is
/// gone changes nothing (not the others, not the audit).
pub async fn sealed_values_are_resealed_all_or_none(s: Arc<dyn Store>) {
    use writ_store::{SealedTable, SealedValue};
    let s = &*s;
    s.add_signing_key(
        StoredKey {
            kid: "k1".into(),
            alg: "EdDSA".into(),
            sealed: vec![1],
            created_at: at(0),
            retired_at: None,
        },
        at(0),
        vec![],
    )
    .await
    .unwrap();
    let tool = Tool {
        name: "crm".parse().unwrap(),
        audience: "https://crm.test".into(),
        scopes: vec!["read".parse().unwrap()],
        attributes: Default::default(),
        upstream: None,
        secret_header: None,
        gateway: None,
        created_at: at(1),
    };
    s.create_tool(&tool, vec![]).await.unwrap();
    s.set_tool_secret(&tool.name, "x-api-key", vec![2], at(2), vec![])
        .await
        .unwrap();
    let mut values = s.sealed_values().await.unwrap();
    let find = |vs: &[SealedValue], table: SealedTable, id: &str| {
        vs.iter()
            .find(|v| v.table == table && v.id == id)
            .map(|v| (v.header.clone(), v.sealed.clone()))
    };
    assert_eq!(
        find(&values, SealedTable::SigningKey, "k1"),
        Some((String::new(), vec![1]))
    );
    assert_eq!(
        find(&values, SealedTable::ToolSecret, "crm"),
        Some(("x-api-key".into(), vec![2]))
    );

    // One value that is not there: nothing changes.
    let before = audit_len(s).await;
    let mut bad = values.clone();
    for v in &mut bad {
        v.sealed.push(9);
    }
    bad.push(SealedValue {
        table: SealedTable::SpiffeKey,
        id: "gone".into(),
        header: String::new(),
        sealed: vec![3],
    });
    let err = s
        .reseal(bad, at(3), vec![ev(AuditKind::KeyRotate)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(s.sealed_values().await.unwrap().len(), values.len());
    assert_eq!(
        find(
            &s.sealed_values().await.unwrap(),
            SealedTable::SigningKey,
            "k1"
        ),
        Some((String::new(), vec![1])),
        "a failed re-sealing changed a value"
    );
    assert_eq!(audit_len(s).await, before);

    for v in &mut values {
        v.sealed = vec![7, 7];
    }
    s.reseal(values.clone(), at(4), vec![ev(AuditKind::KeyRotate)])
        .await
        .unwrap();
    let after = s.sealed_values().await.unwrap();
    assert_eq!(after.len(), values.len());
    assert!(after.iter().all(|v| v.sealed == vec![7, 7]));
    assert_eq!(s.tool_secrets().await.unwrap()[0].sealed, vec![7, 7]);
    assert_eq!(audit_len(s).await, before + 1);
    assert_chain(s).await;
}

pub async fn tools_create_get_list(s: Arc<dyn Store>) {
    let s = &*s;
    let tool = |n: &str, aud: &str| Tool {
        name: n.parse::<ToolName>().unwrap(),
        audience: aud.to_owned(),
        scopes: vec!["read".parse().unwrap(), "write".parse().unwrap()],
        attributes: [("data".to_owned(), "user".to_owned())].into(),
        upstream: Some(writ_core::api::Upstream::Http {
            url: format!("{aud}/v1"),
            require_secret: true,
            txn_token_only: false,
        }),
        secret_header: None,
        gateway: None,
        created_at: at(5),
    };
    let github = tool("github", "https://api.github.test");
    let jira = tool("jira", "https://jira.test");
    s.create_tool(&jira, vec![ev(AuditKind::ToolRegister)])
        .await
        .unwrap();
    s.create_tool(&github, vec![ev(AuditKind::ToolRegister)])
        .await
        .unwrap();
    assert_eq!(
        s.get_tool(&github.name).await.unwrap(),
        Some(github.clone())
    );
    assert_eq!(s.get_tool(&"nope".parse().unwrap()).await.unwrap(), None);
    let mut listed = s.list_tools().await.unwrap();
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(listed, vec![github.clone(), jira]);

    let before = audit_len(s).await;
    let err = s
        .create_tool(
            &tool("github", "https://evil.test"),
            vec![ev(AuditKind::ToolRegister)],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(s.get_tool(&github.name).await.unwrap(), Some(github));
    assert_eq!(audit_len(s).await, before);
}

/// A tool keeps the gateway it is bound to (migration 13); one bound to
/// none is the embedded gateway's, which is how tools registered before
/// the binding existed read back.
pub async fn h11_tools_keep_the_gateway_that_serves_them(s: Arc<dyn Store>) {
    let s = &*s;
    let tool = |n: &str, gateway: Option<&str>| Tool {
        name: n.parse::<ToolName>().unwrap(),
        audience: format!("https://{n}.test"),
        scopes: vec!["read".parse().unwrap()],
        attributes: Default::default(),
        upstream: Some(writ_core::api::Upstream::Http {
            url: format!("https://{n}.internal"),
            require_secret: false,
            txn_token_only: false,
        }),
        secret_header: None,
        gateway: gateway.map(str::to_owned),
        created_at: at(5),
    };
    let edge = tool("crm", Some("edge-1"));
    let plain = tool("wiki", None);
    for t in [&edge, &plain] {
        s.create_tool(t, vec![ev(AuditKind::ToolRegister)])
            .await
            .unwrap();
    }
    let got = s.get_tool(&edge.name).await.unwrap().unwrap();
    assert_eq!(got, edge);
    assert!(got.served_by("edge-1") && !got.served_by("embedded"));
    let listed = s.list_tools().await.unwrap();
    let wiki = listed.iter().find(|t| t.name == plain.name).unwrap();
    assert_eq!(wiki.gateway, None);
    assert!(wiki.served_by("embedded") && !wiki.served_by("edge-1"));

    // Rebound, and back; an unknown tool is refused with nothing written.
    s.set_tool_gateway(
        &plain.name,
        Some("edge-2"),
        at(6),
        vec![ev(AuditKind::ToolRegister)],
    )
    .await
    .unwrap();
    let got = s.get_tool(&plain.name).await.unwrap().unwrap();
    assert_eq!(got.gateway.as_deref(), Some("edge-2"));
    s.set_tool_gateway(&edge.name, None, at(7), vec![ev(AuditKind::ToolRegister)])
        .await
        .unwrap();
    assert_eq!(s.get_tool(&edge.name).await.unwrap().unwrap().gateway, None);
    let before = audit_len(s).await;
    let err = s
        .set_tool_gateway(
            &"nope".parse().unwrap(),
            Some("edge-1"),
            at(8),
            vec![ev(AuditKind::ToolRegister)],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(audit_len(s).await, before);
    assert_chain(s).await;
}

/// Tool secrets are kept sealed as given, replaced in place, and reported
/// by header only; an unknown tool is refused with nothing written.
pub async fn tool_secrets_set_replace_list(s: Arc<dyn Store>) {
    let s = &*s;
    let tool = Tool {
        name: "crm".parse().unwrap(),
        audience: "https://crm.test".into(),
        scopes: vec!["read".parse().unwrap()],
        attributes: Default::default(),
        upstream: None,
        secret_header: None,
        gateway: None,
        created_at: at(5),
    };
    s.create_tool(&tool, vec![]).await.unwrap();
    let before = audit_len(s).await;
    let err = s
        .set_tool_secret(
            &"nope".parse().unwrap(),
            "x-api-key",
            vec![1],
            at(6),
            vec![ev(AuditKind::ToolSecretSet)],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(audit_len(s).await, before);
    s.set_tool_secret(
        &tool.name,
        "x-api-key",
        vec![1, 2, 3],
        at(6),
        vec![ev(AuditKind::ToolSecretSet)],
    )
    .await
    .unwrap();
    s.set_tool_secret(
        &tool.name,
        "authorization",
        vec![4, 5],
        at(7),
        vec![ev(AuditKind::ToolSecretSet)],
    )
    .await
    .unwrap();
    let all = s.tool_secrets().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].header, "authorization");
    assert_eq!(all[0].sealed, vec![4, 5]);
    assert_eq!(
        s.get_tool(&tool.name)
            .await
            .unwrap()
            .unwrap()
            .secret_header
            .as_deref(),
        Some("authorization")
    );
    assert_eq!(audit_len(s).await, before + 2);
}

/// The shadow policy set is kept, replaced and removed, with its audit.
pub async fn shadow_policy_round_trip(s: Arc<dyn Store>) {
    let s = &*s;
    assert_eq!(s.shadow_policy().await.unwrap(), None);
    let before = audit_len(s).await;
    let files = vec![(
        "a.cedar".to_owned(),
        "permit (principal, action, resource);".to_owned(),
    )];
    s.set_shadow_policy(
        Some(("v1".into(), files.clone())),
        at(1),
        vec![ev(AuditKind::PolicyShadow)],
    )
    .await
    .unwrap();
    s.set_shadow_policy(
        Some(("v2".into(), files.clone())),
        at(2),
        vec![ev(AuditKind::PolicyShadow)],
    )
    .await
    .unwrap();
    assert_eq!(s.shadow_policy().await.unwrap(), Some(("v2".into(), files)));
    s.set_shadow_policy(None, at(3), vec![ev(AuditKind::PolicyShadow)])
        .await
        .unwrap();
    assert_eq!(s.shadow_policy().await.unwrap(), None);
    assert_eq!(audit_len(s).await, before + 3);
}

/// A gateway's decisions are recorded once each, in order: redelivery is
/// skipped, a gap is refused with nothing written.
pub async fn gateway_decisions_are_recorded_once(s: Arc<dyn Store>) {
    let s = &*s;
    s.create_gateway("gw-1", "hash-1", at(1), vec![])
        .await
        .unwrap();
    assert!(matches!(
        s.create_gateway("gw-1", "hash-2", at(1), vec![]).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        s.gateway_by_token("hash-1").await.unwrap().as_deref(),
        Some("gw-1")
    );
    assert_eq!(s.gateway_by_token("hash-2").await.unwrap(), None);
    let before = audit_len(s).await;
    let evs = |n: usize| vec![ev(AuditKind::ToolCall); n];
    assert_eq!(
        s.append_gateway_decisions("gw-1", 1, vec![], at(2))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.append_gateway_decisions("gw-1", 1, evs(3), at(2))
            .await
            .unwrap(),
        3
    );
    // 2..=5: 2 and 3 are held already, 4 and 5 are new.
    assert_eq!(
        s.append_gateway_decisions("gw-1", 2, evs(4), at(3))
            .await
            .unwrap(),
        5
    );
    assert_eq!(audit_len(s).await, before + 5);
    assert!(matches!(
        s.append_gateway_decisions("gw-1", 9, evs(1), at(4)).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.append_gateway_decisions("nope", 1, evs(1), at(4)).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(audit_len(s).await, before + 5);
    // A revoked credential resolves to nothing; revoking twice is fine.
    s.revoke_gateway("gw-1", at(5), vec![]).await.unwrap();
    s.revoke_gateway("gw-1", at(6), vec![]).await.unwrap();
    assert_eq!(s.gateway_by_token("hash-1").await.unwrap(), None);
    assert!(matches!(
        s.revoke_gateway("nope", at(6), vec![]).await,
        Err(StoreError::NotFound(_))
    ));
}

fn github_tool() -> Tool {
    Tool {
        name: "github".parse::<ToolName>().unwrap(),
        audience: "https://github.example".to_owned(),
        scopes: vec!["read".parse().unwrap(), "write".parse().unwrap()],
        attributes: Default::default(),
        upstream: None,
        secret_header: None,
        gateway: None,
        created_at: at(0),
    }
}

/// Deleting an agent ends its live tasks and kills its tokens at once; it
/// is gone from every listing, its name stays reserved, and the audit
/// keeps naming it.
pub async fn deleting_an_agent_ends_its_tasks_and_tokens(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let beta = register(s, "beta").await;
    let inst = attest(s, &alpha, None, "jti_a_i", at(1)).await.unwrap();
    let task = start_task(s, &inst, "jti_a_t", at(2), at(60), at(300))
        .await
        .unwrap();
    let other = attest(s, &beta, None, "jti_b_i", at(1)).await.unwrap();
    let mut renamed = s.get_agent(&beta).await.unwrap().unwrap();
    renamed.attributes = [("tier".to_owned(), "high".to_owned())].into();
    s.update_agent(&renamed, at(3), vec![ev(AuditKind::AgentUpdate)])
        .await
        .unwrap();
    assert_eq!(s.get_agent(&beta).await.unwrap().unwrap(), renamed);

    let out = s
        .delete_agent(
            &alpha,
            at(4),
            vec![ev(AuditKind::AgentDelete).agent(&alpha)],
        )
        .await
        .unwrap();
    assert_eq!(out.ended_tasks, 1);
    assert!(out.revoked_tokens >= 2, "{out:?}");
    assert!(!grant(s, "jti_a_t").await.is_live(at(5)));
    assert!(!grant(s, "jti_a_i").await.is_live(at(5)));
    assert_eq!(task_of(s, &task.task_id).await.status, TaskStatus::Revoked);
    assert!(grant(s, "jti_b_i").await.is_live(at(5)), "others untouched");
    assert_eq!(other.agent, beta);
    assert_eq!(s.get_agent(&alpha).await.unwrap(), None);
    let names: Vec<_> = s
        .list_agents()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, std::slice::from_ref(&beta));
    // Gone: no second delete, no update, no quarantine release, no reuse.
    assert!(matches!(
        s.delete_agent(&alpha, at(5), vec![]).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.set_quarantine(&alpha, false, at(5), vec![]).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.create_agent(&agent_record("alpha", at(6)), vec![]).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        all_audit(s)
            .await
            .iter()
            .any(|r| r.event.contains("agent_delete") && r.event.contains("\"alpha\"")),
        "the audit keeps the deleted agent's name"
    );
    assert_chain(s).await;
}

/// Deleting a tool ends every task that declared it (its tokens die);
/// narrowing its scopes ends the tasks that declared a removed one.
pub async fn deleting_or_narrowing_a_tool_ends_the_tasks_using_it(s: Arc<dyn Store>) {
    let s = &*s;
    s.create_tool(&github_tool(), vec![ev(AuditKind::ToolRegister)])
        .await
        .unwrap();
    let alpha = register(s, "alpha").await;
    let inst = attest(s, &alpha, None, "jti_i", at(1)).await.unwrap();
    let t1 = start_task(s, &inst, "jti_t1", at(2), at(60), at(300))
        .await
        .unwrap();

    // Narrowed without touching what the task declared: nothing ends.
    let mut tool = github_tool();
    tool.scopes.push("admin".parse().unwrap());
    s.update_tool(&tool, vec![], at(3), vec![ev(AuditKind::ToolUpdate)])
        .await
        .unwrap();
    assert_eq!(
        s.get_tool(&tool.name).await.unwrap().unwrap().scopes.len(),
        3
    );
    let out = s
        .update_tool(
            &github_tool(),
            vec!["admin".parse().unwrap()],
            at(4),
            vec![ev(AuditKind::ToolUpdate)],
        )
        .await
        .unwrap();
    assert_eq!(out.ended_tasks, 0);
    assert!(grant(s, "jti_t1").await.is_live(at(5)));
    // Narrowed below what it declared: the task ends.
    let mut read_only = github_tool();
    read_only.scopes = vec!["read".parse().unwrap()];
    let out = s
        .update_tool(
            &read_only,
            vec!["write".parse().unwrap()],
            at(5),
            vec![ev(AuditKind::ToolUpdate)],
        )
        .await
        .unwrap();
    assert_eq!(out.ended_tasks, 1);
    assert!(!grant(s, "jti_t1").await.is_live(at(6)));
    assert_eq!(task_of(s, &t1.task_id).await.status, TaskStatus::Revoked);

    // Deleted: a new task on it ends, the tool is gone, its name reserved.
    let t2 = start_task(s, &inst, "jti_t2", at(6), at(60), at(300))
        .await
        .unwrap();
    let out = s
        .delete_tool(&read_only.name, at(7), vec![ev(AuditKind::ToolDelete)])
        .await
        .unwrap();
    assert_eq!(out.ended_tasks, 1);
    assert!(!grant(s, "jti_t2").await.is_live(at(8)));
    assert_eq!(task_of(s, &t2.task_id).await.status, TaskStatus::Revoked);
    assert_eq!(s.get_tool(&read_only.name).await.unwrap(), None);
    assert!(s.list_tools().await.unwrap().is_empty());
    assert!(matches!(
        s.delete_tool(&read_only.name, at(8), vec![]).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.create_tool(&github_tool(), vec![]).await,
        Err(StoreError::Conflict(_))
    ));
    assert_chain(s).await;
}
