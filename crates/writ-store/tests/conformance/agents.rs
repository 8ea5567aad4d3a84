//! Agents.

use super::*;

pub async fn agents_create_get_list(s: Arc<dyn Store>) {
    let s = &*s;
    assert!(s.list_agents().await.unwrap().is_empty());
    let beta = agent_record("beta", at(2));
    let alpha = agent_record("alpha", at(1));
    s.create_agent(&beta, vec![ev(AuditKind::AgentRegister)])
        .await
        .unwrap();
    s.create_agent(&alpha, vec![ev(AuditKind::AgentRegister)])
        .await
        .unwrap();

    assert_eq!(s.get_agent(&alpha.name).await.unwrap(), Some(alpha.clone()));
    assert_eq!(s.get_agent(&beta.name).await.unwrap(), Some(beta.clone()));
    assert_eq!(s.get_agent(&name("gamma")).await.unwrap(), None);

    let mut listed = s.list_agents().await.unwrap();
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(listed, vec![alpha, beta]);
    assert_eq!(assert_chain(s).await, 2);
}

pub async fn agent_duplicate_name_conflicts(s: Arc<dyn Store>) {
    let s = &*s;
    let original = agent_record("alpha", at(1));
    s.create_agent(&original, vec![ev(AuditKind::AgentRegister)])
        .await
        .unwrap();
    let audit_before = all_audit(s).await;

    let mut imposter = agent_record("alpha", at(9));
    imposter.spiffe_id = "spiffe://evil.test/agent/alpha".to_owned();
    imposter
        .attributes
        .insert("team".to_owned(), "evil".to_owned());
    imposter.quarantined = true;
    let err = s
        .create_agent(&imposter, vec![ev(AuditKind::AgentRegister)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

    assert_eq!(
        s.get_agent(&original.name).await.unwrap(),
        Some(original.clone())
    );
    assert_eq!(s.list_agents().await.unwrap(), vec![original]);
    assert_eq!(
        all_audit(s).await,
        audit_before,
        "a refused write changed the audit log"
    );
}
