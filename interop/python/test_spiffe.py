"""SPIFFE: py-spiffe (the SPIFFE Python library) against `writ node`.

A real `writ serve` and `writ node`; the workload is this Python process,
identified by the kernel (its uid and its interpreter's path), with no
secret on disk. It fetches an X.509-SVID that chains to the published
bundle (checked with `cryptography`), a JWT-SVID that verifies against the
JWT bundle (with PyJWT), attests to writ with the JWT-SVID and starts a
task; a process running as another user gets nothing; rotation is pushed
on a short TTL; quarantining the node stops everything it serves.
"""

import base64
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from spiffe import WorkloadApiClient

from conftest import ADMIN, BIN, Writ

NOBODY = 65534


class Node:
    """`writ node` for node-1, serving a socket in a directory any user can reach."""

    def __init__(self, writ, refresh_ms=300, directory=None, join=True):
        self.dir = directory or tempfile.mkdtemp(prefix="writ-node-")
        os.chmod(self.dir, 0o755)
        self.socket = os.path.join(self.dir, "agent.sock")
        args = []
        if join:
            jt = requests.post(writ.url("/v1/nodes/node-1/join-tokens"), headers=writ.admin,
                               json={"ttl": 600}).json()["join_token"]
            args = ["--join-token", jt]
        self.proc = subprocess.Popen(
            [BIN, "node", "--broker", writ.addr, "--name", "node-1", *args,
             "--socket", "unix://" + self.socket, "--refresh-ms", str(refresh_ms),
             "--state-dir", os.path.join(self.dir, "state")],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={"PATH": os.environ.get("PATH", ""), "WRIT_LOG": "warn"},
        )
        line = self.proc.stdout.readline()
        assert line.startswith("workload API listening on"), line
        self.endpoint = "unix://" + self.socket

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture()
def spiffe_writ():
    w = Writ(extra=("--x509-svid-ttl", "4", "--mtls-listen", "127.0.0.1:0"))
    requests.post(w.url("/v1/nodes"), headers=w.admin, json={"name": "node-1"}).raise_for_status()
    # This process, as the kernel sees it.
    selectors = [f"unix:uid:{os.getuid()}", f"unix:path:{os.path.realpath(sys.executable)}"]
    r = requests.post(w.url("/v1/agents"), headers=w.admin, json={
        "name": "py-agent",
        "attestation": {"kind": "spiffe"},
        "workload": {"node": "node-1", "selectors": selectors},
    })
    r.raise_for_status()
    node = Node(w)
    yield w, node
    node.stop()
    w.stop()


def published_authorities(writ):
    bundle = requests.get(writ.url("/v1/bundle")).json()
    cas = [x509.load_der_x509_certificate(base64.b64decode(k["x5c"][0]))
           for k in bundle["keys"] if k["use"] == "x509-svid"]
    jwt_keys = {"keys": [k for k in bundle["keys"] if k["use"] == "jwt-svid"]}
    return cas, jwt_keys


def denied_as_nobody(endpoint):
    """Runs py-spiffe in a forked child as uid nobody; what it got."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no exec, the same interpreter, another user
        os.close(read)
        verdict = b"error"
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                WorkloadApiClient(endpoint).fetch_x509_svid(timeout=10)
                verdict = b"got an SVID"
            except Exception as e:  # noqa: BLE001 - the verdict is what matters
                verdict = b"denied" if "PERMISSION_DENIED" in str(e) else repr(e).encode()
        finally:
            os.write(write, verdict)
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as f:
        return f.read().decode()


def test_another_user_gets_nothing(spiffe_writ):
    writ, node = spiffe_writ
    # First, before this process speaks gRPC (a fork after would inherit it).
    assert denied_as_nobody(node.endpoint) == "denied"


def test_py_spiffe_gets_svids_that_verify_and_attest_to_writ(spiffe_writ):
    writ, node = spiffe_writ
    client = WorkloadApiClient(node.endpoint)
    cas, jwt_keys = published_authorities(writ)
    assert cas, "no X.509 authority published"

    # X.509-SVID: the URI SAN is the agent's SPIFFE ID, and it chains to
    # the published bundle.
    svid = client.fetch_x509_svid(timeout=10)
    assert str(svid.spiffe_id) == "spiffe://writ.local/agent/py-agent"
    leaf = svid.leaf
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [str(svid.spiffe_id)]
    issuer = next(c for c in cas if c.subject == leaf.issuer)
    issuer.public_key().verify(leaf.signature, leaf.tbs_certificate_bytes,
                               ec.ECDSA(leaf.signature_hash_algorithm))
    assert issuer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # The key is the workload's: it matches the certificate.
    assert svid.private_key.public_key().public_numbers() == leaf.public_key().public_numbers()
    bundles = client.fetch_x509_bundles(timeout=10)
    td_bundle = bundles.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
    assert {c.fingerprint(c.signature_hash_algorithm) for c in td_bundle.x509_authorities} == \
        {c.fingerprint(c.signature_hash_algorithm) for c in cas}

    # JWT-SVID for writ's issuer: verifies with PyJWT against the bundle.
    jwt_svid = client.fetch_jwt_svid(audience={writ.addr}, timeout=10)
    header = jwt.get_unverified_header(jwt_svid.token)
    assert header["alg"] == "ES256"
    key = next(k for k in jwt_keys["keys"] if k["kid"] == header["kid"])
    claims = jwt.decode(jwt_svid.token, jwt.PyJWK(key).key, algorithms=["ES256"], audience=writ.addr)
    assert claims["sub"] == "spiffe://writ.local/agent/py-agent"
    # The node validates it too.
    assert str(client.validate_jwt_svid(jwt_svid.token, writ.addr).spiffe_id) == claims["sub"]

    # The JWT-SVID attests to writ; the instance starts a task.
    r = requests.post(writ.url("/v1/attest"), json={"agent": "py-agent", "jwt_svid": jwt_svid.token})
    assert r.status_code == 201, r.text
    instance = r.json()["access_token"]
    r = requests.post(writ.url("/v1/tasks"), headers={"Authorization": f"Bearer {instance}"}, json={
        "intent": "read the tickets", "capabilities": [{"tool": "tickets", "scopes": ["read"]}],
    })
    assert r.status_code == 201, r.text
    # A JWT-SVID for another audience does not.
    other = client.fetch_jwt_svid(audience={"https://elsewhere.example"}, timeout=10)
    r = requests.post(writ.url("/v1/attest"), json={"agent": "py-agent", "jwt_svid": other.token})
    assert r.status_code == 401, r.text

    # Every issuance is audited with node, selectors and agent.
    records = requests.get(writ.url("/v1/audit?after=0&limit=1000"), headers=writ.admin).json()["records"]
    issued = [json.loads(r["event"]) for r in records if '"svid_issue"' in r["event"]]
    assert {e["detail"]["svid"] for e in issued} >= {"x509", "jwt"}
    assert all(e["detail"]["node"] == "node-1" and e["agent"] == "py-agent" for e in issued)
    assert all(f"unix:uid:{os.getuid()}" in e["detail"]["selectors"] for e in issued)


def test_a_restarted_node_keeps_its_credential(spiffe_writ):
    writ, node = spiffe_writ
    node.stop()
    # No join token this time: the credential kept in the state directory.
    again = Node(writ, directory=node.dir, join=False)
    try:
        svid = WorkloadApiClient(again.endpoint).fetch_x509_svid(timeout=10)
        assert str(svid.spiffe_id) == "spiffe://writ.local/agent/py-agent"
        state = pathlib.Path(node.dir) / "state" / "node.credential"
        assert oct(state.stat().st_mode & 0o777) == "0o600"
    finally:
        again.stop()


def test_rotation_is_pushed_and_quarantine_stops_svids(spiffe_writ):
    writ, node = spiffe_writ
    client = WorkloadApiClient(node.endpoint)
    serials, errors = [], []
    done = threading.Event()

    def on_update(ctx):
        serials.append(ctx.default_svid.leaf.serial_number)
        if len(set(serials)) >= 3:
            done.set()

    handle = client.stream_x509_contexts(on_update, errors.append, retry_connect=False)
    # A 4 s TTL is renewed at half-life: new SVIDs arrive on the stream
    # without asking again.
    assert done.wait(15), f"no rotation seen: {serials} {errors}"
    handle.cancel()

    def denied_within(seconds):
        deadline = time.time() + seconds
        while time.time() < deadline:
            try:
                client.fetch_x509_svid(timeout=5)
            except Exception as e:  # noqa: BLE001
                assert "PERMISSION_DENIED" in str(e) or "no identity" in str(e), e
                return True
            time.sleep(0.2)
        return False

    # Quarantining the agent: its SVIDs stop at the node's next refresh.
    requests.post(writ.url("/v1/agents/py-agent/quarantine"), headers=writ.admin).raise_for_status()
    assert denied_within(10), "the quarantined agent still gets SVIDs"
    requests.post(writ.url("/v1/agents/py-agent/release"), headers=writ.admin).raise_for_status()
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            client.fetch_x509_svid(timeout=5)
            break
        except Exception:  # noqa: BLE001
            time.sleep(0.2)
    else:
        pytest.fail("the released agent gets no SVID")

    # Quarantining the node: it is cut off, stops (non-zero, for its
    # supervisor to see) and its workloads get nothing more.
    requests.post(writ.url("/v1/nodes/node-1/quarantine"), headers=writ.admin).raise_for_status()
    assert node.proc.wait(15) != 0, "the quarantined node kept running"
    with pytest.raises(Exception) as gone:
        client.fetch_x509_svid(timeout=5)
    assert "UNAVAILABLE" in str(gone.value) or "PERMISSION_DENIED" in str(gone.value), gone.value


def test_the_x509_svid_attests_over_mtls(spiffe_writ):
    writ, node = spiffe_writ
    svid = WorkloadApiClient(node.endpoint).fetch_x509_svid(timeout=10)
    d = pathlib.Path(tempfile.mkdtemp())
    cert, key, bundle = d / "svid.pem", d / "svid.key", d / "bundle.pem"
    cert.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in svid.cert_chain))
    key.write_bytes(svid.private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    cas, _ = published_authorities(writ)
    bundle.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in cas))
    # writ's own certificate verifies against the same bundle.
    r = requests.post(writ.mtls + "/v1/attest", json={"agent": "py-agent"},
                      cert=(str(cert), str(key)), verify=str(bundle))
    assert r.status_code == 201, r.text
    instance = r.json()["access_token"]
    r = requests.post(writ.url("/v1/tasks"), headers={"Authorization": f"Bearer {instance}"}, json={
        "intent": "read the tickets", "capabilities": [{"tool": "tickets", "scopes": ["read"]}],
    })
    assert r.status_code == 201, r.text

    # The certificate names py-agent: it attests as no other agent.
    requests.post(writ.url("/v1/agents"), headers=writ.admin, json={
        "name": "other", "attestation": {"kind": "spiffe"},
        "workload": {"node": "node-1", "selectors": ["unix:uid:4242"]},
    }).raise_for_status()
    r = requests.post(writ.mtls + "/v1/attest", json={"agent": "other"},
                      cert=(str(cert), str(key)), verify=str(bundle))
    assert r.status_code == 401, r.text
    # Without a client certificate there is no connection.
    with pytest.raises(requests.exceptions.RequestException):
        requests.post(writ.mtls + "/v1/attest", json={"agent": "py-agent"}, verify=str(bundle), timeout=10)
