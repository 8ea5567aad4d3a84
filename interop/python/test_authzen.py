"""The OpenID AuthZEN interop decision vectors, sent as published to a real
`writ serve --dev --policy-dir examples/authzen`, with an admin credential
and with a gateway credential. Every one must answer as the file expects."""

import json

import pytest
import requests

from conftest import ROOT, Writ

VECTORS = ROOT / "interop" / "authzen-vectors"
FILES = {
    "todo-1.0-implementers-draft.json": 40,
    "todo-authorization-api-1_0-02.json": 40,
    "api-gateway-decisions.json": 25,
}


@pytest.fixture(scope="module")
def pdp():
    w = Writ(extra=("--policy-dir", str(ROOT / "examples" / "authzen")))
    yield w
    w.stop()


def gateway_token(pdp):
    r = requests.post(pdp.url("/v1/gateways"), headers=pdp.admin,
                      json={"name": "interop-pep"})
    assert r.status_code in (200, 201), r.text
    return r.json()["token"]


@pytest.mark.parametrize("name", sorted(FILES))
def test_interop_vectors_pass_as_published(pdp, name):
    vectors = json.loads((VECTORS / name).read_text())
    cases = vectors["evaluation"]
    assert len(cases) == FILES[name]
    credentials = {"admin": pdp.admin}
    credentials["gateway"] = {"Authorization": f"Bearer {gateway_token(pdp)}"} \
        if name.startswith("api-gateway") else pdp.admin
    for who, headers in credentials.items():
        passed = 0
        for case in cases:
            r = requests.post(pdp.url("/access/v1/evaluation"), headers=headers,
                              json=case["request"])
            assert r.status_code == 200, (case, r.text)
            if r.json()["decision"] == case["expected"]:
                passed += 1
            else:
                print("FAIL", who, case, r.text)
        print(f"{name} ({who}): {passed}/{len(cases)} passed")
        assert passed == len(cases)


def test_the_same_vectors_as_one_batch(pdp):
    cases = json.loads((VECTORS / "todo-1.0-implementers-draft.json").read_text())["evaluation"]
    r = requests.post(pdp.url("/access/v1/evaluations"), headers=pdp.admin,
                      json={"evaluations": [c["request"] for c in cases]})
    assert r.status_code == 200, r.text
    got = [e["decision"] for e in r.json()["evaluations"]]
    assert got == [c["expected"] for c in cases]


def test_the_published_batches_answer_item_by_item(pdp):
    """The 1.0 Todo file's own `evaluations` cases: subject and action given
    once at the top as defaults, one resource per item, sent as published
    to /access/v1/evaluations."""
    cases = json.loads((VECTORS / "todo-authorization-api-1_0-02.json").read_text())["evaluations"]
    assert len(cases) == 3
    for case in cases:
        r = requests.post(pdp.url("/access/v1/evaluations"), headers=pdp.admin,
                          json=case["request"])
        assert r.status_code == 200, (case, r.text)
        got = [{"decision": e["decision"]} for e in r.json()["evaluations"]]
        assert got == case["expected"], (case, r.text)
