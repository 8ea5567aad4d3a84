// Starts a real `writ serve --dev` (broker and embedded gateway) for the
// integration tests, and speaks its admin API with plain fetch.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, createWriteStream } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

export const HERE = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(HERE, "../../../..");
export const BIN = process.env.WRIT_BIN ?? join(ROOT, "target", "debug", "writ");
export const ADMIN = "sdk-ts-admin-token";
export const EVERYTHING = resolve(HERE, "../../node_modules/@modelcontextprotocol/server-everything/dist/index.js");

export class Writ {
  static async start(extra = []) {
    const w = new Writ();
    w.dir = mkdtempSync(join(tmpdir(), "writ-sdk-ts-"));
    w.log = createWriteStream(join(w.dir, "stderr.log"));
    w.proc = spawn(
      BIN,
      ["serve", "--dev", "--dev-admin-token", ADMIN, "--data-dir", w.dir, "--listen", "127.0.0.1:0",
       "--gateway-listen", "127.0.0.1:0", "--limit-attest-per-minute", "0", ...extra],
      { stdio: ["ignore", "pipe", "pipe"], env: { PATH: process.env.PATH ?? "", WRIT_LOG: "warn" } },
    );
    w.proc.stderr.pipe(w.log);
    await new Promise((ok, fail) => {
      const t = setTimeout(() => fail(new Error("writ serve did not start")), 60_000);
      w.proc.on("exit", (c) => fail(new Error(`writ serve exited ${c}`)));
      createInterface({ input: w.proc.stdout }).on("line", (line) => {
        if (line.startsWith("gateway listening on ")) w.gateway = line.split(" ").at(-1);
        if (line.startsWith("writ listening on ")) {
          w.addr = line.split(" ").at(-1);
          clearTimeout(t);
          ok();
        }
      });
    });
    await w.waitGateway();
    return w;
  }

  url(p) { return this.addr + p; }
  gw(p) { return this.gateway + p; }

  async admin(method, path, body) {
    const res = await fetch(this.url(path), {
      method,
      headers: { authorization: `Bearer ${ADMIN}`, ...(body ? { "content-type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return text ? JSON.parse(text) : undefined;
  }

  async joinToken(agent = "demo-agent") {
    return (await this.admin("POST", `/v1/agents/${agent}/join-tokens`, { ttl: 600 })).join_token;
  }

  async registerAgent(name, attestation = { kind: "join_token" }, extra = {}) {
    return this.admin("POST", "/v1/agents", { name, attestation, ...extra });
  }

  async registerTool(body) {
    await this.admin("POST", "/v1/tools", body);
    await this.waitTool(body.name);
  }

  async waitGateway() {
    for (let i = 0; i < 200; i++) {
      const r = await fetch(this.gw("/healthz")).catch(() => undefined);
      if (r?.status === 200) return;
      await sleep(50);
    }
    throw new Error("gateway never became ready");
  }

  /** The gateway refreshes its bundle every second. */
  async waitTool(name) {
    for (let i = 0; i < 100; i++) {
      const r = await fetch(this.gw(`/.well-known/oauth-protected-resource/${name}`));
      await r.body?.cancel();
      if (r.status === 200) return;
      await sleep(100);
    }
    throw new Error(`gateway never saw tool ${name}`);
  }

  async task(id) { return this.admin("GET", `/v1/tasks/${id}`); }

  async stop() {
    if (this.proc.exitCode === null) {
      const done = new Promise((r) => this.proc.once("exit", r));
      this.proc.kill("SIGTERM");
      await done;
    }
    this.log.end();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
