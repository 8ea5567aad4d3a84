"""DPoP (RFC 9449) and token exchange (RFC 8693) against writ, from Python.

Every proof here is made by PyJWT with keys from `cryptography`, and the
RFC 7638 thumbprints are computed here too, so nothing of writ's own DPoP
code is on the client side of these tests.
"""

import base64
import hashlib
import json
import subprocess
import threading
import time
import uuid

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from conftest import Writ

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
READ = [{"tool": "tickets", "scopes": ["read"]}]


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def ath(token):
    return b64url(hashlib.sha256(token.encode()).digest())


class Key:
    """A client's DPoP key: Ed25519 (EdDSA) or P-256 (ES256)."""

    REQUIRED = {"OKP": ("crv", "kty", "x"), "EC": ("crv", "kty", "x", "y")}

    def __init__(self, alg="EdDSA"):
        self.alg = alg
        self.private = (ed25519.Ed25519PrivateKey.generate() if alg == "EdDSA"
                        else ec.generate_private_key(ec.SECP256R1()))

    def jwk(self, private=False):
        algo = jwt.algorithms.get_default_algorithms()[self.alg]
        return json.loads(algo.to_jwk(self.private if private else self.private.public_key()))

    def thumbprint(self):
        """RFC 7638: SHA-256 of the required members, sorted, no whitespace."""
        jwk = self.jwk()
        canonical = json.dumps({k: jwk[k] for k in self.REQUIRED[jwk["kty"]]},
                               sort_keys=True, separators=(",", ":"))
        return b64url(hashlib.sha256(canonical.encode()).digest())

    def proof(self, method, url, token=None, header=None, sign_with=None, alg=None, **claims):
        """A proof for `method url` (with `ath` when `token` is given).
        `claims` override or (as None) drop claims, `header` overrides
        header members; `sign_with`/`alg` sign with another key or algorithm."""
        c = {"jti": uuid.uuid4().hex, "htm": method, "htu": url, "iat": int(time.time())}
        if token is not None:
            c["ath"] = ath(token)
        c.update(claims)
        c = {k: v for k, v in c.items() if v is not None}
        h = {"typ": "dpop+jwt", "jwk": self.jwk()}
        h.update(header or {})
        h = {k: v for k, v in h.items() if v is not None}
        return jwt.encode(c, sign_with if sign_with is not None else self.private,
                          algorithm=alg or self.alg, headers=h)


# ---------------------------------------------------------------- helpers


def register_agent(writ, name):
    r = requests.post(writ.url("/v1/agents"), headers=writ.admin,
                      json={"name": name, "attestation": {"kind": "join_token"}})
    assert r.status_code == 201, r.text


def attest(writ, agent, key):
    r = requests.post(writ.url(f"/v1/agents/{agent}/join-tokens"), json={"ttl": 60}, headers=writ.admin)
    assert r.status_code == 201, r.text
    r = requests.post(writ.url("/v1/attest"), json={"agent": agent, "join_token": r.json()["join_token"]},
                      headers={"DPoP": key.proof("POST", writ.url("/v1/attest"))})
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["token_type"] == "DPoP"
    return out["access_token"]


def dpop_post(writ, path, token, key, json_body=None, proof=None):
    """A request to writ with a bound token and a proof for it."""
    proof = proof or key.proof("POST", writ.url(path), token)
    return requests.post(writ.url(path), json=json_body,
                         headers={"Authorization": f"DPoP {token}", "DPoP": proof})


def start_task(writ, inst, key, caps=READ):
    r = dpop_post(writ, "/v1/tasks", inst, key, {"intent": "interop", "capabilities": caps})
    assert r.status_code == 201, r.text
    assert r.json()["token_type"] == "DPoP"
    return r.json()


def exchange(writ, subject, key, actor=None, proof=None, actor_key=None, **form):
    """POST /oauth2/token; the proof is `key`'s (no ath: the token is in the body).
    A bound `actor` proves it takes part with `actor_key` (ath of its token)."""
    data = {"grant_type": EXCHANGE, "subject_token": subject, "subject_token_type": ACCESS_TOKEN, **form}
    if actor is not None:
        data.update(actor_token=actor, actor_token_type=ACCESS_TOKEN)
    if actor_key is not None:
        data["actor_token_proof"] = actor_key.proof("POST", writ.url("/oauth2/token"), actor)
    headers = {}
    if proof is None and key is not None:
        proof = key.proof("POST", writ.url("/oauth2/token"))
    if proof is not None:
        headers["DPoP"] = proof
    return requests.post(writ.url("/oauth2/token"), data=data, headers=headers)


def oauth_error(r, error, status=400):
    assert r.status_code == status, f"expected {status} {error}, got {r.status_code} {r.text}"
    assert r.json()["error"] == error, r.text
    return r.json()


def introspect(writ, token):
    r = requests.post(writ.url("/oauth2/introspect"), data={"token": token}, headers=writ.admin)
    assert r.status_code == 200, r.text
    return r.json()


def verify(writ, token, audience):
    key = jwt.PyJWKClient(writ.url("/.well-known/jwks.json")).get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["EdDSA"], audience=audience, issuer=writ.addr,
                      options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]})


def audit_events(writ):
    r = requests.get(writ.url("/v1/audit?limit=1000"), headers=writ.admin)
    assert r.status_code == 200, r.text
    return [json.loads(rec["event"]) for rec in r.json()["records"]]


def exchange_denials(writ):
    return [e for e in audit_events(writ) if e["kind"] == "token_exchange" and e["outcome"] == "deny"]


def spiffe(agent):
    return f"spiffe://writ.local/agent/{agent}"


# ---------------------------------------------------------------- 1. the chain


def test_three_hop_chain_with_pyjwt_proofs(writ):
    root_key, sub_key = Key("EdDSA"), Key("ES256")
    register_agent(writ, "sub-agent")
    root_inst = attest(writ, "demo-agent", root_key)
    sub_inst = attest(writ, "sub-agent", sub_key)
    assert verify(writ, root_inst, writ.addr)["cnf"] == {"jkt": root_key.thumbprint()}
    assert verify(writ, sub_inst, writ.addr)["cnf"] == {"jkt": sub_key.thumbprint()}

    # Hop 1: the root agent's task, bound to its key.
    root = start_task(writ, root_inst, root_key)
    root_claims = verify(writ, root["access_token"], writ.addr)
    assert root_claims["cnf"]["jkt"] == root_key.thumbprint()
    assert "act" not in root_claims

    # Hop 2: delegated to the sub-agent, with the parent's proof.
    r = exchange(writ, root["access_token"], root_key, actor=sub_inst, actor_key=sub_key, scope="tickets:read")
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["issued_token_type"] == ACCESS_TOKEN
    assert d["token_type"] == "DPoP"
    assert d["task_id"] and d["task_id"] != root["task_id"]
    child = d["access_token"]
    c = verify(writ, child, writ.addr)
    assert c["sub"] == spiffe("demo-agent")
    assert c["act"] == {"sub": spiffe("sub-agent")}
    assert c["cnf"] == {"jkt": sub_key.thumbprint()}
    assert c["task"] == d["task_id"]
    assert c["scope"] == "tickets:read"
    assert c["exp"] <= root_claims["exp"]

    # The parent's key cannot use the child's token; a missing proof neither.
    oauth_error(exchange(writ, child, root_key, audience="tickets"), "invalid_dpop_proof")
    oauth_error(exchange(writ, child, None, audience="tickets"), "invalid_dpop_proof")

    # Hop 3: the sub-agent's tool token, by audience URI, with its own key.
    r = exchange(writ, child, sub_key, audience="https://tickets.example.com", scope="read")
    assert r.status_code == 200, r.text
    t = r.json()
    assert t["issued_token_type"] == ACCESS_TOKEN
    assert t["token_type"] == "DPoP"
    assert t["scope"] == "read"
    assert 0 < t["expires_in"] <= 300
    tool = t["access_token"]
    tc = verify(writ, tool, "https://tickets.example.com")
    assert tc["aud"] == "https://tickets.example.com"
    assert tc["scope"] == "read"
    assert tc["exp"] <= c["exp"]
    assert tc["exp"] - tc["iat"] <= 300
    assert tc["cnf"] == {"jkt": sub_key.thumbprint()}
    assert tc["sub"] == spiffe("demo-agent")
    assert tc["act"] == {"sub": spiffe("sub-agent")}
    # Not a token writ accepts for itself.
    with pytest.raises(jwt.InvalidAudienceError):
        verify(writ, tool, writ.addr)

    # Introspection shows the binding and the actor.
    for tok, jkt in [(root["access_token"], root_key.thumbprint()), (child, sub_key.thumbprint()),
                     (tool, sub_key.thumbprint())]:
        i = introspect(writ, tok)
        assert i["active"] is True
        assert i["cnf"] == {"jkt": jkt}
    assert introspect(writ, child)["act"]["sub"] == spiffe("sub-agent")
    assert introspect(writ, tool)["act"]["sub"] == spiffe("sub-agent")

    # The root ends its task: the whole tree goes inactive.
    done = dpop_post(writ, f"/v1/tasks/{root['task_id']}/complete", root_inst, root_key)
    assert done.status_code == 200, done.text
    assert done.json()["ended_descendants"] == 1
    for tok in (root["access_token"], child, tool):
        assert introspect(writ, tok) == {"active": False}
    oauth_error(exchange(writ, child, sub_key, audience="tickets"), "invalid_grant")
    assert requests.get(writ.url("/v1/audit/verify"), headers=writ.admin).json()["valid"] is True


# ---------------------------------------------------------------- 2. refusals


TASK_BODY = {"intent": "interop", "capabilities": READ}


def test_bound_tokens_need_their_proof(writ):
    key, twin, other = Key("EdDSA"), Key("EdDSA"), Key("ES256")
    inst = attest(writ, "demo-agent", key)
    task = start_task(writ, inst, key)["access_token"]
    tasks, token_url = writ.url("/v1/tasks"), writ.url("/oauth2/token")

    # A bound token is not a bearer token; the DPoP scheme needs a proof.
    r = requests.post(tasks, json=TASK_BODY, headers={"Authorization": f"Bearer {inst}"})
    assert r.status_code == 401, r.text
    assert "DPoP" in r.headers["WWW-Authenticate"]
    r = requests.post(tasks, json=TASK_BODY, headers={"Authorization": f"DPoP {inst}"})
    assert r.status_code == 401, r.text

    # Each refused at /v1/tasks (a proof with ath for the instance token)...
    hs_secret = b"an-hmac-secret-of-thirty-two-by!"
    bad = {
        "another method": (key.proof("PUT", tasks, inst), "htm"),
        "another URL": (key.proof("POST", writ.url("/v1/attest"), inst), "htu"),
        "another host": (key.proof("POST", tasks.replace("127.0.0.1", "localhost"), inst), "htu"),
        "ath for another token": (key.proof("POST", tasks, task), "ath"),
        "no ath": (key.proof("POST", tasks), "ath"),
        "another key (its own jwk)": (other.proof("POST", tasks, inst), "key other than"),
        "another key (the right jwk)": (key.proof("POST", tasks, inst, sign_with=twin.private,
                                                  header={"jwk": key.jwk()}), "signature"),
        "typ JWT": (key.proof("POST", tasks, inst, header={"typ": "JWT"}), "typ"),
        "no typ": (key.proof("POST", tasks, inst, header={"typ": None}), "typ"),
        "HS256": (key.proof("POST", tasks, inst, sign_with=hs_secret, alg="HS256"), "algorithm"),
        "private d in jwk": (key.proof("POST", tasks, inst, header={"jwk": key.jwk(private=True)}), "private key"),
        "no jwk": (key.proof("POST", tasks, inst, header={"jwk": None}), "jwk"),
        "iat 10 min ago": (key.proof("POST", tasks, inst, iat=int(time.time()) - 600), "iat"),
        "iat in 10 min": (key.proof("POST", tasks, inst, iat=int(time.time()) + 600), "iat"),
        "no jti": (key.proof("POST", tasks, inst, jti=None), "malformed"),
    }
    for what, (proof, why) in bad.items():
        r = dpop_post(writ, "/v1/tasks", inst, key, TASK_BODY, proof=proof)
        assert r.status_code == 401, f"{what}: {r.status_code} {r.text}"
        assert r.headers["content-type"] == "application/problem+json", what
        assert 'DPoP error="invalid_dpop_proof"' in r.headers["WWW-Authenticate"], what
        assert why in r.json()["detail"], f"{what}: {r.text}"

    # ...and at the token endpoint (no ath there: the token is in the body).
    bad = {
        "another method": (key.proof("GET", token_url), "htm"),
        "another URL": (key.proof("POST", writ.url("/oauth2/introspect")), "htu"),
        "another key": (other.proof("POST", token_url), "key other than"),
        "another key (the right jwk)": (key.proof("POST", token_url, sign_with=twin.private,
                                                  header={"jwk": key.jwk()}), "signature"),
        "typ JWT": (key.proof("POST", token_url, header={"typ": "JWT"}), "typ"),
        "HS256": (key.proof("POST", token_url, sign_with=hs_secret, alg="HS256"), "algorithm"),
        "private d in jwk": (key.proof("POST", token_url, header={"jwk": key.jwk(private=True)}), "private key"),
        "iat 10 min ago": (key.proof("POST", token_url, iat=int(time.time()) - 600), "iat"),
        "iat in 10 min": (key.proof("POST", token_url, iat=int(time.time()) + 600), "iat"),
        "not a JWT": ("not.a.proof", "malformed"),
    }
    for what, (proof, why) in bad.items():
        r = exchange(writ, task, key, proof=proof, audience="tickets")
        assert r.status_code == 400, f"{what}: {r.status_code} {r.text}"
        assert r.json()["error"] == "invalid_dpop_proof", f"{what}: {r.text}"
        assert why in r.json()["error_description"], f"{what}: {r.text}"

    # Inside the accepted window, and with a query string on htu, a proof works.
    ok = key.proof("POST", tasks + "?ignored=1", inst, iat=int(time.time()) - 30)
    assert dpop_post(writ, "/v1/tasks", inst, key, TASK_BODY, proof=ok).status_code == 201
    r = exchange(writ, task, key, proof=key.proof("POST", token_url, iat=int(time.time()) + 20), audience="tickets")
    assert r.status_code == 200, r.text


def test_a_proof_is_used_once(writ):
    key = Key("ES256")
    inst = attest(writ, "demo-agent", key)
    task = start_task(writ, inst, key)["access_token"]

    proof = key.proof("POST", writ.url("/v1/tasks"), inst)
    first = dpop_post(writ, "/v1/tasks", inst, key, TASK_BODY, proof=proof)
    assert first.status_code == 201, first.text
    again = dpop_post(writ, "/v1/tasks", inst, key, TASK_BODY, proof=proof)
    assert again.status_code == 401, again.text
    assert "already used" in again.json()["detail"]
    assert 'DPoP error="invalid_dpop_proof"' in again.headers["WWW-Authenticate"]

    # At the token endpoint too.
    proof = key.proof("POST", writ.url("/oauth2/token"))
    assert exchange(writ, task, key, proof=proof, audience="tickets").status_code == 200
    oauth_error(exchange(writ, task, key, proof=proof, audience="tickets"), "invalid_dpop_proof")

    # A proof used by an attestation is spent for good.
    r = requests.post(writ.url("/v1/agents/demo-agent/join-tokens"), json={"ttl": 60}, headers=writ.admin)
    att_proof = key.proof("POST", writ.url("/v1/attest"))
    body = {"agent": "demo-agent", "join_token": r.json()["join_token"]}
    assert requests.post(writ.url("/v1/attest"), json=body, headers={"DPoP": att_proof}).status_code == 201
    r = requests.post(writ.url("/v1/agents/demo-agent/join-tokens"), json={"ttl": 60}, headers=writ.admin)
    body["join_token"] = r.json()["join_token"]
    assert requests.post(writ.url("/v1/attest"), json=body, headers={"DPoP": att_proof}).status_code == 401

    # Racing requests with one proof: exactly one gets through.
    for _ in range(5):
        proof = key.proof("POST", writ.url("/v1/tasks"), inst)
        barrier = threading.Barrier(2)
        results = []

        def send():
            barrier.wait()
            results.append(dpop_post(writ, "/v1/tasks", inst, key, TASK_BODY, proof=proof).status_code)

        threads = [threading.Thread(target=send) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(results) == [201, 401], results


# ---------------------------------------------------------------- 3. escalation


def test_escalation_at_the_token_endpoint_is_refused_and_audited(writ):
    key, sub_key = Key("EdDSA"), Key("EdDSA")
    register_agent(writ, "sub-agent")
    r = requests.post(writ.url("/v1/tools"), headers=writ.admin,
                      json={"name": "wiki", "audience": "https://wiki.example.com", "scopes": ["read"]})
    assert r.status_code == 201, r.text
    inst = attest(writ, "demo-agent", key)
    sub_inst = attest(writ, "sub-agent", sub_key)
    task = start_task(writ, inst, key)
    tok = task["access_token"]

    before = len(exchange_denials(writ))
    refusals = [
        ("wider scope", exchange(writ, tok, key, audience="tickets", scope="write"), "invalid_scope"),
        ("wider scope, qualified", exchange(writ, tok, key, audience="tickets", scope="tickets:read tickets:write"),
         "invalid_scope"),
        ("another tool", exchange(writ, tok, key, audience="wiki"), "invalid_target"),
        ("another tool by URI", exchange(writ, tok, key, audience="https://wiki.example.com"), "invalid_target"),
        ("unknown tool", exchange(writ, tok, key, audience="https://nowhere.example.com"), "invalid_target"),
        ("delegating delete", exchange(writ, tok, key, actor=sub_inst, actor_key=sub_key, scope="tickets:delete"),
         "invalid_scope"),
        ("delegating wider", exchange(writ, tok, key, actor=sub_inst, actor_key=sub_key,
                                      scope="tickets:read tickets:write"),
         "invalid_scope"),
    ]
    bodies = []
    for what, r, error in refusals:
        assert r.status_code == 400, f"{what}: {r.status_code} {r.text}"
        assert r.json()["error"] == error, f"{what}: {r.text}"
        assert r.headers["cache-control"] == "no-store"
        bodies.append(r.json())

    # The task ends; its token can be exchanged no more.
    done = dpop_post(writ, f"/v1/tasks/{task['task_id']}/complete", inst, key)
    assert done.status_code == 200, done.text
    ended = oauth_error(exchange(writ, tok, key, audience="tickets", scope="read"), "invalid_grant")
    bodies.append(ended)

    # One deny record per refusal, for this task, saying why.
    denials = exchange_denials(writ)[before:]
    assert len(denials) == len(bodies), denials
    for body, event in zip(bodies, denials):
        assert event["task"] == task["task_id"], event
        assert event["actor"].startswith("instance:"), event
        assert body["error_description"] in event["reason"], (body, event)
    assert requests.get(writ.url("/v1/audit/verify"), headers=writ.admin).json()["valid"] is True


# ---------------------------------------------------------------- 4. depth and cycles


def build_chain(writ, names):
    """demo-agent's read task, delegated along `names`; returns [(agent, key, instance, task token)]."""
    for n in names:
        register_agent(writ, n)
    root_key = Key("EdDSA")
    root_inst = attest(writ, "demo-agent", root_key)
    chain = [("demo-agent", root_key, root_inst, start_task(writ, root_inst, root_key)["access_token"])]
    for i, n in enumerate(names):
        k = Key("ES256" if i % 2 else "EdDSA")
        inst = attest(writ, n, k)
        chain.append((n, k, inst, None))
    return chain


def delegate(writ, hop, to):
    _, key, _, token = hop
    return exchange(writ, token, key, actor=to[2], actor_key=to[1])


def test_delegation_depth_and_cycles(writ):
    chain = build_chain(writ, ["a1", "a2", "a3"])
    # root -> a1 -> a2: each hop nests the earlier actors inside `act`.
    for i in (1, 2):
        r = delegate(writ, chain[i - 1], chain[i])
        assert r.status_code == 200, r.text
        chain[i] = chain[i][:3] + (r.json()["access_token"],)
    c = verify(writ, chain[2][3], writ.addr)
    assert c["sub"] == spiffe("demo-agent")
    assert c["act"] == {"sub": spiffe("a2"), "act": {"sub": spiffe("a1")}}
    assert c["cnf"] == {"jkt": chain[2][1].thumbprint()}

    # Back to an agent already in the chain, or to itself: a cycle.
    for frm, to in [(1, 0), (2, 0), (2, 1), (2, 2)]:
        r = delegate(writ, chain[frm], chain[to])
        body = oauth_error(r, "invalid_grant")
        assert "cycle" in body["error_description"], body

    # a2 -> a3 would be depth 3: the dev policy stops delegation past two hops.
    before = len(exchange_denials(writ))
    r = delegate(writ, chain[2], chain[3])
    oauth_error(r, "access_denied", status=403)
    denial = exchange_denials(writ)[before:]
    assert len(denial) == 1 and "delegation-depth-2" in denial[0]["determining_policies"], denial

    # The deepest token still works for its tool.
    r = exchange(writ, chain[2][3], chain[2][1], audience="tickets")
    assert r.status_code == 200, r.text


PERMISSIVE = """
permit (principal, action == Action::"StartTask", resource)
when { ["read"].containsAll(context.scopes) };
permit (principal, action == Action::"ExchangeToken", resource);
permit (principal, action == Action::"DelegateTask", resource);
"""


@pytest.fixture()
def permissive_writ(monkeypatch, tmp_path):
    """writ with policies that let any depth through, so writ's own limit
    (--max-delegation-depth, 3 by default) is the one that bites."""
    (tmp_path / "all.cedar").write_text(PERMISSIVE)
    real = subprocess.Popen
    monkeypatch.setattr(subprocess, "Popen",
                        lambda args, **kw: real([*args, "--policy-dir", str(tmp_path)], **kw))
    w = Writ()
    monkeypatch.setattr(subprocess, "Popen", real)
    yield w
    w.stop()


def test_writ_limits_depth_whatever_the_policy(permissive_writ):
    writ = permissive_writ
    chain = build_chain(writ, ["a1", "a2", "a3", "a4"])
    for i in (1, 2, 3):
        r = delegate(writ, chain[i - 1], chain[i])
        assert r.status_code == 200, r.text
        chain[i] = chain[i][:3] + (r.json()["access_token"],)
    c = verify(writ, chain[3][3], writ.addr)
    assert c["act"] == {"sub": spiffe("a3"), "act": {"sub": spiffe("a2"), "act": {"sub": spiffe("a1")}}}

    before = len(exchange_denials(writ))
    body = oauth_error(delegate(writ, chain[3], chain[4]), "invalid_grant")
    assert "depth 4" in body["error_description"], body
    assert len(exchange_denials(writ)) == before + 1
    # Cycles are refused before any policy is asked.
    oauth_error(delegate(writ, chain[3], chain[1]), "invalid_grant")


def test_a_key_from_writ_dpop_keygen_loads_in_cryptography(tmp_path):
    """`writ dpop keygen` writes a PKCS#8 PEM that `cryptography` (OpenSSL)
    loads as it is, and the thumbprint writ prints is the key's RFC 7638
    thumbprint computed here."""
    from cryptography.hazmat.primitives import serialization

    from conftest import BIN

    path = tmp_path / "agent.pem"
    out = subprocess.run([BIN, "dpop", "keygen", "--out", str(path)],
                         capture_output=True, text=True, check=True)
    printed = json.loads(out.stdout)["jkt"]
    private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    key = Key()
    key.private = private
    assert key.thumbprint() == printed
