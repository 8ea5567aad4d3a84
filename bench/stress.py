"""H2, H4, H6 and H7 at once against a real broker, gateway and node, while
a legitimate client measures what it gets: run by bench/stress.sh (which
says what is measured and how); the roles below run as processes of their
own so that no attacker shares an interpreter (or its lock) with the
client being measured.

    stress.py run --bin WRIT [--seconds 60] [--baseline 10] ...
    stress.py ROLE CONFIG.json OUT.json     (legit, h4, h6, h7)
    stress.py upstream PORT
"""
import argparse
import asyncio
import base64
import hashlib
import http.client
import http.server
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid

BENCH = pathlib.Path(__file__).resolve().parent
ADMIN = "stress-admin"
# Who is who: the kernel sees each role at its own loopback address (Linux
# answers on all of 127.0.0.0/8), and writ's per-client limits see them
# apart.
LEGIT, H4_FROM, H7_FROM, H6_FROM = "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"
TIMEOUT = 10.0
NOBODY = 65534


# --- HTTP from a chosen source address, DPoP proofs --------------------------


class Answer:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body or b"null")

    def text(self):
        return self.body.decode(errors="replace")


class Http:
    """HTTP/1.1 from `source`: a connection per request, or one kept per
    server (`keep`), opened again when the server closes it."""

    def __init__(self, source, keep=False, timeout=TIMEOUT):
        self.source, self.keep, self.timeout = source, keep, timeout
        self.conns = {}

    def request(self, method, url, body=None, headers=None, form=None):
        u = urllib.parse.urlsplit(url)
        headers = dict(headers or {})
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        path = u.path + (f"?{u.query}" if u.query else "")
        key = (u.hostname, u.port)
        conn = self.conns.pop(key, None) if self.keep else None
        if conn is None:
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=self.timeout,
                                              source_address=(self.source, 0))
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            answer = Answer(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        except BaseException:
            conn.close()
            raise
        if self.keep and not r.will_close:
            self.conns[key] = conn
        else:
            conn.close()
        return answer


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Key:
    """A DPoP key (Ed25519) and the proofs it signs (RFC 9449)."""

    def __init__(self):
        from cryptography.hazmat.primitives.asymmetric import ed25519
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        self.private = ed25519.Ed25519PrivateKey.generate()
        x = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        header = {"typ": "dpop+jwt", "alg": "EdDSA", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64(x)}}
        self.header = b64(json.dumps(header, separators=(",", ":")).encode())

    def proof(self, method, url, token=None):
        claims = {"jti": uuid.uuid4().hex, "htm": method, "htu": url.split("?")[0], "iat": int(time.time())}
        if token is not None:
            claims["ath"] = b64(hashlib.sha256(token.encode()).digest())
        signing = self.header + "." + b64(json.dumps(claims, separators=(",", ":")).encode())
        return signing + "." + b64(self.private.sign(signing.encode()))


def expect(answer, *statuses):
    if answer.status not in statuses:
        raise RuntimeError(f"{answer.status} {answer.text()[:160]}")
    return answer


def join_token(http, cfg, agent):
    r = http.request("POST", f"{cfg['broker']}/v1/agents/{agent}/join-tokens", {"ttl": 120},
                     {"Authorization": f"Bearer {ADMIN}"})
    return expect(r, 201).json()["join_token"]


def attest(http, cfg, agent, key=None):
    """An instance token for `agent` (DPoP-bound with `key`)."""
    jt = join_token(http, cfg, agent)
    url = f"{cfg['broker']}/v1/attest"
    headers = {"DPoP": key.proof("POST", url)} if key else {}
    return expect(http.request("POST", url, {"agent": agent, "join_token": jt}, headers), 201).json()["access_token"]


def auth(token, key, method, url):
    if key is None:
        return {"Authorization": f"Bearer {token}"}
    return {"Authorization": f"DPoP {token}", "DPoP": key.proof(method, url, token)}


def start_task(http, cfg, instance, tool, scopes, key=None, status=(201,)):
    url = f"{cfg['broker']}/v1/tasks"
    body = {"intent": "stress", "capabilities": [{"tool": tool, "scopes": scopes}], "ttl": 3600}
    return expect(http.request("POST", url, body, auth(instance, key, "POST", url)), *status)


def exchange(http, cfg, task_token, tool, scope, key=None):
    url = f"{cfg['broker']}/oauth2/token"
    r = http.request("POST", url, form={
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": task_token, "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "audience": tool, "scope": scope,
    }, headers={"DPoP": key.proof("POST", url)} if key else {})
    return expect(r, 200).json()["access_token"]


MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


def mcp_initialize(http, url, token):
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "stress", "version": "1"}}}
    return http.request("POST", url, body, {**MCP_HEADERS, "Authorization": f"Bearer {token}"})


# --- shared by the roles -------------------------------------------------------


def sleep_until(t):
    time.sleep(max(0.0, t - time.time()))


def tally(counts, key, n=1):
    counts[key] = counts.get(key, 0) + n


def reason(answer):
    """What a refusal said, short: the problem's detail, else its title."""
    try:
        body = answer.json()
        text = body.get("detail") or body.get("title") or body.get("error") or ""
    except (ValueError, AttributeError):
        text = answer.text()
    return " ".join(str(text).split())[:90]


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))]


# --- the legitimate client -------------------------------------------------------


def role_legit(cfg):
    """Each operation on a thread of its own at a steady rate, from 127.0.0.1,
    through the quiet baseline and the attack; every attempt is timed."""
    from spiffe import WorkloadApiClient

    broker, gw = cfg["broker"], cfg["gateway"]
    results = {}
    lock = threading.Lock()

    def get(url, check=None):
        r = expect(Http(LEGIT).request("GET", url), 200)
        if check and check not in r.text():
            raise RuntimeError(f"200 without {check!r}")

    def attest_task_call():
        http = Http(LEGIT)
        key = Key()
        inst = attest(http, cfg, "legit-agent", key)
        task = start_task(http, cfg, inst, "stress-http", ["read"], key).json()
        tool = exchange(http, cfg, task["access_token"], "stress-http", "read", key)
        url = f"{gw}/stress-http/tickets/7"
        expect(http.request("GET", url, headers=auth(tool, key, "GET", url)), 200)
        url = f"{broker}/v1/tasks/{task['task_id']}/complete"
        expect(http.request("POST", url, headers=auth(task["access_token"], key, "POST", url)), 200)

    mcp = {"token": None, "at": 0.0}

    def mcp_session_call():
        http = Http(LEGIT)
        # A new task every minute: a task lease lasts 120 s without heartbeats.
        if mcp["token"] is None or time.time() - mcp["at"] > 60:
            inst = attest(http, cfg, "legit-mcp")
            task = start_task(http, cfg, inst, "stress-mcp", ["echo"]).json()
            mcp["token"] = exchange(http, cfg, task["access_token"], "stress-mcp", "echo")
            mcp["at"] = time.time()
        url, token = f"{gw}/stress-mcp", mcp["token"]
        r = expect(mcp_initialize(http, url, token), 200)
        h = {**MCP_HEADERS, "Authorization": f"Bearer {token}", "Mcp-Session-Id": r.headers["mcp-session-id"]}
        expect(http.request("POST", url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, h), 200, 202)
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"message": "legit-echo"}}}
        r = expect(http.request("POST", url, call, h), 200)
        if "legit-echo" not in r.text():
            raise RuntimeError(f"tools/call answered {r.text()[:120]}")
        expect(http.request("DELETE", url, headers=h), 200)

    def svid():
        client = WorkloadApiClient("unix://" + cfg["socket"])
        try:
            got = str(client.fetch_x509_svid(timeout=TIMEOUT).spiffe_id)
        finally:
            client.close()
        if got != "spiffe://writ.local/agent/svid-workload":
            raise RuntimeError(f"got {got}")

    ops = [
        ("broker `GET /healthz`", 0.1, lambda: get(f"{broker}/healthz")),
        ("broker `GET /.well-known/jwks.json`", 0.1, lambda: get(f"{broker}/.well-known/jwks.json", '"keys"')),
        ("gateway `GET /healthz`", 0.1, lambda: get(f"{gw}/healthz")),
        ("join token, DPoP attestation, task, exchange, HTTP tool call, complete", 1.0, attest_task_call),
        ("MCP session (stdio) + `tools/call` + close", 0.25, mcp_session_call),
        ("X.509-SVID from the node (py-spiffe, new connection)", 0.1, svid),
    ]

    def runner(name, period, fn):
        mine = {"every": period, "quiet": {"ms": [], "fail": 0, "errors": {}},
                "attack": {"ms": [], "fail": 0, "errors": {}}}
        with lock:
            results[name] = mine
        due = cfg["start_at"]
        while True:
            sleep_until(due)
            if due >= cfg["until"]:
                break
            started, t = time.time(), time.perf_counter()
            try:
                fn()
                error = None
            except Exception as e:  # noqa: BLE001 - every failure is a lost request
                error = " ".join(f"{type(e).__name__}: {e}".split())[:140]
            phase = mine["quiet"] if started < cfg["attack_at"] else mine["attack"]
            phase["ms"].append((time.perf_counter() - t) * 1000)
            if error:
                phase["fail"] += 1
                tally(phase["errors"], error)
            due = max(due + period, time.time())

    threads = [threading.Thread(target=runner, args=op) for op in ops]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


# --- H4: half-sent requests ----------------------------------------------------


def role_h4(cfg):
    """`--slow` connections to each of the broker and the gateway from
    127.0.0.2, each sending half a request and waiting; a connection the
    server closes is opened again after a second."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    half = b"GET /healthz HTTP/1.1\r\nHost: stress\r\nX-Slow: "
    out = {}

    async def slot(name, host, port, stats, open_since):
        me = object()
        while time.time() < cfg["until"]:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port, local_addr=(H4_FROM, 0)), 5)
                writer.write(half)
                await writer.drain()
            except (OSError, asyncio.TimeoutError):
                stats["connect failed"] = stats.get("connect failed", 0) + 1
                await asyncio.sleep(1)
                continue
            opened = time.time()
            stats["opened"] += 1
            open_since[me] = opened
            answered = b""
            try:
                while True:
                    left = cfg["until"] - time.time()
                    chunk = await asyncio.wait_for(reader.read(256), max(0.01, left))
                    if not chunk:
                        break
                    answered += chunk
            except asyncio.TimeoutError:
                stats["still open at the end"] += 1
                open_since.pop(me, None)
                writer.close()
                return
            except OSError:
                pass
            open_since.pop(me, None)
            writer.close()
            lived = time.time() - opened
            status = answered.split(b"\r\n", 1)[0].decode(errors="replace")[9:12] if answered else ""
            how = "closed at once (< 1 s)" if lived < 1 else "closed after waiting"
            stats[how + (f", answered {status}" if status else "")] = \
                stats.get(how + (f", answered {status}" if status else ""), 0) + 1
            if lived >= 1:
                stats["waited"].append(lived)
            await asyncio.sleep(1)

    async def sample(open_since, held):
        while time.time() < cfg["until"]:
            now = time.time()
            held.append(sum(1 for t in list(open_since.values()) if now - t >= 1))
            await asyncio.sleep(1)

    async def main():
        sleep_until(cfg["attack_at"])
        tasks = []
        for name, url in (("broker", cfg["broker"]), ("gateway", cfg["gateway"])):
            u = urllib.parse.urlsplit(url)
            stats = {"opened": 0, "still open at the end": 0, "waited": []}
            open_since, held = {}, []
            out[name] = {"stats": stats, "held": held}
            tasks.append(asyncio.ensure_future(sample(open_since, held)))
            for _ in range(cfg["slow"]):
                tasks.append(asyncio.ensure_future(slot(name, u.hostname, u.port, stats, open_since)))
        await asyncio.gather(*tasks)

    asyncio.run(main())
    for v in out.values():
        v["waited"] = sorted(v["stats"].pop("waited"))
    return out


# --- H7: unauthenticated attestation with throwaway keys ------------------------


def role_h7(cfg):
    """Threads on kept-alive connections from 127.0.0.3, each request a
    fresh key, a fresh proof and a join token that does not exist, naming
    the legitimate agent."""
    counts, lock = {}, threading.Lock()
    url = f"{cfg['broker']}/v1/attest"

    def flood():
        client = Http(H7_FROM, keep=True)
        mine = {}
        while time.time() < cfg["until"]:
            body = {"agent": "legit-agent", "join_token": "wjt_" + uuid.uuid4().hex}
            try:
                r = client.request("POST", url, body, {"DPoP": Key().proof("POST", url)})
                tag = str(r.status)
                if r.status == 429:
                    tag += " with Retry-After" if "retry-after" in r.headers else " without Retry-After"
            except (OSError, http.client.HTTPException) as e:
                # A kept-alive connection writ closed under it: opened again.
                tag = f"connection dropped ({type(e).__name__}), reopened"
            tally(mine, tag)
        with lock:
            for k, v in mine.items():
                tally(counts, k, v)

    sleep_until(cfg["attack_at"])
    threads = [threading.Thread(target=flood) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"counts": counts}


# --- H6: one agent opening stdio MCP sessions -----------------------------------


def role_h6(cfg):
    """One agent (h6-agent, from 127.0.0.4) opening MCP sessions on the
    stdio tool as fast as it can, never closing one, a new task whenever a
    task is refused another session."""
    counts, lock = {}, threading.Lock()
    url = f"{cfg['gateway']}/stress-mcp"
    sleep_until(cfg["attack_at"])
    http = Http(H6_FROM, keep=True)
    try:
        instance = [attest(http, cfg, "h6-agent")]
    except Exception as e:  # noqa: BLE001
        return {"counts": {f"attestation failed: {e}": 1}}

    def flood():
        http = Http(H6_FROM, keep=True)
        mine = {}
        while time.time() < cfg["until"]:
            try:
                r = start_task(http, cfg, instance[0], "stress-mcp", ["echo"], status=(201, 401, 403, 429, 503))
                if r.status != 201:
                    tally(mine, f"task refused: {r.status} {reason(r)}")
                    if r.status == 401:
                        instance[0] = attest(http, cfg, "h6-agent")
                    continue
                tally(mine, "tasks started")
                token = exchange(http, cfg, r.json()["access_token"], "stress-mcp", "echo")
                for _ in range(64):
                    r = mcp_initialize(http, url, token)
                    if r.status != 200:
                        tally(mine, f"session refused: {r.status} {reason(r)}")
                        break
                    tally(mine, "sessions opened")
            except Exception as e:  # noqa: BLE001
                tally(mine, f"error: {' '.join(str(e).split())[:90]}")
                time.sleep(0.05)
        with lock:
            for k, v in mine.items():
                tally(counts, k, v)

    threads = [threading.Thread(target=flood) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"counts": counts}


# --- the upstream of the HTTP tool ----------------------------------------------


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b'{"ticket":7,"status":"open"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def role_upstream(port):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Upstream)
    server.daemon_threads = True
    server.serve_forever()


# --- the run: setup, attacks, report --------------------------------------------


class Run:
    def __init__(self, args):
        self.args = args
        self.procs = []
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="writ-stress-"))
        os.chmod(self.dir, 0o755)
        self.notes = []

    def say(self, msg):
        print(f"[bench/stress.py] {msg}", file=sys.stderr, flush=True)

    def spawn(self, argv, **kw):
        p = subprocess.Popen(argv, **kw)
        self.procs.append(p)
        return p

    def tail(self, name, lines=20):
        try:
            return "\n".join((self.dir / name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return f"({name} is missing)"

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        deadline = time.time() + 10
        for p in reversed(self.procs):
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if os.environ.get("STRESS_KEEP"):
            self.say(f"kept {self.dir}: logs of writ serve and writ node, each role's stderr")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def role(self, name, cfg, env=None):
        path = self.dir / f"{name}.json"
        (self.dir / f"{name}.cfg.json").write_text(json.dumps(cfg))
        p = self.spawn([sys.executable, str(BENCH / "stress.py"), name, str(self.dir / f"{name}.cfg.json"), str(path)],
                       stderr=open(self.dir / f"{name}.stderr", "w"), env=env)
        return p, path

    # - setup -

    def start_writ(self):
        self.log = open(self.dir / "serve.log", "w")
        serve = self.spawn(
            [self.args.bin, "serve", "--dev", "--dev-admin-token", ADMIN, "--data-dir", str(self.dir / "data"),
             "--listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0",
             # All load comes from one address: the request rate limits
             # would refuse it, and they are not what this run measures.
             "--limit-credential-per-minute", "0", "--limit-client-per-minute", "0",
             "--limit-anonymous-per-minute", "0"],
            stdout=subprocess.PIPE, stderr=self.log, text=True,
            env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/"), "WRIT_LOG": "warn"})
        self.serve = serve
        found = {}

        def read():
            for line in serve.stdout:
                if line.startswith("gateway listening on "):
                    found["gateway"] = line.split()[-1]
                if line.startswith("writ listening on "):
                    found["broker"] = line.split()[-1]
        threading.Thread(target=read, daemon=True).start()
        deadline = time.time() + 60
        while len(found) < 2:
            if time.time() > deadline or serve.poll() is not None:
                raise SystemExit("writ serve did not start:\n" + self.tail("serve.log"))
            time.sleep(0.05)
        self.broker, self.gateway = found["broker"], found["gateway"]

    def admin(self, method, path, body, *ok):
        r = Http(LEGIT).request(method, self.broker + path, body, {"Authorization": f"Bearer {ADMIN}"})
        return expect(r, *(ok or (200, 201)))

    def register(self):
        port = free_port()
        self.spawn([sys.executable, str(BENCH / "stress.py"), "upstream", str(port)])
        self.admin("POST", "/v1/tools", {"name": "stress-http", "audience": "https://stress-http.example",
                                        "scopes": ["read"], "upstream": {"kind": "http", "url": f"http://127.0.0.1:{port}"}})
        self.admin("POST", "/v1/tools", {
            "name": "stress-mcp", "audience": "urn:mcp:stress", "scopes": ["echo"],
            "attributes": {"protocol": "mcp"},
            "upstream": {"kind": "mcp-stdio", "command": [sys.executable, "-S", str(BENCH / "mcp_echo.py")]}})
        for name in ("legit-agent", "legit-mcp", "h6-agent"):
            self.admin("POST", "/v1/agents", {"name": name, "attestation": {"kind": "join_token"}})
        self.admin("POST", "/v1/nodes", {"name": "node-1"})
        # The legitimate workload is the legit role's interpreter, as the kernel sees it.
        self.admin("POST", "/v1/agents", {
            "name": "svid-workload", "attestation": {"kind": "spiffe"},
            "workload": {"node": "node-1", "selectors": [
                f"unix:uid:{os.getuid()}", f"unix:path:{os.path.realpath(sys.executable)}"]}})
        for tool in ("stress-http", "stress-mcp"):
            wait(lambda: Http(LEGIT).request(
                "GET", f"{self.gateway}/.well-known/oauth-protected-resource/{tool}").status == 200,
                f"the gateway never served {tool}")

    def start_node(self):
        jt = self.admin("POST", "/v1/nodes/node-1/join-tokens", {"ttl": 600}).json()["join_token"]
        node_dir = self.dir / "node"
        node_dir.mkdir()
        os.chmod(node_dir, 0o755)
        self.socket = str(node_dir / "agent.sock")
        self.node = self.spawn(
            [self.args.bin, "node", "--broker", self.broker, "--name", "node-1",
             "--socket", "unix://" + self.socket, "--state-dir", str(node_dir / "state")],
            stdout=subprocess.PIPE, stderr=open(self.dir / "node.log", "w"), text=True,
            env={"PATH": os.environ.get("PATH", ""), "WRIT_LOG": "warn", "WRIT_NODE_JOIN_TOKEN": jt})
        line = self.node.stdout.readline()
        if not line.startswith("workload API listening on"):
            raise SystemExit(f"writ node did not start ({line.strip()!r}):\n" + self.tail("node.log"))

    def prepare_peers(self):
        """H2's executables: copies of a Python interpreter, each padded
        (sparse) to --exe-mb, owned by the user the peers run as."""
        peers_dir = self.dir / "peers"
        peers_dir.mkdir()
        os.chmod(peers_dir, 0o755)
        shutil.copy(BENCH / "stress_peer.py", peers_dir / "peer.py")
        os.chmod(peers_dir / "peer.py", 0o644)
        uid = NOBODY if os.geteuid() == 0 else os.getuid()
        candidates = [os.path.realpath(sys.executable)]
        for p in (shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin"), "/usr/bin/python3"):
            if p and os.path.realpath(p) not in candidates:
                candidates.append(os.path.realpath(p))

        def runs(interp, as_uid):
            probe = peers_dir / "probe"
            shutil.copy(interp, probe)
            give(probe, as_uid)
            try:
                return subprocess.run([str(probe), "-S", "-E", "-c", "import json, socket, struct"],
                                      capture_output=True, timeout=30, **as_user(as_uid)).returncode == 0
            except (OSError, subprocess.SubprocessError):
                return False
            finally:
                probe.unlink()

        interp = next((c for c in candidates if runs(c, uid)), None)
        if interp is None and uid != os.getuid():
            self.notes.append(f"no Python here runs as uid {uid}: H2's peers run as this user")
            uid, interp = os.getuid(), candidates[0]
        if uid == os.getuid():
            self.notes.append("H2's peers run as the workload's own user (not root): one user's "
                              "attestation work is bounded together, so they share its capacity")
        self.peer_uid, self.peer_interp = uid, interp
        self.peer_exes = []
        for i in range(self.args.peers):
            exe = peers_dir / f"python-{i}"
            shutil.copy(interp, exe)
            os.truncate(exe, self.args.exe_mb * 1024 * 1024)
            give(exe, uid)
            self.peer_exes.append(str(exe))

    # - sampling -

    def sample(self, until, attack_at):
        """CPU and memory of writ serve and writ node, and how many stdio MCP
        servers the gateway runs, once a second."""
        tick = os.sysconf("SC_CLK_TCK")
        seen = {"serve": {"rss": 0}, "node": {"rss": 0}, "mcp servers": 0, "mcp samples": []}

        def cpu(pid):
            fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / tick

        def rss(pid):
            for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) // 1024
            return 0

        def children(pid):
            n = 0
            for d in pathlib.Path("/proc").iterdir():
                if d.name.isdigit():
                    try:
                        if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                            n += 1
                    except (OSError, ValueError, IndexError):
                        pass
            return n

        started = {}
        while time.time() < until:
            now = time.time()
            for name, p in (("serve", self.serve), ("node", self.node)):
                try:
                    if now >= attack_at and name not in started:
                        started[name] = cpu(p.pid)
                    seen[name]["cpu"] = cpu(p.pid) - started.get(name, cpu(p.pid))
                    if now >= attack_at:
                        seen[name]["rss"] = max(seen[name]["rss"], rss(p.pid))
                except OSError:
                    seen[name]["gone"] = True
            if now >= attack_at:
                n = children(self.serve.pid)
                seen["mcp servers"] = max(seen["mcp servers"], n)
                seen["mcp samples"].append(n)
            time.sleep(1)
        return seen

    # - the run -

    def go(self):
        a = self.args
        self.say("starting writ serve --dev and writ node")
        self.start_writ()
        self.register()
        self.start_node()
        self.say(f"preparing {a.peers} executables of {a.exe_mb} MB for H2")
        self.prepare_peers()
        t0 = time.time() + 5
        attack_at, until = t0 + a.baseline, t0 + a.baseline + a.seconds
        cfg = {"broker": self.broker, "gateway": self.gateway, "socket": self.socket, "start_at": t0,
               "attack_at": attack_at, "until": until, "slow": a.slow}
        roles = {name: self.role(name, cfg) for name in ("legit", "h4", "h7", "h6")}
        peers = [self.spawn([exe, "-S", "-E", str(self.dir / "peers" / "peer.py"), self.socket, exe,
                             str(attack_at), str(until)],
                            cwd=str(self.dir / "peers"), **as_user(self.peer_uid),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"})
                 for exe in self.peer_exes]
        self.say(f"{a.baseline} s quiet, then {a.seconds} s under H2, H4, H6 and H7")
        seen = self.sample(until, attack_at)
        self.say("the attacks are over; collecting")
        results = {}
        for name, (p, path) in roles.items():
            try:
                p.wait(60)
                results[name] = json.loads(path.read_text())
            except (subprocess.TimeoutExpired, OSError, ValueError):
                raise SystemExit(f"the {name} role gave no result:\n" + self.tail(f"{name}.stderr"))
        h2 = {"counts": {}, "waits": []}
        for p in peers:
            out, _ = p.communicate(timeout=60)
            try:
                one = json.loads(out.strip().splitlines()[-1])
            except (ValueError, IndexError):
                tally(h2["counts"], "peer gave no result")
                continue
            for k, v in one["counts"].items():
                tally(h2["counts"], k, v)
            h2["waits"] += one["waits"]
        results["h2"] = h2
        alive = self.serve.poll() is None and self.node.poll() is None
        self.report(results, seen, alive)

    def report(self, r, seen, alive):
        a = self.args
        ms = lambda v: "–" if v != v else (f"{v:,.0f}" if v >= 100 else f"{v:.1f}")  # noqa: E731
        print("## Legitimate client (127.0.0.1)")
        print()
        print(f"Each operation runs on its own thread at the rate shown, {a.baseline} s alone "
              f"(quiet) and then {a.seconds} s under all four attacks; every attempt is timed, a failure "
              f"being any error, timeout ({TIMEOUT:.0f} s) or unexpected status. Latency in ms.")
        print()
        print("| operation | every | under attack: count | failures | p50 | p99 | max | quiet: count | failures | p50 | p99 |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        lost = attempts = quiet_lost = 0
        errors = []
        for name, op in r["legit"].items():
            q, t = op["quiet"], op["attack"]
            qs, ts = sorted(q["ms"]), sorted(t["ms"])
            lost += t["fail"]
            quiet_lost += q["fail"]
            attempts += len(ts)
            errors += [(name, "under attack", e, n) for e, n in t["errors"].items()]
            errors += [(name, "quiet", e, n) for e, n in q["errors"].items()]
            print(f"| {name} | {op['every'] * 1000:.0f} ms | {len(ts):,} | {t['fail']} | {ms(percentile(ts, 50))} | "
                  f"{ms(percentile(ts, 99))} | {ms(ts[-1] if ts else float('nan'))} | {len(qs):,} | {q['fail']} | "
                  f"{ms(percentile(qs, 50))} | {ms(percentile(qs, 99))} |")
        print()
        if errors:
            print("Failures:")
            print()
            for name, phase, e, n in errors:
                print(f"- {name} ({phase}), {n} x: `{e}`")
            print()

        print("## Attacks")
        print()
        print("| attack | from | what it did | how writ answered |")
        print("|---|---|---|---|")
        counts = lambda c: "; ".join(f"{k}: {v:,}" for k, v in sorted(c.items(), key=lambda kv: -kv[1]))  # noqa: E731
        for target in ("broker", "gateway"):
            h = r["h4"][target]
            s = dict(h["stats"])
            opened = s.pop("opened")
            held = max(h["held"] or [0])
            if h["waited"]:
                s = {(f"{k} ({percentile(h['waited'], 50):.1f} s at the median)"
                      if k.startswith("closed after waiting") else k): v for k, v in s.items()}
            print(f"| H4 half-sent requests to the {target} | {H4_FROM} | kept {a.slow:,} connections open with "
                  f"half a request each, reopening a second after each close: {opened:,} opened | "
                  f"at most {held} held at once; {counts(s)} |")
        h7 = r["h7"]["counts"]
        total = sum(h7.values())
        print(f"| H7 `/v1/attest` with throwaway DPoP keys and bogus join tokens (naming `legit-agent`) | {H7_FROM} | "
              f"{total:,} requests ({total / a.seconds:,.0f}/s), a new key and proof each | {counts(h7)} |")
        h6 = r["h6"]["counts"]
        print(f"| H6 one agent (`h6-agent`) opening stdio MCP sessions, never closing them | {H6_FROM} | "
              f"{h6.get('tasks started', 0):,} tasks started, {h6.get('sessions opened', 0):,} sessions opened | "
              f"{counts({k: v for k, v in h6.items() if k not in ('tasks started', 'sessions opened')}) or '–'}; "
              f"stdio servers running under the gateway: at most {seen['mcp servers']} |")
        h2 = r["h2"]
        waits = sorted(h2["waits"])
        print(f"| H2 {a.peers} processes with {a.exe_mb} MB executables asking the node for SVIDs, each "
              f"touching its executable first (a new file to hash every time) | uid {self.peer_uid}, "
              f"`{os.path.basename(self.peer_interp)}` padded | {sum(h2['counts'].values()):,} connections | "
              f"{counts(h2['counts'])}; each answered in p50 {percentile(waits, 50):.1f} s, "
              f"max {(waits[-1] if waits else 0):.1f} s |")
        print()
        print(f"writ serve (broker and gateway) used {seen['serve'].get('cpu', 0):.1f} s of CPU during the attack "
              f"({a.seconds} s), at most {seen['serve']['rss']} MB resident; writ node "
              f"{seen['node'].get('cpu', 0):.1f} s of CPU, at most {seen['node']['rss']} MB. "
              f"Both {'were still running' if alive else 'did NOT survive'} at the end.")
        for n in self.notes:
            print(f"Note: {n}.")
        print()
        print(f"**Legitimate requests lost: {lost}** (of {attempts:,} under attack; {quiet_lost} lost in the quiet baseline).")


def as_user(uid):
    """Popen's arguments to run as `uid` (and the group of the same number),
    when that is another user."""
    return {} if uid == os.getuid() else {"user": uid, "group": uid}


def give(path, uid):
    """An executable for `uid`, who may also touch it."""
    if uid != os.getuid():
        os.chown(path, uid, uid)
    os.chmod(path, 0o755)


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(check, what, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(what)


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "upstream":
        role_upstream(int(sys.argv[2]))
        return
    if len(sys.argv) > 1 and sys.argv[1] != "run":
        role, cfg_path, out_path = sys.argv[1:4]
        cfg = json.loads(pathlib.Path(cfg_path).read_text())
        out = {"legit": role_legit, "h4": role_h4, "h6": role_h6, "h7": role_h7}[role](cfg)
        pathlib.Path(out_path).write_text(json.dumps(out))
        return
    p = argparse.ArgumentParser(prog="stress.py run")
    p.add_argument("run")
    p.add_argument("--bin", required=True, help="the writ binary")
    p.add_argument("--seconds", type=int, default=60, help="how long the attacks last")
    p.add_argument("--baseline", type=int, default=10, help="seconds measured before the attacks start")
    p.add_argument("--slow", type=int, default=1000, help="H4: half-sent connections to each listener")
    p.add_argument("--peers", type=int, default=48, help="H2: processes asking the node")
    p.add_argument("--exe-mb", type=int, default=480, help="H2: size of each of their executables (at most 512)")
    args = p.parse_args()
    run = Run(args)
    # Stopped by a signal (stress.sh's trap): still end every process started here.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        run.go()
    finally:
        run.stop()


if __name__ == "__main__":
    main()
