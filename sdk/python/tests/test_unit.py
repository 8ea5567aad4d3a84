"""Unit tests: no writ needed. Proofs are checked with PyJWT."""

import asyncio
import hashlib
import base64
import time

import httpx2
import jwt
import pytest

from writ_sdk import (
    Denied,
    DpopError,
    InstanceKey,
    InvalidScope,
    InvalidTarget,
    JoinToken,
    OidcToken,
    PendingApproval,
    Quarantined,
    TaskEnded,
    Unauthenticated,
    WritError,
)
from writ_sdk._core import _capabilities, _parse_ts, _renew_at
from writ_sdk._http import Nonces, error_from, wants_nonce
from writ_sdk.mcp import writ_error


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_a_proof_verifies_and_carries_what_rfc_9449_asks(alg):
    key = InstanceKey.generate(alg)
    proof = key.proof("post", "https://writ.example/v1/tasks?x=1#f", access_token="tok", nonce="n1")
    header = jwt.get_unverified_header(proof)
    assert header["typ"] == "dpop+jwt" and header["alg"] == alg
    assert "d" not in header["jwk"], "never the private key"
    public = jwt.PyJWK(header["jwk"], algorithm=alg).key
    claims = jwt.decode(proof, public, algorithms=[alg])
    assert claims["htm"] == "POST"
    assert claims["htu"] == "https://writ.example/v1/tasks"
    assert claims["ath"] == base64.urlsafe_b64encode(hashlib.sha256(b"tok").digest()).rstrip(b"=").decode()
    assert claims["nonce"] == "n1"
    assert abs(claims["iat"] - time.time()) < 5
    again = jwt.decode(key.proof("POST", "https://writ.example/x"), public, algorithms=[alg])
    assert again["jti"] != claims["jti"] and "ath" not in again and "nonce" not in again


def test_thumbprint_is_rfc_7638():
    key = InstanceKey.generate("EdDSA")
    jwk = key.public_jwk
    canonical = '{"crv":"%s","kty":"%s","x":"%s"}' % (jwk["crv"], jwk["kty"], jwk["x"])
    assert key.thumbprint == base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def test_key_file_is_not_replaced(tmp_path):
    path = tmp_path / "k.pem"
    with pytest.raises(FileNotFoundError):
        InstanceKey.from_file(path)
    a = InstanceKey.from_file(path, create=True, alg="ES256")
    assert a.alg == "ES256" and InstanceKey.from_file(path, create=True).thumbprint == a.thumbprint


def response(status, body=None, headers=None):
    import json
    return httpx2.Response(status, headers=headers or {}, content=json.dumps(body or {}).encode())


def test_errors_are_types():
    denied = error_from(response(403, {"title": "Forbidden", "status": 403, "detail": "denied by no-deletes",
                                       "determining_policies": ["no-deletes"], "policy_version": "sha256:ab"}))
    assert isinstance(denied, Denied)
    assert denied.determining_policies == ["no-deletes"] and denied.policy_version == "sha256:ab"
    oauth = error_from(response(403, {"error": "access_denied", "error_description": "denied by a, b (why)"}))
    assert isinstance(oauth, Denied) and oauth.determining_policies == ["a", "b"]
    assert isinstance(error_from(response(400, {"error": "invalid_scope", "error_description": "x"})), InvalidScope)
    assert isinstance(error_from(response(400, {"error": "invalid_target", "error_description": "x"})), InvalidTarget)
    assert isinstance(error_from(response(400, {"error": "invalid_dpop_proof", "error_description": "x"})), DpopError)
    assert isinstance(error_from(response(401, {"detail": "jti already used"},
                                          {"www-authenticate": 'DPoP error="invalid_dpop_proof"'})), DpopError)
    assert isinstance(error_from(response(403, {"detail": "attestation failed: agent is quarantined"}),
                                 attesting=True), Quarantined)
    ended = error_from(response(409, {"detail": "task is not active (expired)"}), task_id="t1")
    assert isinstance(ended, TaskEnded) and ended.task_status == "expired" and ended.task_id == "t1"
    held = error_from(response(403, {"detail": "approval required", "approval_id": "apr_1"}))
    assert isinstance(held, PendingApproval) and held.approval_id == "apr_1"
    assert isinstance(error_from(response(401, {"detail": "token is no longer active"})), Unauthenticated)
    other = error_from(response(500, {"title": "Internal Server Error", "detail": "internal error"}))
    assert type(other) is WritError and other.status == 500
    for e in (denied, oauth, ended, held, other):
        assert isinstance(e, WritError)


def test_nonce_challenges():
    assert wants_nonce(401, {"www-authenticate": 'DPoP error="use_dpop_nonce"'}, None)
    assert wants_nonce(400, {}, {"error": "use_dpop_nonce"})
    assert not wants_nonce(401, {"www-authenticate": 'DPoP error="invalid_dpop_proof"'}, None)
    n = Nonces()
    n.update("http://A:1/x", {"dpop-nonce": "abc"})
    assert n.get("http://a:1/y") == "abc" and n.get("http://a:2/y") is None


def test_mcp_refusals_become_types():
    class E(Exception):
        code = -32001
        message = "denied by writ"
        data = {"determining_policies": ["p"], "policy_version": "v"}

    d = writ_error(E())
    assert isinstance(d, Denied) and d.determining_policies == ["p"]
    E.data = {"approval_id": "apr_9", "approval_status": "pending"}
    assert isinstance(writ_error(E()), PendingApproval)
    E.code = -32000
    assert writ_error(E()) is None


def test_small_pieces(tmp_path):
    assert _capabilities({"tickets": ["read"]}) == [{"tool": "tickets", "scopes": ["read"]}]
    assert _capabilities([{"tool": "t", "scopes": ["a"]}]) == [{"tool": "t", "scopes": ["a"]}]
    assert _parse_ts(1796291780148) == 1796291780.148
    assert _parse_ts("2026-12-03T10:00:00Z") == _parse_ts("2026-12-03T10:00:00+00:00")
    assert _renew_at(0, 900) == 840 and _renew_at(0, 100) == 80
    path = tmp_path / "token"
    path.write_text("abc\n")
    assert asyncio.run(OidcToken(path).credential("iss")) == "abc"
    assert asyncio.run(OidcToken(callback=lambda: "x").credential("iss")) == "x"
    assert asyncio.run(JoinToken("wjt").credential("iss")) == "wjt"
    with pytest.raises(ValueError):
        OidcToken()


class FakeTask:
    """Just what the auths use of a task: its loop, its key, token_for."""

    def __init__(self, loop):
        from types import SimpleNamespace
        self.loop = loop
        self.client = SimpleNamespace(key=InstanceKey.generate())
        self.issued = []

    async def token_for(self, tool, scopes=None, *, fresh=False):
        from writ_sdk import ToolToken
        if fresh or not self.issued:
            self.issued.append(f"tok-{len(self.issued)}")
        return ToolToken(tool, self.issued[-1], "DPoP", "read", time.time(), time.time() + 300)


def resource_server(seen):
    """A resource server that asks for a nonce (RFC 9449 §9) and refuses the
    first token it sees once."""

    def handle(request):
        proof = jwt.decode(request.headers["DPoP"], options={"verify_signature": False})
        token = request.headers["Authorization"].removeprefix("DPoP ")
        seen.append((token, proof.get("nonce"), proof["jti"]))
        if proof.get("nonce") != "n-1":
            return httpx2.Response(401, headers={"WWW-Authenticate": 'DPoP error="use_dpop_nonce"',
                                                 "DPoP-Nonce": "n-1"})
        if token == "tok-0":
            return httpx2.Response(401, headers={"WWW-Authenticate": 'DPoP error="invalid_token"'})
        return httpx2.Response(200, json={"ok": True})

    return handle


def test_http_auth_follows_the_nonce_and_refreshes_on_401():
    from writ_sdk._sync import _Portal
    from writ_sdk.auth import DpopAuth

    portal = _Portal()
    try:
        task = FakeTask(portal.loop)
        seen = []
        auth = DpopAuth(task, "crm")
        with httpx2.Client(auth=auth, transport=httpx2.MockTransport(resource_server(seen))) as h:
            assert h.post("https://rs.example/crm/x?q=1", json={"a": 1}).status_code == 200
        # no nonce -> nonce -> fresh token with the nonce
        assert [(t, n) for t, n, _ in seen] == [("tok-0", None), ("tok-0", "n-1"), ("tok-1", "n-1")]
        assert len({j for _, _, j in seen}) == 3, "a fresh proof per request"

        async def async_side():
            seen.clear()
            async with httpx2.AsyncClient(auth=DpopAuth(task, "crm"),
                                          transport=httpx2.MockTransport(resource_server(seen))) as h:
                return (await h.get("https://rs.example/crm/y")).status_code

        assert asyncio.run(async_side()) == 200
        assert seen[-1][0] == "tok-1" and seen[-1][1] == "n-1"
    finally:
        portal.close()


def test_requests_auth_follows_the_nonce_and_refreshes_on_401():
    import http.server
    import threading

    import requests

    from writ_sdk._sync import _Portal
    from writ_sdk.requests_auth import RequestsDpopAuth

    seen = []
    handle = resource_server(seen)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length") or 0))
            r = handle(httpx2.Request("POST", "http://x/", headers=dict(self.headers)))
            self.send_response(r.status_code)
            for k, v in r.headers.items():
                if k.lower() not in ("content-length",):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(r.content)))
            self.end_headers()
            self.wfile.write(r.content)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    portal = _Portal()
    try:
        task = FakeTask(portal.loop)
        r = requests.post(f"http://127.0.0.1:{srv.server_address[1]}/crm/x", json={"a": 1},
                          auth=RequestsDpopAuth(task, "crm"))
        assert r.status_code == 200, r.text
        assert [(t, n) for t, n, _ in seen] == [("tok-0", None), ("tok-0", "n-1"), ("tok-1", "n-1")]
        assert len(r.history) == 2
    finally:
        portal.close()
        srv.shutdown()
