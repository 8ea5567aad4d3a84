"""Stock Python OAuth and JOSE libraries against writ, used as their users
would: `authlib` for discovery, token exchange and introspection (with
`client_secret_basic` and `private_key_jwt`), `joserfc` for DPoP proofs
(Ed25519 and ES256 keys), RFC 9068 validation of writ's tokens, and an
upstream tool that verifies the gateway's transaction tokens against
writ's JWKS. Nothing here subclasses a library or adds client-auth code.
"""

import http.server
import json
import threading
import time
import uuid

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from authlib.oauth2.rfc7523.assertion import private_key_jwt_sign
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, OKPKey

from conftest import Writ

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
TICKETS = "https://tickets.example"
BILLING = "https://billing.example"


# --------------------------------------------------------------- helpers


class DpopKey:
    """A DPoP key made and used with joserfc: Ed25519 (signed as RFC 9864's
    `Ed25519`) or P-256 (ES256)."""

    def __init__(self, alg):
        self.alg = alg
        self.key = OKPKey.generate_key("Ed25519") if alg == "Ed25519" else ECKey.generate_key("P-256")

    def proof(self, method, url, token=None):
        claims = {"jti": uuid.uuid4().hex, "htm": method, "htu": url, "iat": int(time.time())}
        if token is not None:
            import base64
            import hashlib
            claims["ath"] = base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()
        header = {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.key.as_dict(private=False)}
        return jwt.encode(header, claims, self.key, algorithms=[self.alg])


def discover(writ):
    meta = AuthorizationServerMetadata(requests.get(writ.url("/.well-known/oauth-authorization-server")).json())
    meta.validate()
    return meta


def register_agent(writ, agent):
    r = requests.post(writ.url("/v1/agents"), headers=writ.admin,
                      json={"name": agent, "attestation": {"kind": "join_token"}})
    assert r.status_code == 201, r.text


def agent_task(writ, key, agent, obo="alice@example.com", register=True):
    """Attest (join token) and start a task, DPoP-bound to `key`."""
    if register:
        register_agent(writ, agent)
    r = requests.post(writ.url(f"/v1/agents/{agent}/join-tokens"), json={"ttl": 60}, headers=writ.admin)
    jt = r.json()["join_token"]
    r = requests.post(writ.url("/v1/attest"), json={"agent": agent, "join_token": jt},
                      headers={"DPoP": key.proof("POST", writ.url("/v1/attest"))})
    assert r.status_code == 201, r.text
    inst = r.json()["access_token"]
    caps = [{"tool": "helpdesk", "scopes": ["read"]}, {"tool": "ledger", "scopes": ["read"]}]
    r = requests.post(writ.url("/v1/tasks"), json={"intent": "triage the queue", "capabilities": caps,
                                                    "on_behalf_of": obo},
                      headers={"Authorization": f"DPoP {inst}", "DPoP": key.proof("POST", writ.url("/v1/tasks"), inst)})
    assert r.status_code == 201, r.text
    return r.json()


def exchange(writ, meta, key, task, audience):
    """RFC 8693 with authlib's OAuth2Session (a public client), the DPoP
    proof in its headers."""
    session = OAuth2Session(client_id="agent", token_endpoint_auth_method="none")
    token = session.fetch_token(
        meta["token_endpoint"], grant_type=EXCHANGE,
        subject_token=task["access_token"], subject_token_type=ACCESS_TOKEN,
        audience=audience, scope="read",
        headers={"DPoP": key.proof("POST", meta["token_endpoint"])},
    )
    assert token["token_type"] == "DPoP"
    assert token["issued_token_type"] == ACCESS_TOKEN
    return token["access_token"]


def jwks(meta):
    return KeySet.import_key_set(requests.get(meta["jwks_uri"]).json())


def validate_rfc9068(meta, token, audience, algorithms):
    """RFC 9068 §4 with joserfc: typ, signature by a published key with the
    expected algorithm, then iss, aud, exp and the required claims."""
    decoded = jwt.decode(token, jwks(meta), algorithms=algorithms)
    assert decoded.header["typ"] == "at+jwt"
    registry = jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": meta["issuer"]},
        aud={"essential": True, "value": audience},
        exp={"essential": True}, iat={"essential": True},
        sub={"essential": True}, jti={"essential": True}, client_id={"essential": True},
    )
    registry.validate(decoded.claims)
    return decoded


def register_client(writ, body):
    r = requests.post(writ.url("/v1/clients"), json=body, headers=writ.admin)
    assert r.status_code == 201, r.text
    return r.json()


# ------------------------------------------------ the upstream tool server


class TxnVerifyingTool(http.server.BaseHTTPRequestHandler):
    """A tool that accepts a call only with a transaction token that
    joserfc verifies against writ's JWKS, for its own audience."""

    audience = None
    jwks_uri = None
    issuer = None
    seen = None

    def answer(self):
        token = self.headers.get("Txn-Token")
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            if not token:
                raise ValueError("no transaction token")
            keys = KeySet.import_key_set(requests.get(self.jwks_uri).json())
            decoded = jwt.decode(token, keys, algorithms=["ES256"])
            if decoded.header.get("typ") != "txntoken+jwt":
                raise ValueError("not a transaction token")
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.audience},
                exp={"essential": True}, iat={"essential": True},
                jti={"essential": True}, txn={"essential": True}, sub={"essential": True},
            ).validate(decoded.claims)
            if decoded.claims["exp"] - decoded.claims["iat"] > 60:
                raise ValueError("lives too long")
            status, out = 200, {"claims": decoded.claims, "headers": headers}
        except (JoseError, ValueError, KeyError) as e:
            status, out = 401, {"refused": f"{type(e).__name__}: {e}"}
        self.seen.append({"token": token, "status": status, "headers": headers})
        body = json.dumps(out).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = answer

    def log_message(self, *args):
        pass


def tool_server(audience, meta):
    handler = type("Tool", (TxnVerifyingTool,), {
        "audience": audience, "jwks_uri": meta["jwks_uri"], "issuer": meta["issuer"], "seen": []})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, handler, f"http://127.0.0.1:{srv.server_address[1]}"


def wait_for_tool(writ, name):
    for _ in range(100):
        if requests.get(writ.gw(f"/.well-known/oauth-protected-resource/{name}")).status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError(f"gateway never saw tool {name}")


# ------------------------------------------------------------------ tests


@pytest.fixture(params=["EdDSA", "ES256"])
def signed_writ(request):
    extra = ("--signing-alg", "ES256") if request.param == "ES256" else ()
    w = Writ(extra=extra)
    w.alg = request.param
    yield w
    w.stop()


@pytest.mark.parametrize("dpop_alg", ["Ed25519", "ES256"])
def test_authlib_and_joserfc_discover_exchange_validate_and_introspect(signed_writ, dpop_alg):
    writ = signed_writ
    meta = discover(writ)
    assert meta["response_types_supported"] == ["none"]
    for endpoint in ("introspection", "revocation"):
        methods = meta[f"{endpoint}_endpoint_auth_methods_supported"]
        assert methods == ["client_secret_basic", "private_key_jwt"], methods
    assert dpop_alg in meta["dpop_signing_alg_values_supported"]
    # The JWKS names each signing key's algorithm: the one chosen.
    signing = [k for k in requests.get(meta["jwks_uri"]).json()["keys"] if not k["kid"].startswith("txn.")]
    assert {k["alg"] for k in signing} == {writ.alg}

    for tool, aud in (("helpdesk", TICKETS), ("ledger", BILLING)):
        r = requests.post(writ.url("/v1/tools"), headers=writ.admin,
                          json={"name": tool, "audience": aud, "scopes": ["read"]})
        assert r.status_code == 201, r.text
    key = DpopKey(dpop_alg)
    task = agent_task(writ, key, "stock-agent")
    token = exchange(writ, meta, key, task, TICKETS)

    # RFC 9068 with joserfc: ES256 tokens pass its default algorithm list;
    # EdDSA ones are named explicitly (joserfc leaves EdDSA out by default).
    algorithms = None if writ.alg == "ES256" else ["EdDSA"]
    decoded = validate_rfc9068(meta, token, TICKETS, algorithms)
    assert decoded.header["alg"] == writ.alg
    assert decoded.claims["cnf"]["jkt"] == key.key.thumbprint()
    assert decoded.claims["obo"] == "alice@example.com"
    with pytest.raises(JoseError):
        validate_rfc9068(meta, token, BILLING, algorithms)

    # Introspection as a resource server with client_secret_basic (authlib's default).
    rs = register_client(writ, {"client_id": "tickets-rs", "audiences": [TICKETS]})
    assert rs["token_endpoint_auth_method"] == "client_secret_basic"
    basic = OAuth2Session(client_id="tickets-rs", client_secret=rs["client_secret"])
    out = basic.introspect_token(meta["introspection_endpoint"], token=token)
    assert out.status_code == 200, out.text
    assert out.json()["active"] is True and out.json()["aud"] == TICKETS

    # ... and with private_key_jwt, keys made by joserfc, assertions signed
    # by authlib (ES256, and Ed25519 by its RFC 9864 name).
    for n, (alg, pk) in enumerate((("ES256", ECKey.generate_key("P-256")),
                                   ("Ed25519", OKPKey.generate_key("Ed25519")))):
        client_id = f"tickets-rs-jwt-{n}"
        registered = register_client(writ, {"client_id": client_id, "audiences": [TICKETS],
                                            "jwks": {"keys": [pk.as_dict(private=False)]}})
        assert registered["token_endpoint_auth_method"] == "private_key_jwt"
        assert "client_secret" not in registered
        session = OAuth2Session(client_id=client_id, client_secret=pk,
                                token_endpoint_auth_method="private_key_jwt",
                                revocation_endpoint_auth_method="private_key_jwt")
        session.register_client_auth_method(PrivateKeyJWT(alg=alg))
        out = session.introspect_token(meta["introspection_endpoint"], token=token)
        assert out.status_code == 200, out.text
        assert out.json()["active"] is True

    # Revocation by the resource server (a token of its audience) with
    # private_key_jwt: the token is inactive afterwards.
    out = session.revoke_token(meta["revocation_endpoint"], token=token)
    assert out.status_code == 200, out.text
    assert basic.introspect_token(meta["introspection_endpoint"], token=token).json() == {"active": False}


def test_client_authentication_failures_are_invalid_client_and_change_nothing(writ):
    meta = discover(writ)
    requests.post(writ.url("/v1/tools"), headers=writ.admin,
                  json={"name": "helpdesk", "audience": TICKETS, "scopes": ["read"]})
    requests.post(writ.url("/v1/tools"), headers=writ.admin,
                  json={"name": "ledger", "audience": BILLING, "scopes": ["read"]})
    key = DpopKey("ES256")
    task = agent_task(writ, key, "stock-agent")
    token = exchange(writ, meta, key, task, TICKETS)
    rs = register_client(writ, {"client_id": "billing-rs", "audiences": [BILLING]})

    # A wrong secret: 401 invalid_client with a Basic challenge; the token stays active.
    wrong = OAuth2Session(client_id="billing-rs", client_secret="not-the-secret")
    for out in (wrong.introspect_token(meta["introspection_endpoint"], token=token),
                wrong.revoke_token(meta["revocation_endpoint"], token=token)):
        assert out.status_code == 401, out.text
        assert out.json()["error"] == "invalid_client"
        assert out.headers["www-authenticate"].lower().startswith("basic")
    good = OAuth2Session(client_id="billing-rs", client_secret=rs["client_secret"])
    assert good.introspect_token(meta["introspection_endpoint"], token=token).json()["active"] is True

    # A client may not revoke a token of another audience (RFC 7009 §2.1).
    out = good.revoke_token(meta["revocation_endpoint"], token=token)
    assert out.status_code == 400 and out.json()["error"] == "unauthorized_client", out.text
    assert good.introspect_token(meta["introspection_endpoint"], token=token).json()["active"] is True

    # private_key_jwt: an assertion used twice is refused the second time.
    pk = ECKey.generate_key("P-256")
    register_client(writ, {"client_id": "jwt-rs", "jwks": {"keys": [pk.as_dict(private=False)]}})
    assertion = private_key_jwt_sign(pk, "jwt-rs", meta["introspection_endpoint"], alg="ES256")
    form = {"token": token, "client_assertion": assertion,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
    first = requests.post(meta["introspection_endpoint"], data=form)
    assert first.status_code == 200 and first.json()["active"] is True, first.text
    again = requests.post(meta["introspection_endpoint"], data=form)
    assert again.status_code == 401 and again.json()["error"] == "invalid_client", again.text
    # ... as is one signed by a key the client did not register, or for another audience.
    other = ECKey.generate_key("P-256")
    for bad in (private_key_jwt_sign(other, "jwt-rs", meta["introspection_endpoint"], alg="ES256"),
                private_key_jwt_sign(pk, "jwt-rs", "https://elsewhere.example/introspect", alg="ES256")):
        out = requests.post(meta["introspection_endpoint"], data={**form, "client_assertion": bad})
        assert out.status_code == 401 and out.json()["error"] == "invalid_client", out.text

    # A revoked client can no longer authenticate.
    assert requests.delete(writ.url("/v1/clients/billing-rs"), headers=writ.admin).status_code == 204
    assert good.introspect_token(meta["introspection_endpoint"], token=token).status_code == 401
    # Secrets are never listed.
    listed = requests.get(writ.url("/v1/clients"), headers=writ.admin).text
    assert rs["client_secret"] not in listed and "billing-rs" in listed


def test_tools_verify_transaction_tokens_with_joserfc_and_refuse_forged_and_misdirected_ones(writ):
    meta = discover(writ)
    tickets, tickets_seen, tickets_url = tool_server(TICKETS, meta)
    billing, billing_seen, billing_url = tool_server(BILLING, meta)
    try:
        # The agent first: the gateway knows it once it sees the tools.
        register_agent(writ, "stock-agent")
        for name, aud, url, only in (("helpdesk", TICKETS, tickets_url, False),
                                     ("ledger", BILLING, billing_url, True)):
            r = requests.post(writ.url("/v1/tools"), headers=writ.admin, json={
                "name": name, "audience": aud, "scopes": ["read"],
                "upstream": {"kind": "http", "url": url + "/api", "txn_token_only": only}})
            assert r.status_code == 201, r.text
            wait_for_tool(writ, name)
        key = DpopKey("ES256")
        task = agent_task(writ, key, "stock-agent", register=False)
        token = exchange(writ, meta, key, task, TICKETS)
        url = writ.gw("/helpdesk/queue/7?sort=age")
        r = requests.get(url, headers={"Authorization": f"DPoP {token}", "DPoP": key.proof("GET", url, token),
                                       "Txn-Token": "agent.made.this"})
        assert r.status_code == 200, r.text
        claims = r.json()["claims"]
        assert claims["aud"] == TICKETS and claims["txn"]
        assert claims["sub"] == "spiffe://writ.local/agent/stock-agent"
        ctx = claims["tctx"]
        assert ctx["task"] == task["task_id"] and ctx["intent"] == "triage the queue"
        assert ctx["obo"] == "alice@example.com"
        assert ctx["method"] == "GET" and ctx["path"] == "/queue/7"
        # The X-Writ-* headers still come, as information.
        assert r.json()["headers"]["x-writ-task"] == task["task_id"]
        genuine = tickets_seen.seen[-1]["token"]

        # A token forged with another key under the same kid: refused.
        header = jwt.decode(genuine, jwks(meta), algorithms=["ES256"]).header
        forged = jwt.encode(header, {**claims, "sub": "spiffe://writ.local/agent/admin"},
                            ECKey.generate_key("P-256"), algorithms=["ES256"])
        r = requests.get(tickets_url + "/api/queue/7", headers={"Txn-Token": forged})
        assert r.status_code == 401 and "Signature" in r.json()["refused"], r.text

        # A genuine token the gateway sent to billing, replayed at tickets: refused.
        billing_token = exchange(writ, meta, key, task, BILLING)
        url = writ.gw("/ledger/invoices")
        r = requests.get(url, headers={"Authorization": f"DPoP {billing_token}",
                                       "DPoP": key.proof("GET", url, billing_token)})
        assert r.status_code == 200, r.text
        # billing asked for the transaction token only: no X-Writ-* headers.
        assert not [h for h in r.json()["headers"] if h.startswith("x-writ-")]
        for_billing = billing_seen.seen[-1]["token"]
        r = requests.get(tickets_url + "/api/queue/7", headers={"Txn-Token": for_billing})
        assert r.status_code == 401 and "aud" in r.json()["refused"], r.text
    finally:
        tickets.shutdown()
        billing.shutdown()
