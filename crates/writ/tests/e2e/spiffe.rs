//! SPIFFE at the broker, over HTTP: nodes, the node API and JWT-SVID
//! attestation, and everything they must refuse. (The Workload API itself
//! is tested with py-spiffe in `interop/python/test_spiffe.py`.)

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::harness::{ADMIN, Broker};

async fn post(b: &Broker, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = b.http().post(b.url(path)).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn get(b: &Broker, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = b.http().get(b.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn public_key() -> String {
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).unwrap();
    URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())
}

async fn spiffe_agent(b: &Broker, name: &str, node: &str, selectors: &[&str]) -> (u16, Value) {
    post(
        b,
        "/v1/agents",
        Some(ADMIN),
        json!({
            "name": name,
            "attestation": { "kind": "spiffe" },
            "workload": { "node": node, "selectors": selectors },
        }),
    )
    .await
}

/// A node attested with a fresh join token: its credential.
async fn attested_node(b: &Broker, name: &str) -> String {
    let (s, jt) = post(
        b,
        &format!("/v1/nodes/{name}/join-tokens"),
        Some(ADMIN),
        json!({ "ttl": 60 }),
    )
    .await;
    assert_eq!(s, 201, "{jt}");
    let (s, out) = post(
        b,
        "/v1/node/attest",
        None,
        json!({ "node": name, "join_token": jt["join_token"] }),
    )
    .await;
    assert_eq!(s, 200, "{out}");
    out["node_token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spiffe_nodes_issue_only_what_is_registered_on_them() {
    let b = Broker::start();

    // Registration rules.
    for n in ["node-1", "node-2"] {
        let (s, v) = post(&b, "/v1/nodes", Some(ADMIN), json!({ "name": n })).await;
        assert_eq!(s, 201, "{v}");
    }
    assert_eq!(
        post(&b, "/v1/nodes", Some(ADMIN), json!({ "name": "node-1" }))
            .await
            .0,
        409
    );
    assert_eq!(
        post(&b, "/v1/nodes", Some(ADMIN), json!({ "name": "../x" }))
            .await
            .0,
        400
    );
    assert_eq!(
        post(&b, "/v1/nodes", None, json!({ "name": "node-3" }))
            .await
            .0,
        401
    );
    let no_workload = post(
        &b,
        "/v1/agents",
        Some(ADMIN),
        json!({ "name": "a0", "attestation": { "kind": "spiffe" } }),
    )
    .await;
    assert_eq!(no_workload.0, 400, "{}", no_workload.1);
    let join_with_workload = post(
        &b,
        "/v1/agents",
        Some(ADMIN),
        json!({ "name": "a0", "attestation": { "kind": "join_token" }, "workload": { "node": "node-1", "selectors": ["unix:uid:1"] } }),
    )
    .await;
    assert_eq!(join_with_workload.0, 400);
    for bad in [
        "uid:1",
        "unix:uid:x",
        "unix:path:relative",
        "unix:sha256:ABC",
        "unix:pid:1",
        // A path alone would let any user running that binary have it.
        "unix:path:/usr/bin/python3",
    ] {
        assert_eq!(
            spiffe_agent(&b, "a0", "node-1", &[bad]).await.0,
            400,
            "{bad}"
        );
    }
    assert_eq!(
        spiffe_agent(
            &b,
            "alpha",
            "node-1",
            &["unix:uid:1000", "unix:path:/usr/bin/python3"]
        )
        .await
        .0,
        201
    );
    assert_eq!(
        spiffe_agent(&b, "beta", "node-2", &["unix:uid:1000"])
            .await
            .0,
        201
    );

    // Node attestation: a join token works once, for its node only.
    let (s, jt) = post(
        &b,
        "/v1/nodes/node-1/join-tokens",
        Some(ADMIN),
        json!({ "ttl": 60 }),
    )
    .await;
    assert_eq!(s, 201);
    let wrong_node = post(
        &b,
        "/v1/node/attest",
        None,
        json!({ "node": "node-2", "join_token": jt["join_token"] }),
    )
    .await;
    assert_eq!(wrong_node.0, 401, "{}", wrong_node.1);
    let (s, out) = post(
        &b,
        "/v1/node/attest",
        None,
        json!({ "node": "node-1", "join_token": jt["join_token"] }),
    )
    .await;
    assert_eq!(s, 200, "{out}");
    let node1 = out["node_token"].as_str().unwrap().to_owned();
    let replay = post(
        &b,
        "/v1/node/attest",
        None,
        json!({ "node": "node-1", "join_token": jt["join_token"] }),
    )
    .await;
    assert_eq!(replay.0, 401);
    let node2 = attested_node(&b, "node-2").await;

    // The node API takes node credentials only.
    assert_eq!(get(&b, "/v1/node/entries", Some(ADMIN)).await.0, 401);
    assert_eq!(get(&b, "/v1/node/entries", None).await.0, 401);
    let (s, entries) = get(&b, "/v1/node/entries", Some(&node1)).await;
    assert_eq!(s, 200);
    assert_eq!(entries["trust_domain"], "writ.local");
    let agents: Vec<&str> = entries["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["agent"].as_str().unwrap())
        .collect();
    assert_eq!(agents, ["alpha"], "a node sees only its own agents");

    // SVIDs: only for its own agents, only for workloads with every selector.
    let x509 = |agent: &str, selectors: Vec<&str>, key: String| json!({ "agent": agent, "public_key": key, "selectors": selectors });
    let all = vec![
        "unix:uid:1000",
        "unix:gid:1000",
        "unix:path:/usr/bin/python3",
    ];
    let (s, svid) = post(
        &b,
        "/v1/node/x509-svid",
        Some(&node1),
        x509("alpha", all.clone(), public_key()),
    )
    .await;
    assert_eq!(s, 200, "{svid}");
    assert_eq!(svid["spiffe_id"], "spiffe://writ.local/agent/alpha");
    assert_eq!(svid["chain"].as_array().unwrap().len(), 2);
    let cases = [
        (
            x509("beta", vec!["unix:uid:1000"], public_key()),
            403,
            "another node's agent",
        ),
        (
            x509("alpha", vec!["unix:uid:1000"], public_key()),
            403,
            "a selector missing",
        ),
        (
            x509("nobody", all.clone(), public_key()),
            403,
            "an unknown agent",
        ),
        (
            x509("alpha", all.clone(), "AAAA".into()),
            400,
            "not a P-256 point",
        ),
        (
            x509("alpha", all.clone(), URL_SAFE_NO_PAD.encode([4u8; 65])),
            400,
            "a point off the curve",
        ),
    ];
    for (body, want, what) in cases {
        let (s, v) = post(&b, "/v1/node/x509-svid", Some(&node1), body).await;
        assert_eq!(s, want, "{what}: {v}");
    }
    let (s, v) = post(
        &b,
        "/v1/node/x509-svid",
        Some(&node2),
        x509("alpha", all.clone(), public_key()),
    )
    .await;
    assert_eq!(s, 403, "node-2 for node-1's agent: {v}");

    // JWT-SVIDs and attestation with them.
    let jwt = |agent: &str, aud: &str| json!({ "agent": agent, "audience": [aud], "selectors": ["unix:uid:1000", "unix:path:/usr/bin/python3"] });
    let (s, tok) = post(&b, "/v1/node/jwt-svid", Some(&node1), jwt("alpha", &b.addr)).await;
    assert_eq!(s, 200, "{tok}");
    let alpha_svid = tok["token"].as_str().unwrap().to_owned();
    assert_eq!(
        post(
            &b,
            "/v1/node/jwt-svid",
            Some(&node1),
            json!({ "agent": "alpha", "audience": [], "selectors": [] })
        )
        .await
        .0,
        400
    );
    let attest = |agent: &str, svid: &str| json!({ "agent": agent, "jwt_svid": svid });
    let (s, v) = post(&b, "/v1/attest", None, attest("alpha", &alpha_svid)).await;
    assert_eq!(s, 201, "{v}");
    // Once only.
    let (s, v) = post(&b, "/v1/attest", None, attest("alpha", &alpha_svid)).await;
    assert_eq!(s, 401, "a replayed JWT-SVID: {v}");
    // Another agent's SVID, another audience, a tampered one, a join-token agent.
    let (_, beta_tok) = post(
        &b,
        "/v1/node/jwt-svid",
        Some(&node2),
        json!({ "agent": "beta", "audience": [b.addr], "selectors": ["unix:uid:1000"] }),
    )
    .await;
    assert_eq!(
        post(
            &b,
            "/v1/attest",
            None,
            attest("alpha", beta_tok["token"].as_str().unwrap())
        )
        .await
        .0,
        401
    );
    let (_, other_aud) = post(
        &b,
        "/v1/node/jwt-svid",
        Some(&node1),
        jwt("alpha", "https://elsewhere.example"),
    )
    .await;
    assert_eq!(
        post(
            &b,
            "/v1/attest",
            None,
            attest("alpha", other_aud["token"].as_str().unwrap())
        )
        .await
        .0,
        401
    );
    let mut tampered = alpha_svid.clone();
    tampered.pop();
    assert_eq!(
        post(&b, "/v1/attest", None, attest("alpha", &tampered))
            .await
            .0,
        401
    );
    assert_eq!(
        post(&b, "/v1/attest", None, attest("demo-agent", &alpha_svid))
            .await
            .0,
        401
    );
    let both = json!({ "agent": "alpha", "jwt_svid": alpha_svid, "join_token": "x" });
    assert_eq!(post(&b, "/v1/attest", None, both).await.0, 400);

    // Rotation: a new authority signs from now on, the old one stays in
    // the bundle (and what it signed goes on verifying).
    let (_, before) = post(&b, "/v1/node/jwt-svid", Some(&node1), jwt("alpha", &b.addr)).await;
    let (s, rotated) = post(&b, "/v1/keys/rotate-spiffe", Some(ADMIN), json!({})).await;
    assert_eq!(s, 200, "{rotated}");
    assert_eq!(
        (
            rotated["x509_authorities"].as_u64(),
            rotated["jwt_keys"].as_u64()
        ),
        (Some(2), Some(2))
    );
    let (_, bundle) = get(&b, "/v1/bundle", None).await;
    let authorities: Vec<Vec<u8>> = bundle["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["use"] == "x509-svid")
        .map(|k| {
            base64::engine::general_purpose::STANDARD
                .decode(k["x5c"][0].as_str().unwrap())
                .unwrap()
        })
        .collect();
    let issuer_of = |v: &Value| {
        URL_SAFE_NO_PAD
            .decode(v["chain"][1].as_str().unwrap())
            .unwrap()
    };
    assert_eq!(authorities.len(), 2);
    assert!(
        authorities.contains(&issuer_of(&svid)),
        "the old authority left the bundle"
    );
    let (_, renewed) = post(
        &b,
        "/v1/node/x509-svid",
        Some(&node1),
        x509("alpha", all.clone(), public_key()),
    )
    .await;
    assert_ne!(
        issuer_of(&renewed),
        issuer_of(&svid),
        "the old authority still signs"
    );
    assert!(authorities.contains(&issuer_of(&renewed)));
    let (s, v) = post(
        &b,
        "/v1/attest",
        None,
        attest("alpha", before["token"].as_str().unwrap()),
    )
    .await;
    assert_eq!(s, 201, "a JWT-SVID signed before the rotation: {v}");

    // Quarantining an agent: no more SVIDs for it, and it leaves the entries.
    b.admin()
        .quarantine(&"alpha".parse().unwrap())
        .await
        .unwrap();
    let (s, entries) = get(&b, "/v1/node/entries", Some(&node1)).await;
    assert_eq!((s, entries["entries"].as_array().unwrap().len()), (200, 0));
    assert_eq!(
        post(
            &b,
            "/v1/node/x509-svid",
            Some(&node1),
            x509("alpha", all.clone(), public_key())
        )
        .await
        .0,
        403
    );
    // (403: the agent is quarantined, as for any attestation method.)
    assert_eq!(
        post(&b, "/v1/attest", None, attest("alpha", &alpha_svid))
            .await
            .0,
        403
    );

    // Quarantining a node: its credential is dead at once, and the
    // JWT-SVIDs it obtained attest nothing more.
    let (_, unused) = post(
        &b,
        "/v1/node/jwt-svid",
        Some(&node2),
        json!({ "agent": "beta", "audience": [b.addr], "selectors": ["unix:uid:1000"] }),
    )
    .await;
    let (s, _) = post(&b, "/v1/nodes/node-2/quarantine", Some(ADMIN), json!({})).await;
    assert_eq!(s, 200);
    let beta = json!({ "agent": "beta", "jwt_svid": unused["token"] });
    assert_eq!(post(&b, "/v1/attest", None, beta).await.0, 401);
    assert_eq!(get(&b, "/v1/node/entries", Some(&node2)).await.0, 401);
    assert_eq!(
        post(
            &b,
            "/v1/nodes/node-2/join-tokens",
            Some(ADMIN),
            json!({ "ttl": 60 })
        )
        .await
        .0,
        403
    );

    // The bundle is public and holds both kinds of authority.
    let (s, bundle) = get(&b, "/v1/bundle", None).await;
    assert_eq!(s, 200);
    let uses: Vec<&str> = bundle["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["use"].as_str().unwrap())
        .collect();
    assert!(
        uses.contains(&"x509-svid") && uses.contains(&"jwt-svid"),
        "{bundle}"
    );
    assert!(
        bundle["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k.get("d").is_none()),
        "a private key is published"
    );

    // Every issuance is audited with its node and selectors; node tokens
    // and join tokens never appear.
    let records = b.admin().audit(0, 10_000).await.unwrap().records;
    let text = serde_json::to_string(&records).unwrap();
    assert!(!text.contains(&node1) && !text.contains(jt["join_token"].as_str().unwrap()));
    let issued: Vec<Value> = records
        .iter()
        .map(|r| serde_json::from_str::<Value>(&r.event).unwrap())
        .filter(|e| e["kind"] == "svid_issue")
        .collect();
    assert!(issued.len() >= 3, "{issued:?}");
    assert!(
        issued
            .iter()
            .all(|e| e["detail"]["node"].is_string() && e["detail"]["selectors"].is_array())
    );
}

/// A federated trust domain (an existing SPIRE deployment, say): its
/// JWT-SVIDs attest agents registered with their SPIFFE ID, checked against
/// the bundle given at start, and nothing else passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spiffe_federated_jwt_svids_attest() {
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).unwrap();
    let point = pair.public_key().as_ref();
    let bundle = json!({ "keys": [{
        "kty": "EC", "crv": "P-256", "use": "jwt-svid", "kid": "spire-1",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    }]});
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.bundle.json");
    std::fs::write(&path, bundle.to_string()).unwrap();
    let mut opts = crate::harness::Opts::default();
    opts.extra.extend([
        "--federate".into(),
        format!("other.example={}", path.display()),
    ]);
    let b = Broker::start_with(opts);

    let id = "spiffe://other.example/ns/prod/sa/agent";
    let register = |name: &str, id: &str| json!({ "name": name, "attestation": { "kind": "spiffe", "spiffe_id": id } });
    let (s, v) = post(&b, "/v1/agents", Some(ADMIN), register("fed", id)).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        post(
            &b,
            "/v1/agents",
            Some(ADMIN),
            register("x1", "spiffe://unknown.example/a")
        )
        .await
        .0,
        400
    );
    assert_eq!(
        post(
            &b,
            "/v1/agents",
            Some(ADMIN),
            register("x2", "spiffe://writ.local/agent/x")
        )
        .await
        .0,
        400
    );
    assert_eq!(
        post(
            &b,
            "/v1/agents",
            Some(ADMIN),
            register("x3", "https://other.example/a")
        )
        .await
        .0,
        400
    );

    let key = jsonwebtoken::EncodingKey::from_ec_der(doc.as_ref());
    let mint = |alg: jsonwebtoken::Algorithm, kid: &str, sub: &str, aud: &str| {
        let mut h = jsonwebtoken::Header::new(alg);
        h.kid = Some(kid.to_owned());
        let exp = std::time::SystemTime::UNIX_EPOCH
            .elapsed()
            .unwrap()
            .as_secs()
            + 300;
        jsonwebtoken::encode(&h, &json!({ "sub": sub, "aud": [aud], "exp": exp }), &key).unwrap()
    };
    let attest = |svid: String| json!({ "agent": "fed", "jwt_svid": svid });
    let good = mint(jsonwebtoken::Algorithm::ES256, "spire-1", id, &b.addr);
    let (s, v) = post(&b, "/v1/attest", None, attest(good)).await;
    assert_eq!(s, 201, "{v}");
    for (svid, what) in [
        (
            mint(
                jsonwebtoken::Algorithm::ES256,
                "spire-1",
                "spiffe://other.example/other",
                &b.addr,
            ),
            "another ID",
        ),
        (
            mint(jsonwebtoken::Algorithm::ES256, "spire-2", id, &b.addr),
            "an unknown key",
        ),
        (
            mint(
                jsonwebtoken::Algorithm::ES256,
                "spire-1",
                id,
                "https://elsewhere.example",
            ),
            "another audience",
        ),
    ] {
        let (s, v) = post(&b, "/v1/attest", None, attest(svid)).await;
        assert_eq!(s, 401, "{what}: {v}");
    }
}
