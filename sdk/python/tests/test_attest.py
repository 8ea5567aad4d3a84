"""Attestation by all three methods against a real writ: a join token, an
OIDC identity token (minted by PyJWT for a test issuer whose JWKS a stdlib
server publishes) from a file or a callback, and a SPIFFE JWT-SVID that
py-spiffe fetches from `writ node`; and re-attestation near expiry."""

import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from writ_sdk import AsyncClient, AttestationFailed, Client, JoinToken, OidcToken, SpiffeJwtSvid
from writ_server import BIN

READ = {"tickets": ["read"]}
ISSUER = "https://ci.example.com"
SUBJECT = "repo:acme/agents:ref:refs/heads/main"


class Issuer:
    """A test OIDC issuer: an Ed25519 key, its JWKS on a stdlib server, and
    identity tokens signed by PyJWT."""

    def __init__(self):
        self.key = ed25519.Ed25519PrivateKey.generate()
        jwk = json.loads(jwt.algorithms.get_default_algorithms()["EdDSA"].to_jwk(self.key.public_key()))
        jwk.update({"kid": "ci-1", "alg": "EdDSA", "use": "sig"})
        body = json.dumps({"keys": [jwk]}).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.jwks_uri = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.minted = 0

    def token(self):
        self.minted += 1
        now = int(time.time())
        return jwt.encode({"iss": ISSUER, "aud": "writ", "sub": SUBJECT, "iat": now, "nbf": now, "exp": now + 300},
                          self.key, algorithm="EdDSA", headers={"kid": "ci-1"})


@pytest.fixture()
def issuer():
    i = Issuer()
    yield i
    i.server.shutdown()


def register_oidc(writ, issuer, name="ci-agent"):
    writ.register_agent(name, {"kind": "oidc", "issuer": ISSUER, "jwks_uri": issuer.jwks_uri,
                               "audience": "writ", "subject": SUBJECT})


def test_join_token(writ):
    with Client(writ.addr, JoinToken(writ.join_token()), agent="demo-agent") as c:
        inst = c.attest()
        assert inst.instance_id.startswith("ins_")
        with c.task(intent="x", capabilities=READ) as task:
            task.token_for("tickets")
    # A join token works once.
    jt = writ.join_token()
    with Client(writ.addr, JoinToken(jt), agent="demo-agent") as c:
        c.attest()
    with Client(writ.addr, JoinToken(jt), agent="demo-agent") as c:
        with pytest.raises(AttestationFailed):
            c.attest()


def test_oidc_token_from_a_file_and_from_a_callback(writ, issuer, tmp_path):
    register_oidc(writ, issuer)
    path = tmp_path / "token"
    path.write_text(issuer.token() + "\n")
    with Client(writ.addr, OidcToken(path), agent="ci-agent") as c:
        with c.task(intent="x", capabilities=READ) as task:
            task.token_for("tickets")

    async def from_callback():
        async def fetch():
            return issuer.token()

        async with AsyncClient(writ.addr, OidcToken(callback=fetch), agent="ci-agent") as c:
            async with c.task(intent="x", capabilities=READ) as task:
                await task.token_for("tickets")

    import asyncio
    asyncio.run(from_callback())
    # A token for another subject does not attest it.
    bad = jwt.encode({"iss": ISSUER, "aud": "writ", "sub": "repo:evil/x", "iat": int(time.time()),
                      "exp": int(time.time()) + 300}, issuer.key, algorithm="EdDSA", headers={"kid": "ci-1"})
    with Client(writ.addr, OidcToken(callback=lambda: bad), agent="ci-agent") as c:
        with pytest.raises(AttestationFailed):
            c.attest()


def test_reattestation_near_instance_token_expiry(writ, issuer):
    register_oidc(writ, issuer)
    with Client(writ.addr, OidcToken(callback=issuer.token), agent="ci-agent") as c:
        first = c.attest()
        with c.task(intent="x", capabilities=READ) as task:
            # As if its instance token had a few seconds left.
            c.aio._instance = type(first)(first.instance_id, first.access_token, time.time() - 890, time.time() + 5)
            second = c.start_task("y", READ)
            assert c.instance.instance_id != first.instance_id, "attested again"
            assert issuer.minted == 2
            # The first task lives on with its own (renewed) token, bound to the same key.
            task.heartbeat()
            task.token_for("tickets")
            second.complete()


class Node:
    """`writ node` serving the Workload API on a socket for node-1."""

    def __init__(self, writ):
        self.dir = tempfile.mkdtemp(prefix="writ-node-")
        os.chmod(self.dir, 0o755)
        jt = writ.post("/v1/nodes/node-1/join-tokens", {"ttl": 600})["join_token"]
        self.socket = "unix://" + os.path.join(self.dir, "agent.sock")
        self.proc = subprocess.Popen(
            [BIN, "node", "--broker", writ.addr, "--name", "node-1", "--join-token", jt, "--socket", self.socket,
             "--state-dir", os.path.join(self.dir, "state")],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={"PATH": os.environ.get("PATH", ""), "WRIT_LOG": "warn"})
        line = self.proc.stdout.readline()
        assert line.startswith("workload API listening on"), line

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def test_spiffe_jwt_svid_from_writ_node(writ):
    writ.post("/v1/nodes", {"name": "node-1"})
    writ.register_agent("py-agent", {"kind": "spiffe"}, workload={
        "node": "node-1", "selectors": [f"unix:uid:{os.getuid()}", f"unix:path:{os.path.realpath(sys.executable)}"]})
    node = Node(writ)
    try:
        with Client(writ.addr, SpiffeJwtSvid(node.socket), agent="py-agent") as c:
            inst = c.attest()
            assert jwt.decode(inst.access_token, options={"verify_signature": False})["sub"] == \
                "spiffe://writ.local/agent/py-agent"
            with c.task(intent="x", capabilities=READ) as task:
                task.token_for("tickets")
    finally:
        node.stop()
