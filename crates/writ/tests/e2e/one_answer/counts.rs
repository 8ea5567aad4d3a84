//! Refusals counted against whoever asked, once, where every enforcement
//! point sees the same count.

use super::*;

/// An enforcement point that enforces AuthZEN's `approval_required` (say,
/// while its agent polls until a person decides) is not charged a refusal
/// for it, as the gateway holding the same call is not.
#[tokio::test]
async fn an_enforced_hold_in_authzen_does_not_count_against_the_agent() {
    let (b, _dir) = broker();
    let gw = observer(&b).await;
    let up = recorder().await;
    let url = up.url.clone();
    register_tool(
        &b,
        "crm",
        &["read", "write"],
        Upstream::Http {
            url,
            require_secret: false,
            txn_token_only: false,
        },
    )
    .await;
    let (task, _tok) = tool_token(&b, "crm", &["read", "write"]).await;
    let mut q = http_question(&task, "PUT", "/customers/1");
    q["context"]["enforced"] = json!(true);
    for _ in 0..3 {
        let d = post(&b, "/access/v1/evaluation", &gw, &q).await;
        assert_eq!(d["context"]["reason"], "approval_required");
    }
    assert_eq!(
        count_of(&counts(&b.addr, &gw).await, "demo-agent"),
        0,
        "a held call is not misbehaviour, whichever enforcement point holds it"
    );
}

#[tokio::test]
async fn a_refused_delegation_counts_against_the_planner_not_the_sub_agent() {
    let (b, _dir) = broker();
    let gw = observer(&b).await;
    b.agent("helper", &[]).await;
    let planner = b.attest("demo-agent").await.access_token;
    let helper = b.attest("helper").await.access_token;
    let root = b
        .start_task(&planner, &["tickets:read,write"])
        .await
        .unwrap();
    for _ in 0..3 {
        let e = b
            .anon()
            .exchange(
                &root.access_token,
                Some(&helper),
                None,
                Some("tickets:write"),
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("access_denied"), "{e}");
    }
    let c = counts(&b.addr, &gw).await;
    assert_eq!(count_of(&c, "demo-agent"), 3, "{c:?}");
    assert_eq!(count_of(&c, "helper"), 0, "{c:?}");
    // An allowed delegation moves nothing.
    b.anon()
        .exchange(
            &root.access_token,
            Some(&helper),
            None,
            Some("tickets:read"),
        )
        .await
        .unwrap();
    // The helper's own refused request is the helper's.
    assert!(b.start_task(&helper, &["tickets:delete"]).await.is_err());
    let c = counts(&b.addr, &gw).await;
    assert_eq!(count_of(&c, "demo-agent"), 3, "{c:?}");
    assert_eq!(count_of(&c, "helper"), 1, "{c:?}");
}

#[tokio::test]
async fn an_authzen_batch_moves_nobody_unless_enforced() {
    let (b, _dir) = broker();
    let gw = observer(&b).await;
    let batch = |enforced: bool| {
        json!({
            "subject": {"type": "agent", "id": "demo-agent"},
            "action": {"name": "StartTask"},
            "context": {"intent": "clean up", "enforced": enforced},
            "evaluations": [
                {"resource": {"type": "tool", "id": "tickets", "properties": {"scopes": ["delete"]}}},
                {"resource": {"type": "tool", "id": "tickets", "properties": {"scopes": ["read"]}}},
                {"resource": {"type": "tool", "id": "tickets", "properties": {"scopes": ["read", "delete"]}}},
            ]
        })
    };
    let decisions = |r: &Value| -> Vec<bool> {
        r["evaluations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["decision"].as_bool().unwrap())
            .collect()
    };
    let r = post(&b, "/access/v1/evaluations", ADMIN, &batch(false)).await;
    assert_eq!(decisions(&r), [false, true, false]);
    let r = post(&b, "/access/v1/evaluations", &gw, &batch(false)).await;
    assert_eq!(decisions(&r), [false, true, false]);
    assert_eq!(
        count_of(&counts(&b.addr, &gw).await, "demo-agent"),
        0,
        "questions count against nobody"
    );

    let r = post(&b, "/access/v1/evaluations", &gw, &batch(true)).await;
    assert_eq!(decisions(&r), [false, true, false]);
    assert_eq!(
        count_of(&counts(&b.addr, &gw).await, "demo-agent"),
        2,
        "each enforced refusal counts once; the allow does not"
    );
    let mut one = batch(true);
    one["resource"] = one["evaluations"][0]["resource"].clone();
    one.as_object_mut().unwrap().remove("evaluations");
    let d = post(&b, "/access/v1/evaluation", ADMIN, &one).await;
    assert_eq!(d["decision"], false);
    assert_eq!(count_of(&counts(&b.addr, &gw).await, "demo-agent"), 3);
}

#[tokio::test]
async fn release_clears_the_count() {
    let (b, _dir) = broker();
    let gw = observer(&b).await;
    let up = recorder().await;
    let url = up.url.clone();
    register_tool(
        &b,
        "crm",
        &["read", "write"],
        Upstream::Http {
            url,
            require_secret: false,
            txn_token_only: false,
        },
    )
    .await;
    let (_task, tok) = tool_token(&b, "crm", &["read"]).await;
    let inst = b.attest("demo-agent").await.access_token;
    for _ in 0..10 {
        assert_eq!(
            b.start_task(&inst, &["tickets:delete"])
                .await
                .unwrap_err()
                .status(),
            Some(403)
        );
    }
    let writ_client::ClientError::Api(p) =
        b.start_task(&inst, &["tickets:read"]).await.unwrap_err()
    else {
        panic!("not a policy denial")
    };
    assert_eq!(p.determining_policies, ["stop-after-many-denials"]);
    assert_eq!(count_of(&counts(&b.addr, &gw).await, "demo-agent"), 11);
    // The gateway sees the count through its bundle and stops the agent too.
    assert!(
        eventually(Duration::from_secs(5), || {
            let (b, tok) = (&b, tok.clone());
            async move { call(b, "GET", "/crm/customers", &tok).await.0 == 403 }
        })
        .await,
        "the gateway never saw the count"
    );
    // (Until its next bundle refresh, it still let calls through.)
    let forwarded = up.requests().len();
    let (_, problem) = call(&b, "GET", "/crm/customers", &tok).await;
    assert_eq!(
        problem["determining_policies"],
        json!(["stop-after-many-denials"])
    );
    assert_eq!(up.requests().len(), forwarded);

    // Refusals count when the gateway delivers them: let it, then release.
    delivered(&b.gateway).await;
    let out = b.cli(&["agent", "quarantine", "demo-agent"]);
    assert!(out.status.success(), "{out:?}");
    let out = b.cli(&["agent", "release", "demo-agent"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(count_of(&counts(&b.addr, &gw).await, "demo-agent"), 0);
    let inst = b.attest("demo-agent").await.access_token;
    b.start_task(&inst, &["tickets:read"]).await.unwrap();
    let (_task, tok) = tool_token(&b, "crm", &["read"]).await;
    assert!(
        eventually(Duration::from_secs(5), || {
            let (b, tok) = (&b, tok.clone());
            async move { call(b, "GET", "/crm/customers", &tok).await.0 == 200 }
        })
        .await,
        "the gateway still stops a released agent"
    );
}
