"""Operators sign in with single sign-on: a real OIDC provider (npm
`oidc-provider`, started here) runs the device authorization grant for
`writ login`; this test plays the person at its user-code, login and
consent pages with plain HTTP requests.

The broker verifies the identity token itself (issuer keys, audience,
freshness): a token minted by anyone else is refused.
"""

import html.parser
import json
import os
import pathlib
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import urllib.parse

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import BIN, ROOT, Writ

NODE_DIR = ROOT / "interop" / "node"

APPROVAL_POLICY = """
@id("refunds-need-a-person")
@approval("required")
permit (principal, action == Action::"StartTask", resource)
when { context.scopes.contains("refund") };

@id("payouts-by-their-person")
@approval("required")
@approval_by("on_behalf_of")
permit (principal, action == Action::"StartTask", resource)
when { context.scopes.contains("payout") };
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Forms(html.parser.HTMLParser):
    """The first POST form of a page: its action and its inputs."""

    def __init__(self):
        super().__init__()
        self.action = None
        self.fields = {}
        self.inside = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and self.action is None and a.get("method", "").lower() == "post":
            self.action, self.inside = a.get("action", ""), True
        elif tag == "input" and self.inside and a.get("name"):
            self.fields[a["name"]] = a.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False


def approve_device(verification_uri, user_code, login):
    """What a person does in a browser: enters the code, signs in, consents."""
    s = requests.Session()
    r = s.get(verification_uri, timeout=10)
    for _ in range(8):
        assert r.status_code == 200, r.text
        if "Sign-in Success" in r.text or "successfully" in r.text.lower():
            return
        f = Forms()
        f.feed(r.text)
        assert f.action is not None, r.text
        data = dict(f.fields)
        if "user_code" in data and not data["user_code"]:
            data["user_code"] = user_code
        if "login" in data:
            data["login"], data["password"] = login, "any password"
        r = s.post(urllib.parse.urljoin(r.url, f.action), data=data, timeout=10)
    raise AssertionError(f"the device flow did not finish: {r.text[:500]}")


@pytest.fixture()
def idp():
    port = free_port()
    proc = subprocess.Popen(["node", str(NODE_DIR / "oidc_provider.mjs"), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    assert line.startswith("oidc-provider listening on "), line
    yield line.split()[-1]
    proc.terminate()
    proc.wait(10)


@pytest.fixture()
def sso_writ(idp, tmp_path):
    policies = tmp_path / "policies"
    policies.mkdir()
    shutil.copy(ROOT / "examples" / "policies" / "tasks.cedar", policies / "tasks.cedar")
    (policies / "approval.cedar").write_text(APPROVAL_POLICY)
    config = tmp_path / "writ.toml"
    config.write_text(f"""
operator_oidc_issuer = "{idp}"
operator_oidc_client_id = "writ-cli"
operator_session_ttl = 600

[[operator_oidc_roles]]
claim = "groups"
value = "writ-admins"
role = "admin"

[[operator_oidc_roles]]
claim = "groups"
value = "writ-approvers"
role = "approver"

[[operator_oidc_roles]]
claim = "groups"
value = "staff"
role = "auditor"
""")
    w = Writ(extra=("--config", str(config), "--policy-dir", str(policies)))
    yield w
    w.stop()


def cli(writ, session_file, *args, token=None):
    env = {"PATH": os.environ.get("PATH", ""), "WRIT_ADDR": writ.addr,
           "WRIT_SESSION_FILE": str(session_file), "WRIT_OUTPUT": "json"}
    if token:
        env["WRIT_TOKEN"] = token
    return subprocess.run([BIN, *args], env=env, capture_output=True, text=True, timeout=60)


def login(writ, session_file, person):
    env = {"PATH": os.environ.get("PATH", ""), "WRIT_ADDR": writ.addr,
           "WRIT_SESSION_FILE": str(session_file), "WRIT_OUTPUT": "json"}
    proc = subprocess.Popen([BIN, "login"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    uri = code = None
    err = []
    for line in proc.stderr:
        err.append(line)
        if line.startswith("To sign in, open "):
            uri = line.split()[4]
        if line.startswith("user_code: "):
            code = line.split()[-1]
            break
    assert uri and code, "".join(err)
    approve_device(uri, code, person)
    out, rest = proc.communicate(timeout=60)
    return proc.returncode, out, "".join(err) + rest


def start_held(writ, scope="refund", obo=None):
    r = requests.post(writ.url("/v1/agents/demo-agent/join-tokens"), json={"ttl": 60}, headers=writ.admin)
    assert r.status_code == 201, r.text
    r = requests.post(writ.url("/v1/attest"), json={"agent": "demo-agent", "join_token": r.json()["join_token"]})
    assert r.status_code == 201, r.text
    inst = r.json()["access_token"]
    r = requests.post(writ.url("/v1/tasks"), headers={"Authorization": f"Bearer {inst}"},
                      json={"intent": f"{scope} an order", "capabilities": [{"tool": "payments", "scopes": [scope]}],
                            **({"on_behalf_of": obo} if obo else {})})
    assert r.status_code == 202, r.text
    return r.json()


def test_an_approver_signs_in_with_the_device_flow_approves_and_is_refused_admin_work(sso_writ, tmp_path):
    writ = sso_writ
    r = requests.post(writ.url("/v1/tools"), headers=writ.admin,
                      json={"name": "payments", "audience": "https://payments.example", "scopes": ["refund", "payout"]})
    assert r.status_code == 201, r.text
    pending = start_held(writ)

    session_file = tmp_path / "session" / "alice.json"
    code, out, err = login(writ, session_file, "alice")
    assert code == 0, err
    assert '"approver"' in out and "alice@example.com" in out, out
    assert stat.S_IMODE(session_file.stat().st_mode) == 0o600

    # The stored session is what the CLI uses: the approval names the person.
    r = cli(writ, session_file, "approval", "approve", pending["approval_id"], "--reason", "order checked")
    assert r.returncode == 0, r.stderr
    audit = requests.get(writ.url("/v1/audit"), headers=writ.admin, params={"limit": 1000}).json()
    records = audit.get("records", audit) if isinstance(audit, dict) else audit
    actors = [json.loads(rec["event"])["actor"] for rec in records]
    assert "operator:alice@example.com" in actors, actors

    # An approver is not an admin, nor an operator.
    r = cli(writ, session_file, "admin", "token", "create", "sneaky", "--role", "admin")
    assert r.returncode != 0 and "needs role admin" in r.stderr, r.stderr
    r = cli(writ, session_file, "agent", "register", "x")
    assert r.returncode != 0, r.stdout

    # Listed among operator credentials, with its end; revoked, refused at once.
    listed = requests.get(writ.url("/v1/admin/tokens"), headers=writ.admin).json()
    mine = [c for c in listed if c["name"] == "alice@example.com"]
    assert mine and mine[0]["role"] == "approver" and "expires_at" in mine[0], listed
    r = cli(writ, session_file, "admin", "token", "revoke", "alice@example.com", token="interop-admin-token")
    assert r.returncode == 0, r.stderr
    r = cli(writ, session_file, "approval", "list")
    assert r.returncode != 0 and "invalid" in r.stderr.lower(), (r.stdout, r.stderr)
    r = cli(writ, session_file, "logout")
    assert r.returncode == 0 and not session_file.exists(), r.stderr


def test_a_person_no_rule_maps_gets_no_session(sso_writ, tmp_path):
    session_file = tmp_path / "eve.json"
    code, out, err = login(sso_writ, session_file, "eve")
    assert code != 0 and "no role rule matches" in err, err
    assert not session_file.exists()


def test_an_identity_token_the_provider_did_not_sign_is_refused(sso_writ, idp):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    forged = jwt.encode({"iss": idp, "aud": "writ-cli", "sub": "bob", "email": "bob@example.com",
                         "groups": ["writ-admins"], "iat": now, "exp": now + 300},
                        key, algorithm="RS256", headers={"kid": "forged"})
    r = requests.post(sso_writ.url("/v1/login/oidc"), json={"id_token": forged})
    assert r.status_code == 401, r.text
    listed = requests.get(sso_writ.url("/v1/admin/tokens"), headers=sso_writ.admin).json()
    assert not any(c["name"] == "bob@example.com" for c in listed)


def test_the_person_a_task_acts_for_approves_it_where_policy_allows(sso_writ, tmp_path):
    """mallory is no approver (an auditor): she may decide a payout her
    agent asks for on her behalf, since the policy says so, but not one for
    someone else, nor a refund (held by a policy without the annotation)."""
    writ = sso_writ
    r = requests.post(writ.url("/v1/tools"), headers=writ.admin,
                      json={"name": "payments", "audience": "https://payments.example", "scopes": ["refund", "payout"]})
    assert r.status_code == 201, r.text
    hers = start_held(writ, "payout", "mallory@example.com")
    alices = start_held(writ, "payout", "alice@example.com")
    refund = start_held(writ, "refund", "mallory@example.com")

    session_file = tmp_path / "mallory.json"
    code, out, err = login(writ, session_file, "mallory")
    assert code == 0, err
    assert '"auditor"' in out, out

    for other in (alices, refund):
        r = cli(writ, session_file, "approval", "approve", other["approval_id"], "--reason", "mine?")
        assert r.returncode != 0 and "needs role approver" in r.stderr, r.stderr
    r = cli(writ, session_file, "approval", "approve", "apr_AAAAAAAAAAAAAAAAAAAAAA", "--reason", "x")
    assert r.returncode != 0 and "needs role approver" in r.stderr, r.stderr

    r = cli(writ, session_file, "approval", "approve", hers["approval_id"], "--reason", "my payout")
    assert r.returncode == 0, r.stderr
    decided = json.loads(r.stdout)
    assert decided["status"] == "approved" and decided["decided_by"] == "operator:mallory@example.com", decided
    # Still no approver for anything else: the list of approvals is refused.
    r = cli(writ, session_file, "approval", "list")
    assert r.returncode != 0 and "needs role approver" in r.stderr, r.stderr
