"""writ against a widely used, non-Rust JWT library (PyJWT with cryptography).

PyJWT verifies writ's tokens against the published JWKS, and mints the
OIDC identity tokens that agents present to attest.
"""

import http.server
import json
import threading
import time

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from conftest import ADMIN


def join_and_attest(writ, agent="demo-agent"):
    r = requests.post(writ.url(f"/v1/agents/{agent}/join-tokens"), json={"ttl": 60}, headers=writ.admin)
    assert r.status_code == 201, r.text
    r = requests.post(writ.url("/v1/attest"), json={"agent": agent, "join_token": r.json()["join_token"]})
    assert r.status_code == 201, r.text
    return r.json()


def start_task(writ, instance_token, caps, obo=None):
    body = {"intent": "interop", "capabilities": caps}
    if obo:
        body["on_behalf_of"] = obo
    return requests.post(writ.url("/v1/tasks"), json=body, headers={"Authorization": f"Bearer {instance_token}"})


def introspect(writ, token):
    r = requests.post(writ.url("/oauth2/introspect"), data={"token": token}, headers=writ.admin)
    assert r.status_code == 200, r.text
    return r.json()


def test_pyjwt_verifies_a_task_token_against_the_jwks(writ):
    inst = join_and_attest(writ)
    r = start_task(writ, inst["access_token"], [{"tool": "tickets", "scopes": ["read"]}])
    assert r.status_code == 201, r.text
    token = r.json()["access_token"]

    meta = requests.get(writ.url("/.well-known/oauth-authorization-server")).json()
    jwks_client = jwt.PyJWKClient(meta["jwks_uri"])
    key = jwks_client.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token, key.key, algorithms=["EdDSA"], audience=meta["issuer"], issuer=meta["issuer"],
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
    )
    assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
    assert claims["scope"] == "tickets:read"
    assert claims["task"] == r.json()["task_id"]
    assert claims["client_id"] == inst["instance_id"]
    assert claims["sub"] == "spiffe://writ.local/agent/demo-agent"
    assert claims["exp"] - claims["iat"] <= 600

    # A one-byte change in the payload fails PyJWT's verification too.
    head, payload, sig = token.split(".")
    flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    try:
        jwt.decode(f"{head}.{flipped}.{sig}", key.key, algorithms=["EdDSA"], audience=meta["issuer"])
        raise AssertionError("a tampered token verified")
    except jwt.InvalidTokenError:
        pass

    # Completing the task makes the token inactive, though its signature still verifies.
    done = requests.post(writ.url(f"/v1/tasks/{claims['task']}/complete"),
                         headers={"Authorization": f"Bearer {inst['access_token']}"})
    assert done.status_code == 200, done.text
    assert introspect(writ, token) == {"active": False}


class JwksServer:
    """An OIDC issuer's JWKS endpoint, served by the Python standard library."""

    def __init__(self, jwks):
        body = json.dumps(jwks).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"

    def close(self):
        self.server.shutdown()


def public_jwk(private_key, kid, alg):
    jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(private_key.public_key()))
    jwk.update({"kid": kid, "alg": alg, "use": "sig"})
    return jwk


ISSUER = "https://token.actions.example.com"
SUBJECT = "repo:acme/agents:ref:refs/heads/main"


def oidc_claims(**over):
    now = int(time.time())
    c = {"iss": ISSUER, "aud": "writ", "sub": SUBJECT, "iat": now, "nbf": now, "exp": now + 300}
    c.update(over)
    return c


def register_oidc_agent(writ, name, attestation):
    r = requests.post(writ.url("/v1/agents"), headers=writ.admin, json={
        "name": name, "attestation": {"kind": "oidc", "issuer": ISSUER, "audience": "writ", "subject": SUBJECT, **attestation},
        "attributes": {"owner": "ci"},
    })
    assert r.status_code == 201, r.text


def attest_oidc(writ, agent, token):
    return requests.post(writ.url("/v1/attest"), json={"agent": agent, "oidc_token": token})


def test_oidc_attestation_with_pyjwt_minted_tokens_from_a_jwks_uri(writ):
    key = ed25519.Ed25519PrivateKey.generate()
    server = JwksServer({"keys": [public_jwk(key, "ci-1", "EdDSA")]})
    try:
        register_oidc_agent(writ, "ci-agent", {"jwks_uri": server.url})
        token = jwt.encode(oidc_claims(), key, algorithm="EdDSA", headers={"kid": "ci-1"})
        r = attest_oidc(writ, "ci-agent", token)
        assert r.status_code == 201, r.text
        inst = r.json()
        assert introspect(writ, inst["access_token"])["active"] is True
        t = start_task(writ, inst["access_token"], [{"tool": "tickets", "scopes": ["read"]}])
        assert t.status_code == 201, t.text

        other = ed25519.Ed25519PrivateKey.generate()
        bad = {
            "wrong issuer": jwt.encode(oidc_claims(iss="https://evil.example"), key, algorithm="EdDSA", headers={"kid": "ci-1"}),
            "wrong audience": jwt.encode(oidc_claims(aud="not-writ"), key, algorithm="EdDSA", headers={"kid": "ci-1"}),
            "wrong subject": jwt.encode(oidc_claims(sub="repo:evil/x"), key, algorithm="EdDSA", headers={"kid": "ci-1"}),
            "expired": jwt.encode(oidc_claims(exp=int(time.time()) - 120), key, algorithm="EdDSA", headers={"kid": "ci-1"}),
            "not yet valid": jwt.encode(oidc_claims(nbf=int(time.time()) + 120), key, algorithm="EdDSA", headers={"kid": "ci-1"}),
            "wrong key": jwt.encode(oidc_claims(), other, algorithm="EdDSA", headers={"kid": "ci-1"}),
            "HS256 with the public key": jwt.encode(
                oidc_claims(), public_jwk(key, "ci-1", "EdDSA")["x"].encode(), algorithm="HS256", headers={"kid": "ci-1"}),
        }
        for what, tok in bad.items():
            r = attest_oidc(writ, "ci-agent", tok)
            assert r.status_code == 401, f"{what}: {r.status_code} {r.text}"
            assert r.headers["content-type"] == "application/problem+json"
    finally:
        server.close()

    # Every failure is in the audit log.
    records = requests.get(writ.url("/v1/audit?limit=1000"), headers=writ.admin).json()["records"]
    events = [json.loads(r["event"]) for r in records]
    failures = [e for e in events if e["kind"] == "attest" and e["outcome"] == "failure"]
    assert len(failures) == 7
    assert requests.get(writ.url("/v1/audit/verify"), headers=writ.admin).json()["valid"] is True


def test_es256_only_when_the_agent_asks_for_it(writ):
    key = ec.generate_private_key(ec.SECP256R1())
    jwks = {"keys": [public_jwk(key, "k8s", "ES256")]}
    register_oidc_agent(writ, "es-default", {"jwks": jwks})
    register_oidc_agent(writ, "es-asked", {"jwks": jwks, "algorithms": ["ES256"]})
    token = jwt.encode(oidc_claims(), key, algorithm="ES256", headers={"kid": "k8s"})
    assert attest_oidc(writ, "es-default", token).status_code == 401
    r = attest_oidc(writ, "es-asked", token)
    assert r.status_code == 201, r.text


def test_errors_come_in_the_documented_forms(writ):
    r = requests.post(writ.url("/oauth2/introspect"), data={"token": "x"})
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_token"
    assert "Bearer" in r.headers["WWW-Authenticate"]
    r = requests.post(writ.url("/v1/agents"), headers=writ.admin, json={"name": "x", "attestation": {"kind": "join_token"}, "nope": 1})
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert "nope" in r.json()["detail"]
