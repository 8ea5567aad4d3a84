// The lease: heartbeats keep a task alive past its lease; a stalled agent's
// lease lapses, and its next call throws TaskEnded.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { Client, TaskEnded } from "../../dist/index.js";
import { Writ, sleep } from "./harness.mjs";

let writ;
before(async () => {
  writ = await Writ.start(["--lease-ttl", "2", "--sweep-interval-ms", "200"]);
});
after(async () => writ.stop());

async function demo() {
  return new Client({ baseUrl: writ.addr, agent: "demo-agent", attestation: { joinToken: await writ.joinToken() } });
}

test("heartbeats in the background keep the task alive past its lease", async () => {
  const client = await demo();
  await client.withTask({ intent: "long read", capabilities: { tickets: ["read"] } }, async (task) => {
    await sleep(4500);
    assert.equal((await writ.task(task.id)).status, "active");
    await task.tokenFor("tickets", { scopes: ["read"] });
  });
});

test("a lapsed lease: the next call throws TaskEnded, and the task's signal fires", async () => {
  const client = await demo();
  let taskId;
  await assert.rejects(
    client.withTask({ intent: "stalls", capabilities: { tickets: ["read"] }, heartbeatIntervalMs: 60_000 }, async (task) => {
      taskId = task.id;
      await sleep(3500); // the agent stalls past its lease
      assert.ok(!task.signal.aborted);
      await task.tokenFor("tickets", { scopes: ["read"] });
      assert.fail("a lapsed task got a token");
    }),
    (e) => e instanceof TaskEnded && e.taskStatus === "expired",
  );
  assert.equal((await writ.task(taskId)).status, "expired");
});
