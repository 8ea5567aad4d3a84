"""Operators sign in from a browser (the console): writ is the OIDC client
of a real provider (npm `oidc-provider`, started here, PKCE required of
every client), with the authorization code flow and PKCE. This test is the
browser: it follows the redirects and fills the provider's login and
consent pages with plain HTTP requests.

What an attacker tries is refused and leaves no session: an answer for
another browser's sign-in (state), a code injected into someone else's
sign-in (PKCE), a provider error, another provider's answer (a mix-up),
a callback replayed.
"""

import json
import os
import subprocess
import urllib.parse

import pytest
import requests

from conftest import Writ
from test_operator_sso import NODE_DIR, Forms, free_port

SECRET = "console-secret-for-tests"
CALLBACK = "/ui/sso/callback"


@pytest.fixture()
def browser_writ(tmp_path):
    port = free_port()
    writ_addr = f"http://127.0.0.1:{port}"
    idp_port = free_port()
    env = {**os.environ, "WRIT_CONSOLE_REDIRECT": writ_addr + CALLBACK, "WRIT_CONSOLE_SECRET": SECRET}
    idp = subprocess.Popen(["node", str(NODE_DIR / "oidc_provider.mjs"), str(idp_port)], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = idp.stdout.readline()
    assert line.startswith("oidc-provider listening on "), line
    issuer = line.split()[-1]
    secret_file = tmp_path / "console-secret"
    secret_file.write_text(SECRET + "\n")
    config = tmp_path / "writ.toml"
    config.write_text(f"""
operator_oidc_issuer = "{issuer}"
operator_oidc_client_id = "writ-cli"
operator_oidc_redirect_uri = "{writ_addr}{CALLBACK}"
operator_oidc_console_client_id = "writ-console"
operator_oidc_client_secret_file = "{secret_file}"

[[operator_oidc_roles]]
claim = "groups"
value = "writ-approvers"
role = "approver"
""")
    w = Writ(extra=("--config", str(config)), listen=f"127.0.0.1:{port}")
    assert w.addr == writ_addr, w.addr
    yield w
    w.stop()
    idp.terminate()
    idp.wait(10)


def start(writ, browser, **params):
    """The browser opens writ's sign-in link: writ's answer, and the state
    it sent to the provider."""
    r = browser.get(writ.url("/ui/sso/start"), params=params, allow_redirects=False, timeout=10)
    assert r.status_code == 303, r.text
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(r.headers["location"]).query)
    return r, q


def to_callback(writ, browser, person):
    """A browser sign-in from writ's link through the provider's pages, up
    to (not into) the provider's redirect back to writ: that URL."""
    r, _ = start(writ, browser)
    location = r.headers["location"]
    for _ in range(20):
        if location.startswith(writ.url(CALLBACK)):
            return location
        r = browser.get(location, allow_redirects=False, timeout=10)
        if r.status_code in (302, 303):
            location = urllib.parse.urljoin(r.url, r.headers["location"])
            continue
        assert r.status_code == 200, (r.status_code, r.text[:500])
        f = Forms()
        f.feed(r.text)
        assert f.action is not None, r.text[:500]
        data = dict(f.fields)
        if "login" in data:
            data["login"], data["password"] = person, "any password"
        r = browser.post(urllib.parse.urljoin(r.url, f.action), data=data, allow_redirects=False, timeout=10)
        assert r.status_code in (302, 303), (r.status_code, r.text[:500])
        location = urllib.parse.urljoin(r.url, r.headers["location"])
    raise AssertionError(f"the sign-in never came back to writ: {location}")


def sessions(writ):
    listed = requests.get(writ.url("/v1/admin/tokens"), headers=writ.admin, timeout=10).json()
    return {c["name"]: c for c in listed if "expires_at" in c and not c.get("console_session")}


def refusals(writ):
    audit = requests.get(writ.url("/v1/audit"), headers=writ.admin, params={"limit": 1000}, timeout=10).json()
    records = audit.get("records", audit) if isinstance(audit, dict) else audit
    events = [json.loads(rec["event"]) for rec in records]
    return [e for e in events if e["kind"] == "operator_sign_in"]


def test_an_operator_signs_in_from_a_browser_with_the_authorization_code_and_pkce_once(browser_writ):
    writ = browser_writ
    browser = requests.Session()
    info = requests.get(writ.url("/v1/login/oidc"), timeout=10).json()
    assert info["browser_start"] == "/ui/sso/start", info
    # What writ asks the provider for: a code, with an S256 challenge, a
    # state and a nonce; the flow's secrets in an HttpOnly Lax cookie.
    r, q = start(writ, browser, next="https://evil.example/")
    assert q["response_type"] == ["code"] and q["client_id"] == ["writ-console"], q
    assert q["code_challenge_method"] == ["S256"] and len(q["code_challenge"][0]) == 43, q
    assert q["redirect_uri"] == [writ.url(CALLBACK)] and "openid" in q["scope"][0].split(), q
    assert len(q["state"][0]) >= 43 and len(q["nonce"][0]) >= 43 and q["state"] != q["nonce"], q
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Max-Age=600" in cookie, cookie
    assert r.headers["cache-control"] == "no-store"
    # A second start in the same browser starts afresh: new state.
    _, q2 = start(writ, browser)
    assert q2["state"] != q["state"] and q2["code_challenge"] != q["code_challenge"]

    url = to_callback(writ, browser, "alice")
    flow_cookie = browser.cookies.get("writ-sso-flow")
    assert flow_cookie
    r = browser.get(url, allow_redirects=False, timeout=10)
    assert r.status_code == 303, r.text
    # A fixed local page, whatever the start was asked (no open redirect).
    assert r.headers["location"] == "/ui/", r.headers
    set_cookies = r.raw.headers.getlist("set-cookie")
    assert any(c.startswith("writ-sso-flow=;") and "Max-Age=0" in c for c in set_cookies), set_cookies
    console = [c for c in set_cookies if c.startswith("writ_console=")]
    assert console and "HttpOnly" in console[0], set_cookies
    assert r.headers["referrer-policy"] == "no-referrer"
    # The console knows who signed in.
    me = browser.get(writ.url("/ui/api/session"), timeout=10)
    assert me.status_code == 200, me.text
    assert me.json()["name"] == "alice@example.com" and me.json()["role"] == "approver", me.json()
    mine = sessions(writ).get("alice@example.com")
    assert mine and mine["role"] == "approver", sessions(writ)
    assert refusals(writ) == []

    # The same answer again (its flow cookie put back): refused, audited,
    # no second session.
    created = mine["created_at"]
    assert browser.cookies.get("writ-sso-flow") is None, "the flow cookie is gone"
    r = requests.get(url, cookies={"writ-sso-flow": flow_cookie}, allow_redirects=False, timeout=10)
    assert r.status_code == 401, r.text
    assert sessions(writ)["alice@example.com"]["created_at"] == created
    assert len(refusals(writ)) == 1, refusals(writ)
    # Without the cookie, nothing is even tried.
    r = requests.get(url, allow_redirects=False, timeout=10)
    assert r.status_code == 400, r.text


def test_a_browser_sign_in_refuses_a_foreign_state_an_injected_code_a_provider_error_and_a_mix_up(browser_writ):
    writ = browser_writ
    victim_url = to_callback(writ, requests.Session(), "alice")
    victim = urllib.parse.parse_qs(urllib.parse.urlsplit(victim_url).query)

    # No sign-in started in this browser: refused.
    r = requests.get(victim_url, allow_redirects=False, timeout=10)
    assert r.status_code == 400 and "no sign-in was started" in r.text, r.text
    assert r.headers["content-type"].startswith("text/plain")

    # Login CSRF: the attacker's browser has a sign-in of its own; the
    # answer for another one does not match its state.
    attacker = requests.Session()
    start(writ, attacker)
    r = attacker.get(victim_url, allow_redirects=False, timeout=10)
    assert r.status_code == 400 and "(state)" in r.text, r.text
    assert "Max-Age=0" in r.headers.get("set-cookie", ""), r.headers

    # Code injection: the victim's code under the attacker's own state is
    # redeemed with the attacker's verifier, which the provider refuses.
    attacker = requests.Session()
    _, q = start(writ, attacker)
    injected = writ.url(CALLBACK) + "?" + urllib.parse.urlencode(
        {"code": victim["code"][0], "state": q["state"][0]})
    r = attacker.get(injected, allow_redirects=False, timeout=10)
    assert r.status_code == 401 and "refused the code" in r.text, r.text

    # An error from the provider: said, in plain text, no session.
    b = requests.Session()
    _, q = start(writ, b)
    r = b.get(writ.url(CALLBACK), params={"error": "access_denied", "state": q["state"][0],
                                          "error_description": "<script>alert(1)</script>\r\nSet-Cookie: x=y"},
              allow_redirects=False, timeout=10)
    assert r.status_code == 401 and "access_denied" in r.text, r.text
    assert r.headers["content-type"].startswith("text/plain") and "x-content-type-options" in r.headers
    assert "x=y" not in r.headers.get("set-cookie", "")

    # An answer naming another provider (a mix-up), and one without a code.
    for params in ({"code": "x", "iss": "https://evil.example"}, {}):
        b = requests.Session()
        _, q = start(writ, b)
        r = b.get(writ.url(CALLBACK), params={**params, "state": q["state"][0]}, allow_redirects=False, timeout=10)
        assert r.status_code in (400, 401), r.text

    # A person no role rule maps: refused with the reason, no session.
    b = requests.Session()
    r = b.get(to_callback(writ, b, "eve"), allow_redirects=False, timeout=10)
    assert r.status_code == 403 and "no role rule matches" in r.text, r.text

    assert sessions(writ) == {}, "no refusal left a session"
    # Refusals before any identity is involved (no flow cookie, another
    # state: anyone can send them) are counted, not audited; the rest are.
    refused = refusals(writ)
    assert len(refused) == 5, refused
    assert not any("no sign-in was started" in e["reason"] or "(state)" in e["reason"] for e in refused), refused
    metrics = requests.get(writ.url("/metrics"), headers=writ.admin, timeout=10).text
    assert 'writ_operator_sign_ins_total{outcome="refused_before_identity"} 2' in metrics, metrics
    assert all(e["detail"]["via"] == "authorization_code" and e["outcome"] == "deny" for e in refused), refused
    eve = [e for e in refused if e["detail"].get("subject") == "eve"]
    assert eve and eve[0]["detail"]["verified"] is True, refused

