// A task a person must approve: withTask waits (onPending tells the agent),
// runs once approved; a timeout throws PendingApproval, whose `pending`
// can be awaited again; a denial is Denied.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client, Denied, PendingApproval, PendingTask } from "../../dist/index.js";
import { Writ, sleep } from "./harness.mjs";

const POLICIES = `
@id("reads")
permit (principal, action == Action::"StartTask", resource)
when { ["read"].containsAll(context.scopes) };

@id("writes-need-approval")
@approval("required")
permit (principal, action == Action::"StartTask", resource)
when { context.scopes.contains("write") };

@id("exchange")
permit (principal, action == Action::"ExchangeToken", resource);
`;

let writ;
before(async () => {
  const dir = mkdtempSync(join(tmpdir(), "writ-policies-"));
  writeFileSync(join(dir, "p.cedar"), POLICIES);
  writ = await Writ.start(["--policy-dir", dir]);
});
after(async () => writ.stop());

async function demo() {
  return new Client({ baseUrl: writ.addr, agent: "demo-agent", attestation: { joinToken: await writ.joinToken() } });
}

const decide = (pending, verdict) =>
  writ.admin("POST", `/v1/approvals/${pending.approvalId}/${verdict}`, { reason: "checked by a person" });

test("pending approval, then approval: the scope runs with the task", async () => {
  const client = await demo();
  let seen;
  const value = await client.withTask(
    {
      intent: "fix the ledger", capabilities: { tickets: ["write"] }, onBehalfOf: "user:alice",
      onPending: (p) => {
        seen = p;
        setTimeout(() => decide(p, "approve"), 500);
      },
    },
    async (task) => {
      const t = await task.tokenFor("tickets", { scopes: ["write"] });
      assert.equal(t.scope, "write");
      return task.id;
    },
  );
  assert.ok(seen instanceof PendingTask);
  assert.equal(value, seen.taskId);
  assert.equal((await writ.task(value)).status, "completed");
});

test("a timeout throws PendingApproval; its pending task is awaitable once approved", async () => {
  const client = await demo();
  let err;
  try {
    await client.withTask({ intent: "x", capabilities: { tickets: ["write"] }, approvalTimeoutMs: 300 }, async () => assert.fail("ran unapproved"));
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof PendingApproval, String(err));
  assert.ok(err.approvalId && err.taskId);
  const approvals = await writ.admin("GET", "/v1/approvals");
  assert.ok(approvals.some((a) => a.approval_id === err.approvalId && a.status === "pending"));
  await decide(err.pending, "approve");
  const task = await err.pending.wait({ timeoutMs: 5000, pollMs: 100 });
  await task.run(async (t) => t.tokenFor("tickets", { scopes: ["write"] }));
  assert.equal((await writ.task(task.id)).status, "completed");
});

test("a denied approval is Denied", async () => {
  const client = await demo();
  const started = await client.startTask({ intent: "x", capabilities: { tickets: ["write"] } });
  assert.ok(started instanceof PendingTask);
  await decide(started, "deny");
  await sleep(100);
  await assert.rejects(started.wait({ timeoutMs: 3000, pollMs: 100 }), Denied);
});
