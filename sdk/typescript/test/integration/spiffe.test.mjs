// SPIFFE: a JWT-SVID from `writ node`'s Workload API attests: fetched by
// the SDK itself over gRPC (this node process is the workload), and by
// py-spiffe (the SPIFFE Python library, from the .venv the test command
// makes) as another workload, handed to the SDK as a callback and a file.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, realpathSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { decodeJwt } from "jose";
import { Client } from "../../dist/index.js";
import { workloadApiJwtSvid } from "../../dist/spiffe.js";
import { BIN, ROOT, Writ } from "./harness.mjs";

const PYTHON = process.env.WRIT_PYTHON ?? join(ROOT, ".venv", "bin", "python");
const FETCH = `import sys
from spiffe import WorkloadApiClient
print(WorkloadApiClient(sys.argv[1]).fetch_jwt_svid(audience={sys.argv[2]}, timeout=10).token)`;

let writ;
let node;
let endpoint;

before(async () => {
  assert.ok(existsSync(PYTHON), `${PYTHON} missing: make the .venv (scripts/test.sh does)`);
  writ = await Writ.start();
  await writ.admin("POST", "/v1/nodes", { name: "node-1" });
  await writ.admin("POST", "/v1/agents", {
    name: "ts-agent", attestation: { kind: "spiffe" },
    workload: { node: "node-1", selectors: [`unix:uid:${process.getuid()}`, `unix:path:${realpathSync(PYTHON)}`] },
  });
  // This node process, as the kernel sees it: the SDK's own Workload API client.
  await writ.admin("POST", "/v1/agents", {
    name: "ts-node-agent", attestation: { kind: "spiffe" },
    workload: { node: "node-1", selectors: [`unix:uid:${process.getuid()}`, `unix:path:${realpathSync(process.execPath)}`] },
  });
  const dir = mkdtempSync(join(tmpdir(), "writ-node-"));
  chmodSync(dir, 0o755);
  const jt = (await writ.admin("POST", "/v1/nodes/node-1/join-tokens", { ttl: 600 })).join_token;
  endpoint = `unix://${join(dir, "agent.sock")}`;
  node = spawn(BIN, ["node", "--broker", writ.addr, "--name", "node-1", "--join-token", jt, "--socket", endpoint,
    "--refresh-ms", "300", "--state-dir", join(dir, "state")],
    { stdio: ["ignore", "pipe", "ignore"], env: { PATH: process.env.PATH ?? "", WRIT_LOG: "warn" } });
  const line = await new Promise((ok) => createInterface({ input: node.stdout }).once("line", ok));
  assert.match(line, /^workload API listening on/);
});
after(async () => {
  node?.kill();
  await writ?.stop();
});

const fetchSvid = () => execFileSync(PYTHON, ["-c", FETCH, endpoint, writ.addr], { encoding: "utf8", timeout: 30_000 }).trim();

test("a JWT-SVID from the Workload API attests, by callback and from a file", async () => {
  let calls = 0;
  const client = new Client({ baseUrl: writ.addr, agent: "ts-agent", attestation: { jwtSvid: () => { calls += 1; return fetchSvid(); } } });
  const inst = await client.attest();
  assert.equal(calls, 1);
  assert.equal(decodeJwt(inst.accessToken).sub, "spiffe://writ.local/agent/ts-agent");
  await client.withTask({ intent: "read", capabilities: { tickets: ["read"] } }, async (task) => {
    await task.tokenFor("tickets", { scopes: ["read"] });
  });
  // Again: a fresh SVID each time.
  await client.attest();
  assert.equal(calls, 2);

  const file = join(mkdtempSync(join(tmpdir(), "svid-")), "svid.jwt");
  writeFileSync(file, fetchSvid());
  const fromFile = new Client({ baseUrl: writ.addr, agent: "ts-agent", attestation: { jwtSvidFile: file } });
  assert.equal(decodeJwt((await fromFile.attest()).accessToken).sub, "spiffe://writ.local/agent/ts-agent");
});

test("the SDK fetches the JWT-SVID itself from the Workload API (gRPC), for every attestation", async () => {
  const client = new Client({
    baseUrl: writ.addr, agent: "ts-node-agent",
    attestation: { jwtSvid: workloadApiJwtSvid({ endpoint, audience: writ.addr }) },
  });
  const first = await client.attest();
  assert.equal(decodeJwt(first.accessToken).sub, "spiffe://writ.local/agent/ts-node-agent");
  await client.withTask({ intent: "read", capabilities: { tickets: ["read"] } }, async (task) => {
    await task.tokenFor("tickets", { scopes: ["read"] });
  });
  const second = await client.attest();
  assert.notEqual(second.instanceId, first.instanceId);
  // Another agent's identity is not this process's to have.
  const other = new Client({
    baseUrl: writ.addr, agent: "ts-agent",
    attestation: { jwtSvid: workloadApiJwtSvid({ endpoint, audience: writ.addr, spiffeId: "spiffe://writ.local/agent/ts-agent" }) },
  });
  await assert.rejects(other.attest(), /Workload API|no JWT-SVID/);
});
