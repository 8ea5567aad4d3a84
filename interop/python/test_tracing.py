"""Traces over OTLP, received by the OpenTelemetry project's own protobuf
definitions (`opentelemetry-proto` from PyPI) behind a stdlib HTTP server.

A real `writ serve --dev --otlp-endpoint URL` (and a standalone `writ
gateway` with the same flag) export their spans there; an agent calls a
tool through the gateway with a W3C `traceparent`, the upstream records the
`traceparent` it is sent. The spans of the call, the agent's trace id and
the upstream's must be one trace.
"""

import http.server
import json
import re
import secrets
import subprocess
import threading
import time

import pytest
import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from conftest import BIN, Writ
from test_interop import join_and_attest
from test_gateway import Recorder, register_tool, task_and_tool_token, wait_for_tool, wait_ready

CANARY = "canary-4b1d-otlp-upstream-secret"
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


class Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver: `POST /v1/traces` with an
    `ExportTraceServiceRequest` in protobuf."""
    spans = []
    raw = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path != "/v1/traces" or self.headers.get("content-type") != "application/x-protobuf":
            self.send_response(404)
            self.end_headers()
            return
        req = trace_service_pb2.ExportTraceServiceRequest()
        req.ParseFromString(body)
        Collector.raw.append(body)
        for rs in req.resource_spans:
            resource = {a.key: a.value.string_value for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    attrs = {}
                    for a in s.attributes:
                        v = a.value
                        attrs[a.key] = getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None
                    Collector.spans.append({
                        "service": resource.get("service.name"), "name": s.name,
                        "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                        "parent": s.parent_span_id.hex(), "kind": s.kind, "attrs": attrs,
                    })
        out = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def serve(handler):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


@pytest.fixture()
def collector():
    Collector.spans, Collector.raw = [], []
    srv, url = serve(Collector)
    yield url
    srv.shutdown()


@pytest.fixture()
def recorder():
    Recorder.seen = []
    srv, url = serve(Recorder)
    yield url
    srv.shutdown()


def spans_of(trace_id, timeout=20, at_least=1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = [s for s in Collector.spans if s["trace_id"] == trace_id]
        if len(found) >= at_least:
            return found
        time.sleep(0.2)
    return [s for s in Collector.spans if s["trace_id"] == trace_id]


def crm(writ, recorder, gateway=None):
    tool = {"name": "crm", "audience": "https://crm.example", "scopes": ["read", "write"],
            "upstream": {"kind": "http", "url": recorder + "/api"}}
    if gateway:
        tool["gateway"] = gateway
    register_tool(writ, tool)
    r = requests.put(writ.url("/v1/tools/crm/secret"), json={"header": "X-Api-Key", "value": CANARY},
                     headers=writ.admin)
    assert r.status_code == 200, r.text
    if not gateway:
        wait_ready(writ)
        wait_for_tool(writ, "crm")
    _, token = task_and_tool_token(writ, [{"tool": "crm", "scopes": ["read"]}], "crm", "read")
    return token


def check_one_trace(gateway, token, service):
    """One call with the agent's traceparent: the upstream's traceparent and
    the gateway's spans share its trace id; the upstream's parent is the
    gateway's request span, whose parent is the agent's span."""
    trace_id, agent_span = secrets.token_hex(16), secrets.token_hex(8)
    n = len(Recorder.seen)
    r = requests.get(gateway + "/crm/customers/42", headers={
        "Authorization": f"Bearer {token}", "traceparent": f"00-{trace_id}-{agent_span}-01",
        "tracestate": "agent=1", "baggage": "user=admin"})
    assert r.status_code == 200, r.text
    seen = Recorder.seen[n]["headers"]
    m = TRACEPARENT.match(seen["traceparent"])
    assert m, seen
    assert m.group(1) == trace_id, "the upstream continues the agent's trace"
    assert m.group(2) != agent_span, "the upstream's parent is the gateway's span"
    assert "baggage" not in seen, "baggage is not propagated upstream"

    # A refused call is in the trace too, with its verdict.
    refused_trace = secrets.token_hex(16)
    r = requests.post(gateway + "/crm/customers", json={}, headers={
        "Authorization": f"Bearer {token}", "traceparent": f"00-{refused_trace}-{agent_span}-01"})
    assert r.status_code == 403, r.text
    return trace_id, agent_span, m.group(2), refused_trace


def check_spans(trace_id, agent_span, upstream_parent, refused_trace, service, token):
    spans = spans_of(trace_id, at_least=2)
    server = [s for s in spans if s["attrs"].get("http.route") == "/{tool}"]
    assert len(server) == 1, spans
    server = server[0]
    assert server["service"] == service
    assert server["parent"] == agent_span, "the gateway's span is a child of the agent's"
    assert server["span_id"] == upstream_parent, "the upstream's parent is the gateway's span"
    assert server["attrs"]["service.role"] == "gateway"
    assert server["attrs"]["http.response.status_code"] == 200
    assert server["kind"] == 2  # SPAN_KIND_SERVER
    decision = [s for s in spans if s["name"] == "decision"]
    assert len(decision) == 1, spans
    d = decision[0]["attrs"]
    assert decision[0]["parent"] == server["span_id"]
    assert d["writ.action"] == "CallTool" and d["writ.tool"] == "crm"
    assert d["writ.verdict"] == "allow" and d["writ.policy_version"]
    assert d["writ.determining_policies"]
    refused = spans_of(refused_trace, at_least=2)
    verdicts = [s["attrs"].get("writ.verdict") for s in refused if s["name"] == "decision"]
    assert verdicts == ["deny"], refused
    codes = [s["attrs"].get("http.response.status_code") for s in refused if s["name"] != "decision"]
    assert codes == [403], refused
    # Never the agent's token or the tool's secret.
    for body in Collector.raw:
        assert token.encode() not in body and CANARY.encode() not in body


def test_a_trace_crosses_agent_gateway_upstream_with_one_id(collector, recorder):
    writ = Writ(log="debug", extra=["--otlp-endpoint", collector, "--log-format", "json"])
    try:
        token = crm(writ, recorder)
        trace_id, agent_span, upstream_parent, refused = check_one_trace(writ.gateway, token, "writ-broker")
        # The broker continues an agent's trace too: a task start, with
        # its issuance decision.
        broker_trace = secrets.token_hex(16)
        instance = join_and_attest(writ)["access_token"]
        r = requests.post(writ.url("/v1/tasks"), json={
            "intent": "tracing", "capabilities": [{"tool": "crm", "scopes": ["read"]}]}, headers={
            "Authorization": f"Bearer {instance}", "traceparent": f"00-{broker_trace}-{agent_span}-01"})
        assert r.status_code == 201, r.text
        task_token = r.json()["access_token"]
    finally:
        # Stopping flushes the spans not yet exported.
        writ.proc.terminate()
        writ.proc.wait(15)
    check_spans(trace_id, agent_span, upstream_parent, refused, "writ-broker", token)
    broker = spans_of(broker_trace, at_least=2)
    request = [s for s in broker if s["name"] != "decision"]
    assert [(s["attrs"]["service.role"], s["attrs"]["http.route"], s["parent"]) for s in request] == [
        ("broker", "/v1/tasks", agent_span)], broker
    issuance = [s["attrs"] for s in broker if s["name"] == "decision"]
    assert [(a["writ.action"], a["writ.verdict"]) for a in issuance] == [("StartTask", "allow")], broker
    assert all(a["writ.policy_version"] for a in issuance)
    for body in Collector.raw:
        assert instance.encode() not in body and task_token.encode() not in body
    # JSON log lines within a request (at debug, there are some) carry its
    # trace and span ids.
    writ.log_file.flush()
    lines = [json.loads(line) for line in writ.log_path.read_text().splitlines() if line.startswith("{")]
    ours = {trace_id, refused, broker_trace}
    assert any(line.get("span", {}).get("trace_id") in ours and line["span"].get("span_id")
               for line in lines), lines[-5:]
    writ.log_file.close()
    writ.dir.cleanup()


def test_standalone_gateway_exports_its_spans_and_continues_the_trace(collector, recorder):
    writ = Writ()
    gw = None
    try:
        r = requests.post(writ.url("/v1/gateways"), json={"name": "edge"}, headers=writ.admin)
        assert r.status_code == 201, r.text
        token = crm(writ, recorder, gateway="edge")
        gw = subprocess.Popen(
            [BIN, "gateway", "--broker", writ.addr, "--listen", "127.0.0.1:0", "--otlp-endpoint", collector,
             "--gateway-token", r.json()["token"], "--spool-dir", writ.dir.name + "/edge-spool"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={"PATH": "/usr/bin:/bin", "WRIT_LOG": "warn"})
        edge = None
        for line in gw.stdout:
            if line.startswith("gateway listening on "):
                edge = line.split()[-1]
                break
        assert edge, "the standalone gateway did not start"
        for _ in range(60):
            if requests.get(edge + "/.well-known/oauth-protected-resource/crm").status_code == 200:
                break
            time.sleep(0.5)
        got = check_one_trace(edge, token, "writ-gateway")
    finally:
        if gw:
            gw.terminate()
            gw.wait(15)
        writ.stop()
    check_spans(*got, "writ-gateway", token)


def test_a_hostile_traceparent_costs_nothing_and_starts_a_new_trace(collector, recorder):
    writ = Writ(extra=["--otlp-endpoint", collector])
    try:
        token = crm(writ, recorder)
        trace_id = secrets.token_hex(16)
        span = secrets.token_hex(8)
        good = f"00-{trace_id}-{span}-01"
        # (headers, whether the call continues the agent's trace)
        hostile = [
            ({"traceparent": "00-" + "a" * 60000 + "-01"}, False),
            ({"traceparent": good + "x" * 200}, False),
            ({"traceparent": f"ff-{trace_id}-{span}-01"}, False),
            ({"traceparent": f"00-{'0' * 32}-{span}-01"}, False),
            ({"traceparent": f"00-{trace_id}-{'0' * 16}-01"}, False),
            ({"traceparent": f"00-{trace_id.upper()}-{span}-01"}, False),
            ({"traceparent": "00-\u00e9" + trace_id[1:] + f"-{span}-01"}, False),
            ({"traceparent": good, "tracestate": "k=" + "v" * 60000}, True),
            ({"traceparent": good, "tracestate": "=,,=;;k v=" * 50}, True),
            ({"traceparent": good, "baggage": "k=" + "v" * 60000}, True),
        ]
        for extra, continues in hostile:
            n = len(Recorder.seen)
            started = time.monotonic()
            r = requests.get(writ.gw("/crm/x"), headers={"Authorization": f"Bearer {token}", **extra})
            assert r.status_code == 200, (extra, r.text)
            assert time.monotonic() - started < 2
            seen = Recorder.seen[n]["headers"]
            m = TRACEPARENT.match(seen["traceparent"])
            assert m, seen
            assert (m.group(1) == trace_id) is continues, (extra, seen["traceparent"])
            assert len(seen.get("tracestate", "")) <= 512 and "baggage" not in seen
    finally:
        writ.stop()


def test_a_sample_ratio_of_zero_still_follows_a_sampled_traceparent(collector, recorder):
    """`--otlp-sample-ratio 0`: no trace that starts at writ is exported,
    but an agent's sampled trace is (parent-based sampling)."""
    writ = Writ(extra=["--otlp-endpoint", collector, "--otlp-sample-ratio", "0"])
    try:
        token = crm(writ, recorder)
        trace_id, agent_span = secrets.token_hex(16), secrets.token_hex(8)
        r = requests.get(writ.gw("/crm/sampled"), headers={
            "Authorization": f"Bearer {token}", "traceparent": f"00-{trace_id}-{agent_span}-01"})
        assert r.status_code == 200, r.text
        n = len(Recorder.seen)
        r = requests.get(writ.gw("/crm/unsampled"), headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        m = TRACEPARENT.match(Recorder.seen[n]["headers"]["traceparent"])
        assert m and m.group(3) == "00", "a trace started here is not sampled"
        own_trace = m.group(1)
    finally:
        writ.proc.terminate()
        writ.proc.wait(15)
    followed = spans_of(trace_id, at_least=2)
    assert any(s["attrs"].get("http.route") == "/{tool}" and s["parent"] == agent_span for s in followed), followed
    assert [s for s in Collector.spans if s["trace_id"] == own_trace] == []
    writ.log_file.close()
    writ.dir.cleanup()


def test_a_bad_sample_ratio_is_refused_clearly():
    for bad in ["1.5", "-1", "often"]:
        out = subprocess.run([BIN, "serve", "--dev", "--otlp-sample-ratio", bad],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode != 0
        assert "from 0.0 to 1.0" in out.stderr, out.stderr
