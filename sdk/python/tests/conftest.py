import http.server
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from writ_server import ROOT, Writ  # noqa: E402

HERE = pathlib.Path(__file__).parent

# A permit that holds refunds for a person's approval, beside the example pack.
APPROVAL_POLICY = """
@id("refunds-need-a-person")
@approval("required")
permit (principal, action == Action::"StartTask", resource)
when { context.scopes.contains("refund") };
"""


@pytest.fixture()
def writ():
    w = Writ()
    yield w
    w.stop()


@pytest.fixture()
def make_writ():
    started = []

    def make(*extra):
        w = Writ(tuple(extra))
        started.append(w)
        return w

    yield make
    for w in started:
        w.stop()


@pytest.fixture()
def approval_writ(tmp_path, make_writ):
    shutil.copy(ROOT / "examples" / "policies" / "tasks.cedar", tmp_path / "tasks.cedar")
    (tmp_path / "approval.cedar").write_text(APPROVAL_POLICY)
    w = make_writ("--policy-dir", str(tmp_path))
    w.register_tool({"name": "payments", "audience": "https://payments.example", "scopes": ["refund"]})
    return w


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def mcp_http_server():
    """The MCP SDK's own server on streamable HTTP."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "mcp_server.py"), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(150):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/mcp"
    proc.terminate()
    proc.wait(10)


class Recorder(http.server.BaseHTTPRequestHandler):
    seen: list = []

    def answer(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        Recorder.seen.append({"method": self.command, "path": self.path, "body": body,
                              "headers": {k.lower(): v for k, v in self.headers.items()}})
        out = json.dumps({"ok": True, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = answer

    def log_message(self, *args):
        pass


@pytest.fixture()
def recorder():
    """A plain HTTP upstream that records what reached it."""
    Recorder.seen = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def python_cmd():
    return os.path.realpath(sys.executable)
