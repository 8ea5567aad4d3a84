"""Metrics with a real Prometheus server (Debian's `prometheus` package).

Prometheus scrapes a running broker, its embedded gateway and a standalone
`writ gateway`, with an auditor's credential; PromQL through Prometheus's
HTTP API must then return the series writ promises: request latency per
route, decisions per action and verdict, gateway calls per tool and agent,
and the live gauges.
"""

import json
import pathlib
import shutil
import subprocess
import tempfile
import threading
import time
from urllib.parse import urlparse

import pytest
import requests

from conftest import BIN, ROOT, Writ
from test_gateway import (Recorder, free_port, register_tool, task_and_tool_token,
                          wait_for_tool, wait_ready)


@pytest.fixture()
def recorder():
    import http.server
    Recorder.seen = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def standalone_gateway(writ, workdir):
    r = requests.post(writ.url("/v1/gateways"), json={"name": "edge"}, headers=writ.admin)
    assert r.status_code == 201, r.text
    proc = subprocess.Popen(
        [BIN, "gateway", "--broker", writ.addr, "--listen", "127.0.0.1:0",
         "--gateway-token", r.json()["token"], "--spool-dir", str(workdir / "spool")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={"PATH": "/usr/bin:/bin", "WRIT_LOG": "warn"},
    )
    for line in proc.stdout:
        if line.startswith("gateway listening on "):
            return proc, line.split()[-1]
    proc.kill()
    raise AssertionError("the standalone gateway did not start")


def host(url):
    return urlparse(url).netloc


def wait_until_ready(prom, proc):
    for _ in range(300):
        assert proc.poll() is None, "prometheus exited"
        try:
            if requests.get(f"{prom}/-/ready", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError("prometheus never became ready")


def query(prom, promql):
    r = requests.get(f"{prom}/api/v1/query", params={"query": promql})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def eventually(prom, promql, check, timeout=30):
    deadline = time.time() + timeout
    result = []
    while time.time() < deadline:
        result = query(prom, promql)
        if check(result):
            return result
        time.sleep(0.5)
    raise AssertionError(f"{promql}: {result}")


def test_prometheus_scrapes_the_broker_and_gateways_with_an_auditor_credential(recorder):
    prometheus = shutil.which("prometheus")
    assert prometheus, "Debian's prometheus package is needed (scripts/test.sh installs it)"
    writ = Writ()
    work = pathlib.Path(tempfile.mkdtemp())
    procs = []
    try:
        gw_proc, edge = standalone_gateway(writ, work)
        procs.append(gw_proc)
        r = requests.post(writ.url("/v1/admin/tokens"), json={"name": "prom", "role": "auditor"},
                          headers=writ.admin)
        assert r.status_code == 201, r.text
        auditor = r.json()["token"]
        # Without a credential, neither listener shows its metrics.
        assert requests.get(writ.url("/metrics")).status_code == 401
        assert requests.get(edge + "/metrics").status_code == 401

        # One allowed and one refused call through the embedded gateway.
        register_tool(writ, {"name": "crm", "audience": "https://crm.example", "scopes": ["read", "write"],
                             "upstream": {"kind": "http", "url": recorder + "/api"}})
        wait_ready(writ)
        wait_for_tool(writ, "crm")
        _, token = task_and_tool_token(writ, [{"tool": "crm", "scopes": ["read"]}], "crm", "read")
        assert requests.get(writ.gw("/crm/x"), headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert requests.post(writ.gw("/crm/x"), headers={"Authorization": f"Bearer {token}"}).status_code == 403

        port = free_port()
        config = work / "prometheus.yml"
        jobs = [("broker", writ.addr), ("gateway", writ.gateway), ("standalone-gateway", edge)]
        config.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n" + "".join(
            f"  - job_name: {job}\n"
            f"    authorization:\n      credentials: {auditor}\n"
            f"    static_configs:\n      - targets: ['{host(url)}']\n"
            for job, url in jobs))
        prom_proc = subprocess.Popen(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={work / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        procs.append(prom_proc)
        prom = f"http://127.0.0.1:{port}"
        wait_until_ready(prom, prom_proc)

        eventually(prom, "up", lambda r: len(r) == 3 and all(s["value"][1] == "1" for s in r))
        calls = eventually(
            prom, 'writ_gateway_calls_total{job="gateway",tool="crm",agent="demo-agent"}',
            lambda r: len(r) == 2)
        assert sorted((s["metric"]["outcome"], s["value"][1]) for s in calls) == [
            ("allowed", "1"), ("refused", "1")], calls
        decisions = query(prom, 'writ_decisions_total{job="broker",action="StartTask",verdict="allow"}')
        assert decisions and decisions[0]["metric"]["policy_version"], decisions
        gw_decisions = query(prom, 'sum by (verdict) (writ_decisions_total{job="gateway",point="gateway"})')
        assert {s["metric"]["verdict"]: s["value"][1] for s in gw_decisions} == {"allow": "1", "deny": "1"}
        # Latency per route: the task start's 99th percentile over the
        # last minute (two scrapes at least).
        eventually(
            prom, 'histogram_quantile(0.99, sum by (le) (rate('
                  'writ_http_request_duration_seconds_bucket{job="broker",service="broker",route="/v1/tasks",method="POST",status="201"}[1m])))',
            lambda r: len(r) == 1)
        # The standalone gateway's own histogram: its scrapes, by route.
        eventually(prom, 'writ_http_request_duration_seconds_count{job="standalone-gateway",service="gateway",route="/metrics",status="200"}',
                   lambda r: len(r) == 1 and float(r[0]["value"][1]) >= 1)
        # Each gateway's lag behind the revocation feed (it long-polls: small).
        assert query(prom, 'writ_gateway_revocation_view_age_seconds{job="standalone-gateway"} < 10')
        assert query(prom, 'writ_gateway_bundle_age_seconds{job="gateway"} < 10')
        assert query(prom, 'writ_live_tasks{job="broker"} >= 1')
        assert query(prom, 'writ_live_grants{job="broker"} >= 1')
        assert query(prom, 'writ_approvals_pending{job="broker"}')
        assert query(prom, 'writ_store_commit_duration_seconds_count{job="broker"} > 0')
        assert query(prom, 'writ_tokens_issued_total{job="broker"} >= 2')
        # Prometheus asks for OpenMetrics first and got it: only that
        # format carries a family's unit, and Prometheus keeps it.
        meta = requests.get(f"{prom}/api/v1/targets/metadata",
                            params={"metric": "writ_http_request_duration_seconds"}).json()
        assert meta["status"] == "success", meta
        assert {m["target"]["job"] for m in meta["data"] if m["unit"] == "seconds"} == {
            "broker", "gateway", "standalone-gateway"}, meta
        # Every query of the example Grafana dashboard parses and runs.
        dashboard = json.loads((ROOT / "examples" / "grafana" / "writ.json").read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                query(prom, target["expr"].replace("$job", ".*"))
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        writ.stop()
        shutil.rmtree(work, ignore_errors=True)


# What Prometheus 2.x sends when it scrapes (its default scrape protocols).
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


def test_metrics_answer_openmetrics_or_prometheus_text_as_the_scraper_asks(recorder):
    """Both expositions read by the prometheus_client package's own parsers
    (the OpenMetrics one is strict: it refuses a missing `# EOF`, a counter
    without `_total`, a unit its name does not end with, a histogram without
    `+Inf`), on the broker's listener and the embedded gateway's."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
    from prometheus_client.parser import text_string_to_metric_families as prometheus_text

    writ = Writ()
    try:
        r = requests.post(writ.url("/v1/admin/tokens"), json={"name": "prom", "role": "auditor"},
                          headers=writ.admin)
        assert r.status_code == 201, r.text
        auditor = {"Authorization": f"Bearer {r.json()['token']}"}
        register_tool(writ, {"name": "crm", "audience": "https://crm.example", "scopes": ["read"],
                             "upstream": {"kind": "http", "url": recorder + "/api"}})
        wait_ready(writ)
        wait_for_tool(writ, "crm")
        _, token = task_and_tool_token(writ, [{"tool": "crm", "scopes": ["read"]}], "crm", "read")
        assert requests.get(writ.gw("/crm/x"), headers={"Authorization": f"Bearer {token}"}).status_code == 200

        for url, gateway in ((writ.url("/metrics"), False), (writ.gw("/metrics"), True)):
            # Without a credential: refused, whatever the format asked.
            assert requests.get(url, headers={"Accept": PROMETHEUS_ACCEPT}).status_code == 401

            om = requests.get(url, headers={**auditor, "Accept": PROMETHEUS_ACCEPT})
            assert om.status_code == 200, om.text
            assert om.headers["Content-Type"] == "application/openmetrics-text; version=1.0.0; charset=utf-8"
            assert "accept" in om.headers.get("Vary", "").lower()
            assert om.text.endswith("# EOF\n")
            families = {f.name: f for f in openmetrics(om.text)}
            latency = families["writ_http_request_duration_seconds"]
            assert latency.type == "histogram" and latency.unit == "seconds", latency
            assert any(s.name == "writ_http_request_duration_seconds_bucket" and s.labels.get("le") == "+Inf"
                       for s in latency.samples)
            calls = families["writ_gateway_calls"]
            assert calls.type == "counter", calls
            assert any(s.name == "writ_gateway_calls_total" and s.labels["tool"] == "crm"
                       and s.labels["outcome"] == "allowed" and s.value == 1 for s in calls.samples), calls.samples
            assert families["writ_live_tasks"].type == "gauge"
            if gateway:
                # Set by a gateway's scrape (the first one here is this one).
                assert families["writ_gateway_revocation_view_age_seconds"].unit == "seconds"

            # No Accept, or one that prefers plain text: the Prometheus text format.
            for accept in (None, "text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5",
                           "application/openmetrics-text;q=0,*/*"):
                headers = dict(auditor)
                if accept:
                    headers["Accept"] = accept
                text = requests.get(url, headers=headers)
                assert text.status_code == 200, text.text
                assert text.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8", accept
                assert "# EOF" not in text.text
                families = {f.name: f for f in prometheus_text(text.text)}
                assert families["writ_http_request_duration_seconds"].type == "histogram"
                calls = families["writ_gateway_calls"]
                assert calls.type == "counter"
                assert any(s.name == "writ_gateway_calls_total" and s.labels["tool"] == "crm" for s in calls.samples)
                batch = families["writ_store_commit_batch_jobs"]
                assert batch.type == "histogram", batch
    finally:
        writ.stop()
