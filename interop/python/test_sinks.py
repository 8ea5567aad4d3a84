"""Audit sinks against real receivers: a webhook server that checks the
HMAC with Python's `hmac`, Debian's `rsyslogd` (RFC 5424 over TCP and
over TLS with its gtls driver), and an OTLP/HTTP logs receiver built on
the OpenTelemetry project's `opentelemetry-proto` package.

The promises: every audit record reaches each sink in order and at least
once, across a broker killed and started again on the same database; a
sink that is down blocks nothing, and its lag shows on /metrics.
"""

import datetime
import hashlib
import hmac
import http.server
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import requests
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

from conftest import ADMIN, BIN, Writ
from test_interop import join_and_attest, start_task

SECRET = "sink-hmac-canary-5e1f9c2a7b"


def serve(handler):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout=30, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def head(w):
    r = requests.get(w.url("/v1/audit?last=1"), headers=w.admin)
    assert r.status_code == 200, r.text
    return r.json()["next"]


def config(tmp, sinks):
    p = pathlib.Path(tmp) / "writ.toml"
    p.write_text(sinks)
    return str(p)


def cli(w, *args):
    env = {"PATH": os.environ.get("PATH", ""), "WRIT_ADDR": w.addr, "WRIT_TOKEN": ADMIN}
    return subprocess.run([BIN, *args], env=env, capture_output=True, text=True, timeout=60)


def some_audit(w, n=3):
    """Attests and starts `n` tasks: audit records of several kinds."""
    inst = join_and_attest(w)
    for _ in range(n):
        r = start_task(w, inst["access_token"], [{"tool": "tickets", "scopes": ["read"]}])
        assert r.status_code == 201, r.text


class Hook(http.server.BaseHTTPRequestHandler):
    """A webhook receiver: checks each body's HMAC, keeps the batches,
    and answers 503 while `down`."""
    batches = []
    tests = []
    bad = 0
    down = False

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        ts = self.headers.get("x-writ-timestamp", "")
        want = "sha256=" + hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, self.headers.get("x-writ-signature", "")):
            Hook.bad += 1
            self.send_response(401)
            self.end_headers()
            return
        if Hook.down:
            self.send_response(503)
            self.end_headers()
            return
        doc = json.loads(body)
        if doc["type"] == "writ.sink_test":
            Hook.tests.append(doc)
        else:
            assert doc["type"] == "writ.audit" and doc["sink"] == "siem"
            Hook.batches.append([r["seq"] for r in doc["records"]])
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def received(batches):
    return [s for b in batches for s in b]


def assert_in_order_at_least_once(batches, last):
    """Each batch is consecutive; a batch starts at most one past what came
    before (a resend may repeat, never skip); everything up to `last` came."""
    seen = 0
    for b in batches:
        assert b == list(range(b[0], b[0] + len(b))), f"batch out of order: {b}"
        assert b[0] <= seen + 1, f"gap: {seen} then {b[0]}"
        seen = max(seen, b[-1])
    assert seen >= last
    assert set(received(batches)) >= set(range(1, last + 1))


def test_webhook_sink_gets_the_audit_stream_across_a_restart_nothing_lost_in_order():
    Hook.batches, Hook.tests, Hook.bad, Hook.down = [], [], 0, False
    srv, url = serve(Hook)
    data = tempfile.mkdtemp()
    tmp = tempfile.TemporaryDirectory()
    cfg = config(tmp.name, f"""
[[sink]]
name = "siem"
kind = "webhook"
url = "{url}/audit?token=query-canary"
secret = "{SECRET}"
""")
    try:
        w = Writ(extra=["--config", cfg], data_dir=data)
        some_audit(w)
        first = head(w)
        wait_for(lambda: set(received(Hook.batches)) >= set(range(1, first + 1)), what="the first records")
        # The receiver goes down: records pile up behind the cursor; the
        # broker is killed outright with them undelivered.
        Hook.down = True
        some_audit(w)
        before_kill = head(w)
        assert before_kill > first
        time.sleep(0.5)
        w.proc.kill()
        w.proc.wait(10)
        w.log_file.close()
        logs = w.log_path.read_text()
        w.dir.cleanup()
        assert SECRET not in logs and "query-canary" not in logs
        assert max(received(Hook.batches)) < before_kill

        Hook.down = False
        w = Writ(extra=["--config", cfg], data_dir=data)
        some_audit(w)
        last = head(w)
        wait_for(lambda: set(received(Hook.batches)) >= set(range(1, last + 1)), what="every record after the restart")
        assert_in_order_at_least_once(Hook.batches, last)
        assert Hook.bad == 0

        # `writ sink list`: its cursor and lag, never its secret or query.
        def caught_up():
            p = cli(w, "sink", "list")
            assert p.returncode == 0, p.stderr
            sink = json.loads(p.stdout)[0]
            return sink if sink["lag_records"] == 0 else None
        sink = wait_for(caught_up, what="sink list at lag 0")
        assert sink["name"] == "siem" and sink["kind"] == "webhook"
        assert sink["target"] == f"{url}/audit" and sink["cursor"] == sink["head"] >= last
        p = cli(w, "sink", "list")
        assert SECRET not in p.stdout and "query-canary" not in p.stdout
        # `writ sink test`: one event, signed, past the cursor.
        p = cli(w, "sink", "test", "siem")
        assert p.returncode == 0, p.stdout + p.stderr
        assert json.loads(p.stdout)["delivered"] is True
        assert len(Hook.tests) == 1 and Hook.tests[0]["records"][0]["seq"] == 0
        assert cli(w, "sink", "test", "nope").returncode != 0
        w.stop()
    finally:
        srv.shutdown()
        shutil.rmtree(data, ignore_errors=True)
        tmp.cleanup()


def test_a_sink_that_is_down_blocks_no_issuance_and_its_lag_grows():
    port = free_port()  # nothing listens there
    tmp = tempfile.TemporaryDirectory()
    cfg = config(tmp.name, f"""
[[sink]]
name = "down"
kind = "webhook"
url = "http://127.0.0.1:{port}/"
secret = "{SECRET}"
""")
    w = Writ(extra=["--config", cfg])
    try:
        def lag():
            text = requests.get(w.url("/metrics"), headers=w.admin).text
            m = re.search(r'^writ_sink_lag_records\{sink="down"\} (\S+)$', text, re.M)
            return float(m.group(1)) if m else None

        wait_for(lambda: lag() is not None, what="the lag metric")
        before = lag()
        inst = join_and_attest(w)
        started = time.time()
        for _ in range(20):
            r = start_task(w, inst["access_token"], [{"tool": "tickets", "scopes": ["read"]}])
            assert r.status_code == 201, r.text
        # Issuance does not wait for the sink's retries (each up to seconds).
        assert time.time() - started < 10
        wait_for(lambda: lag() >= before + 20, what="the lag to grow")
        text = requests.get(w.url("/metrics"), headers=w.admin).text
        assert re.search(r'^writ_sink_lag_seconds\{sink="down"\} [0-9.e+]+$', text, re.M)
        p = cli(w, "sink", "list")
        sink = json.loads(p.stdout)[0]
        assert sink["lag_records"] >= 20 and "unreachable" in sink["last_error"]
        p = cli(w, "sink", "test", "down")
        assert p.returncode == 1
        assert json.loads(p.stdout)["delivered"] is False
    finally:
        w.stop()
        tmp.cleanup()


class Logs(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP logs receiver: `POST /v1/logs`, an
    `ExportLogsServiceRequest` in protobuf."""
    records = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path != "/v1/logs" or self.headers.get("content-type") != "application/x-protobuf":
            self.send_response(404)
            self.end_headers()
            return
        req = logs_service_pb2.ExportLogsServiceRequest()
        req.ParseFromString(body)
        for rl in req.resource_logs:
            service = {a.key: a.value.string_value for a in rl.resource.attributes}["service.name"]
            for sl in rl.scope_logs:
                for lr in sl.log_records:
                    attrs = {a.key: a.value for a in lr.attributes}
                    Logs.records.append({
                        "service": service, "scope": sl.scope.name,
                        "seq": attrs["writ.audit.seq"].int_value,
                        "kind": attrs["writ.audit.kind"].string_value,
                        "body": json.loads(lr.body.string_value),
                        "event_name": lr.event_name, "severity": lr.severity_number,
                        "time": lr.time_unix_nano,
                    })
        out = logs_service_pb2.ExportLogsServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def test_otlp_logs_sink_delivers_every_record_in_order():
    Logs.records = []
    srv, url = serve(Logs)
    tmp = tempfile.TemporaryDirectory()
    cfg = config(tmp.name, f"""
[[sink]]
name = "otel"
kind = "otlp"
endpoint = "{url}"
""")
    w = Writ(extra=["--config", cfg])
    try:
        some_audit(w)
        last = head(w)
        wait_for(lambda: {r["seq"] for r in Logs.records} >= set(range(1, last + 1)), what="the OTLP records")
        seqs = [r["seq"] for r in Logs.records if r["seq"] > 0]
        assert seqs[:last] == list(range(1, last + 1))
        rec = next(r for r in Logs.records if r["kind"] == "task_start")
        assert rec["service"] == "writ-broker" and rec["scope"] == "writ.audit"
        assert rec["event_name"] == "writ.audit" and rec["body"]["kind"] == "task_start"
        assert rec["time"] > 1_700_000_000 * 10**9
        p = cli(w, "sink", "test", "otel")
        assert p.returncode == 0, p.stdout + p.stderr
        wait_for(lambda: any(r["event_name"] == "writ.sink_test" for r in Logs.records), what="the test event")
    finally:
        w.stop()
        srv.shutdown()
        tmp.cleanup()


# --- rsyslog -----------------------------------------------------------

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
FIELDS = "%protocol-version%\t%syslogfacility%\t%syslogseverity%\t%app-name%\t%msgid%\t%structured-data%\t%msg%\n"


def tls_files(d):
    """A CA and a certificate for `localhost` signed by it (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject, issuer, key, sign_key, ca):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(hours=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        return b.sign(sign_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sink test CA")])
    ca = cert(ca_name, ca_name, ca_key, ca_key, True)
    leaf = cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]), ca_name, key, ca_key, False)
    paths = {n: str(pathlib.Path(d) / f"{n}.pem") for n in ("ca", "cert", "key")}
    pathlib.Path(paths["ca"]).write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pathlib.Path(paths["cert"]).write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    pathlib.Path(paths["key"]).write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


class Rsyslog:
    """`rsyslogd -n` in the foreground, unprivileged, with a generated
    config: imtcp on a free port (TLS with the gtls driver when given
    certificates), every message's RFC 5424 fields written to a file."""

    def __init__(self, d, tls=None, port=None):
        self.dir = pathlib.Path(d)
        self.port = port or free_port()
        self.out = self.dir / "messages.log"
        work = self.dir / "work"
        work.mkdir()
        conf = [f'global(workDirectory="{work}" maxMessageSize="64k")']
        if tls:
            conf.append(f'global(defaultNetstreamDriver="gtls" defaultNetstreamDriverCAFile="{tls["ca"]}" '
                        f'defaultNetstreamDriverCertFile="{tls["cert"]}" defaultNetstreamDriverKeyFile="{tls["key"]}")')
            conf.append('module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")')
        else:
            conf.append('module(load="imtcp")')
        conf.append(f'input(type="imtcp" address="127.0.0.1" port="{self.port}")')
        conf.append(f'template(name="fields" type="string" string="{FIELDS}")')
        conf.append(f'*.* action(type="omfile" file="{self.out}" template="fields")')
        path = self.dir / "rsyslog.conf"
        path.write_text("\n".join(conf) + "\n")
        self.log = open(self.dir / "rsyslogd.log", "w")
        self.proc = subprocess.Popen([RSYSLOGD, "-n", "-f", str(path), "-i", str(self.dir / "rsyslogd.pid")],
                                     stdout=self.log, stderr=subprocess.STDOUT)

        def listening():
            assert self.proc.poll() is None, (self.dir / "rsyslogd.log").read_text()
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0
        wait_for(listening, what="rsyslogd to listen")

    def messages(self):
        if not self.out.exists():
            return []
        out = []
        for line in self.out.read_text().splitlines():
            version, facility, severity, app, msgid, sd, msg = line.split("\t")
            out.append({"version": version, "facility": int(facility), "severity": int(severity),
                        "app": app, "msgid": msgid, "sd": sd, "record": json.loads(msg.strip())})
        return out

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


def test_rsyslog_receives_rfc5424_records_over_tcp_and_tls():
    assert os.path.exists(RSYSLOGD), "Debian's rsyslog and rsyslog-gnutls are needed (scripts/test.sh installs them)"
    tmp = tempfile.TemporaryDirectory()
    d = pathlib.Path(tmp.name)
    (d / "tcp").mkdir()
    (d / "tls").mkdir()
    tls = tls_files(d / "tls")
    plain, secure = Rsyslog(d / "tcp"), Rsyslog(d / "tls", tls)
    daemons = [plain, secure]
    cfg = config(tmp.name, f"""
[[sink]]
name = "syslog-tcp"
kind = "syslog"
address = "127.0.0.1:{plain.port}"
hostname = "writ-test"

[[sink]]
name = "syslog-tls"
kind = "syslog"
address = "127.0.0.1:{secure.port}"
tls = true
ca_file = "{tls['ca']}"
server_name = "localhost"
""")
    w = Writ(extra=["--config", cfg])
    try:
        some_audit(w)
        last = head(w)
        for rs in (plain, secure):
            wait_for(lambda: {m["record"]["seq"] for m in rs.messages()} >= set(range(1, last + 1)),
                     what=f"rsyslog ({rs.dir.name}) to have every record")
            msgs = rs.messages()
            assert [m["record"]["seq"] for m in msgs][:last] == list(range(1, last + 1))
            start = next(m for m in msgs if m["msgid"] == "task_start")
            assert start["version"] == "1" and start["app"] == "writ" and start["facility"] == 13
            assert start["severity"] == 6
            assert f'seq="{start["record"]["seq"]}"' in start["sd"] and start["sd"].startswith("[writ@32473 ")
            assert start["record"]["event"]["kind"] == "task_start" and start["record"]["hash"]
        p = cli(w, "sink", "test", "syslog-tls")
        assert p.returncode == 0, p.stdout + p.stderr
        wait_for(lambda: any(m["msgid"] == "sink_test" for m in secure.messages()), what="the test event")
        # The receiver goes away and comes back on the same port: nothing
        # written in between is lost.
        port = plain.port
        plain.stop()
        some_audit(w, 1)
        time.sleep(1)
        (d / "tcp2").mkdir()
        again = Rsyslog(d / "tcp2", port=port)
        daemons.append(again)
        some_audit(w, 1)
        last = head(w)
        wait_for(lambda: {m["record"]["seq"] for m in again.messages()}
                 | {m["record"]["seq"] for m in plain.messages()} >= set(range(1, last + 1)),
                 timeout=40, what="every record after rsyslog came back")
    finally:
        w.stop()
        for rs in daemons:
            if rs.proc.poll() is None:
                rs.stop()
        tmp.cleanup()
