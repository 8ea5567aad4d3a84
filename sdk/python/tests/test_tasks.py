"""Tasks as scopes against a real `writ serve --dev`: lifecycle, lease,
exchange caching, errors as types, approval, nonces, quarantine, delegation."""

import asyncio
import time

import jwt
import pytest
import requests

from writ_sdk import (
    AsyncClient,
    Client,
    Denied,
    InstanceKey,
    InvalidScope,
    InvalidTarget,
    JoinToken,
    PendingApproval,
    Quarantined,
    TaskEnded,
)

READ = {"tickets": ["read"]}


def client_for(writ, agent="demo-agent", **kw):
    return Client(writ.addr, JoinToken(lambda: writ.join_token(agent)), agent=agent, **kw)


def claims(token):
    return jwt.decode(token, options={"verify_signature": False})


def test_a_task_scope_completes_on_exit_and_its_tokens_die(writ):
    with client_for(writ) as c:
        with c.task(intent="summarise open tickets", capabilities=READ, on_behalf_of="user:alice") as task:
            assert writ.task(task.task_id)["status"] == "active"
            tool = task.token_for("tickets", scopes=["read"])
            c_ = claims(tool.access_token)
            assert c_["aud"] == "https://tickets.example.com" and c_["scope"] == "read"
            assert c_["cnf"]["jkt"] == c.key.thumbprint, "bound to the instance key"
            assert c_["obo"] == "user:alice"
        assert task.ended.status == "completed"
        assert writ.task(task.task_id)["status"] == "completed"
        r = requests.post(writ.url("/oauth2/introspect"), data={"token": tool.access_token}, headers=writ.admin)
        assert r.json() == {"active": False}


def test_an_exception_inside_the_scope_ends_the_task_and_propagates(writ):
    with client_for(writ) as c:
        with pytest.raises(RuntimeError, match="the agent crashed"):
            with c.task(intent="x", capabilities=READ) as task:
                raise RuntimeError("the agent crashed")
        t = writ.task(task.task_id)
        assert t["status"] != "active", t
        with pytest.raises(TaskEnded):
            task.token_for("tickets")


def test_async_scope_ends_the_task_on_cancellation(writ):
    async def main():
        async with AsyncClient(writ.addr, JoinToken(writ.join_token()), agent="demo-agent") as c:
            started = asyncio.Event()
            holder = {}

            async def work():
                async with c.task(intent="x", capabilities=READ) as task:
                    holder["task"] = task
                    started.set()
                    await asyncio.sleep(60)

            job = asyncio.create_task(work())
            await started.wait()
            job.cancel()
            with pytest.raises(asyncio.CancelledError):
                await job
            return holder["task"].task_id

    task_id = asyncio.run(main())
    assert writ.task(task_id)["status"] != "active"


def test_heartbeats_keep_a_task_past_its_lease_and_a_lapsed_lease_ends_it(make_writ):
    writ = make_writ("--lease-ttl", "2", "--sweep-interval-ms", "200")
    with client_for(writ) as c:
        with c.task(intent="long job", capabilities=READ) as kept:
            assert kept.aio.heartbeat_interval() < 1
            time.sleep(4)  # twice the lease
            assert writ.task(kept.task_id)["status"] == "active"
            kept.token_for("tickets")

        lapsed = c.start_task("stalled job", READ, heartbeat=False)
        time.sleep(3)
        with pytest.raises(TaskEnded) as e:
            lapsed.token_for("tickets")
        assert e.value.task_status == "expired"
        assert e.value.task_id == lapsed.task_id
        # And the scope's end does not raise over the task already being over.
        assert lapsed.end() is None


def test_exchange_is_cached_until_near_expiry(writ):
    with client_for(writ) as c:
        with c.task(intent="x", capabilities={"tickets": ["read", "comment"]}, on_behalf_of="user:alice") as task:
            a = task.token_for("tickets", scopes=["read"])
            assert task.token_for("tickets", scopes=["read"]) is a
            b = task.token_for("tickets", scopes=["comment", "read"])
            assert b is not a and set(b.scope.split()) == {"read", "comment"}
            assert task.token_for("tickets", scopes=["read", "comment"]) is b
            fresh = task.token_for("tickets", scopes=["read"], fresh=True)
            assert fresh.access_token != a.access_token
            # Near its end, a cached token is replaced.
            task.aio._tools[("tickets", ("read",))] = type(fresh)(
                fresh.tool, fresh.access_token, fresh.token_type, fresh.scope, time.time() - 290, time.time() + 5)
            assert task.token_for("tickets", scopes=["read"]).access_token != fresh.access_token
        events = [e for e in audit(writ) if e["kind"] == "token_exchange" and e["outcome"] == "success"]
        assert len(events) == 4, events


def audit(writ):
    import json
    recs = writ.get("/v1/audit?limit=1000")["records"]
    return [json.loads(r["event"]) if isinstance(r["event"], str) else r["event"] for r in recs]


def test_refusals_are_types(writ):
    writ.register_tool({"name": "wiki", "audience": "https://wiki.example", "scopes": ["read"]})
    with client_for(writ) as c:
        with pytest.raises(Denied) as e:
            with c.task(intent="clean up", capabilities={"tickets": ["delete"]}, on_behalf_of="user:alice"):
                pass
        assert e.value.determining_policies == ["no-deletes"]
        assert e.value.policy_version.startswith("sha256:")
        with c.task(intent="x", capabilities=READ) as task:
            with pytest.raises(InvalidScope):
                task.token_for("tickets", scopes=["write"])
            with pytest.raises(InvalidTarget):
                task.token_for("wiki")
            task.token_for("tickets")  # the task goes on


def test_es256_and_a_key_from_a_file(writ, tmp_path):
    key = InstanceKey.generate("ES256")
    with client_for(writ, key=key) as c:
        with c.task(intent="x", capabilities=READ) as task:
            assert claims(task.token_for("tickets").access_token)["cnf"]["jkt"] == key.thumbprint
    path = tmp_path / "agent.pem"
    made = InstanceKey.from_file(path, create=True)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    again = InstanceKey.from_file(path)
    assert again.thumbprint == made.thumbprint
    with client_for(writ, key=again) as c:
        inst = c.attest()
        assert claims(inst.access_token)["cnf"]["jkt"] == made.thumbprint
    # A key `writ dpop keygen` wrote loads too.
    import subprocess
    from writ_server import BIN
    subprocess.run([BIN, "dpop", "keygen", "--out", str(tmp_path / "cli.pem")], check=True, capture_output=True)
    assert InstanceKey.from_file(tmp_path / "cli.pem").alg == "EdDSA"


def test_pending_approval_then_approval(approval_writ):
    writ = approval_writ
    with client_for(writ) as c:
        with pytest.raises(PendingApproval) as e:
            with c.task(intent="refund order 7", capabilities={"payments": ["refund"]}, on_behalf_of="user:bob"):
                pass
        pending = e.value
        assert pending.task_id and pending.approval_id
        assert writ.task(pending.task_id)["status"] == "pending_approval"
        # Not decided within the time: the same typed state, timed out.
        with pytest.raises(PendingApproval) as again:
            pending.wait(timeout=0.5)
        assert again.value.timed_out

        def approve():
            time.sleep(1)
            writ.post(f"/v1/approvals/{pending.approval_id}/approve", {"reason": "order checked"})

        import threading
        threading.Thread(target=approve).start()
        with again.value.wait(timeout=20) as task:
            assert task.task_id == pending.task_id
            assert claims(task.token_for("payments").access_token)["scope"] == "refund"
        assert writ.task(pending.task_id)["status"] == "completed"

        # Waiting inside the scope, and a denial.
        def deny():
            for _ in range(50):
                items = writ.get("/v1/approvals")
                items = items.get("approvals", items) if isinstance(items, dict) else items
                waiting = [a for a in items if a["status"] == "pending"]
                if waiting:
                    writ.post(f"/v1/approvals/{waiting[0]['approval_id']}/deny", {"reason": "no"})
                    return
                time.sleep(0.1)

        threading.Thread(target=deny).start()
        with pytest.raises(TaskEnded) as denied:
            with c.task(intent="refund again", capabilities={"payments": ["refund"]}, approval_timeout=20):
                pass
        assert denied.value.task_status == "denied"


def test_dpop_nonces_are_followed(make_writ):
    writ = make_writ("--dpop-nonces")
    with client_for(writ) as c:
        with c.task(intent="x", capabilities=READ) as task:
            task.token_for("tickets")
            task.heartbeat()
        assert c.aio._broker.nonces.get(writ.addr), "the server's nonce was picked up and used"


def test_quarantine_mid_task_raises_quarantined(writ):
    with client_for(writ) as c:
        with c.task(intent="x", capabilities=READ) as task:
            task.token_for("tickets")
            writ.post("/v1/agents/demo-agent/quarantine", {})
            with pytest.raises(Quarantined):
                task.token_for("tickets", fresh=True)
            with pytest.raises(Quarantined):
                task.heartbeat()
    assert writ.task(task.task_id)["status"] == "revoked"


def test_quarantine_is_seen_by_the_heartbeat_first(make_writ):
    writ = make_writ("--lease-ttl", "3")
    with client_for(writ) as c:
        task = c.start_task("x", READ)
        writ.post("/v1/agents/demo-agent/quarantine", {})
        time.sleep(2.5)  # a heartbeat or two
        assert isinstance(task.aio._failure, Quarantined)
        with pytest.raises(Quarantined):
            task.token_for("tickets")
        assert task.end() is None


def test_delegation_to_a_sub_agent_with_its_proof_of_possession(writ):
    writ.register_agent("helper-bot")
    with client_for(writ) as planner, client_for(writ, agent="helper-bot") as helper:
        with planner.task(intent="triage", capabilities={"tickets": ["read", "comment"]},
                          on_behalf_of="user:alice") as task:
            d = task.delegate(actor=helper, scopes={"tickets": ["read"]})
            c_ = claims(d.access_token)
            assert c_["act"]["sub"].endswith("/helper-bot")
            assert c_["cnf"]["jkt"] == helper.key.thumbprint
            with pytest.raises(InvalidScope):
                task.delegate(actor=helper.actor_credentials(), scopes=["tickets:comment", "tickets:write"])
            with pytest.raises(Denied):  # policy: sub-agents get read-only work
                task.delegate(actor=helper, scopes=["tickets:comment"])
            sub = helper.adopt(d)
            tool = sub.token_for("tickets", scopes=["read"])
            assert claims(tool.access_token)["cnf"]["jkt"] == helper.key.thumbprint
            # The planner's key cannot use the child's token.
            r = requests.post(writ.url("/oauth2/token"), data={
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": d.access_token,
                "subject_token_type": "urn:ietf:params:oauth:token-type:access_token", "audience": "tickets"},
                headers={"DPoP": planner.key.proof("POST", writ.url("/oauth2/token"))})
            assert r.json()["error"] == "invalid_dpop_proof"
        assert task.ended.ended_descendants == 1
        with pytest.raises(TaskEnded):
            sub.token_for("tickets", fresh=True)
        assert sub.end() is None


def test_async_pending_approval_is_awaitable(approval_writ):
    writ = approval_writ

    async def main():
        async with AsyncClient(writ.addr, JoinToken(writ.join_token()), agent="demo-agent") as c:
            try:
                async with c.task(intent="refund", capabilities={"payments": ["refund"]}):
                    raise AssertionError("started without approval")
            except PendingApproval as e:
                pending = e
            with pytest.raises(PendingApproval):
                await pending.wait(0.3)
            await asyncio.to_thread(writ.post, f"/v1/approvals/{pending.approval_id}/approve", {"reason": "ok"})
            async with await pending.wait(10) as task:
                await task.token_for("payments")
            return task.task_id

    assert writ.task(asyncio.run(main()))["status"] == "completed"
