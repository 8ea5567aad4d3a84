"""Starts a real `writ serve --dev` for the interop tests."""

import os
import pathlib
import subprocess
import tempfile
import threading

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("WRIT_BIN", str(ROOT / "target" / "debug" / "writ"))
ADMIN = "interop-admin-token"


class Writ:
    def __init__(self, log="warn", extra=(), listen="127.0.0.1:0", data_dir=None):
        # A given data directory outlives this start (for restarts); the
        # caller removes it.
        self.dir = tempfile.TemporaryDirectory()
        data_dir = data_dir or self.dir.name
        env = {"PATH": os.environ.get("PATH", ""), "WRIT_LOG": log}
        # Everything writ logs, for tests that look for what must never be logged.
        self.log_path = pathlib.Path(self.dir.name) / "stderr.log"
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--dev", "--dev-admin-token", ADMIN,
             "--data-dir", data_dir, "--listen", listen,
             "--gateway-listen", "127.0.0.1:0", *extra],
            stdout=subprocess.PIPE, stderr=self.log_file, text=True, env=env,
        )
        self.lines = []
        self.addr = None
        self.gateway = None
        self.mtls = None
        ready = threading.Event()

        def read():
            for line in self.proc.stdout:
                self.lines.append(line)
                if line.startswith("gateway listening on "):
                    self.gateway = line.split()[-1]
                if line.startswith("mTLS attestation listening on "):
                    self.mtls = line.split()[-1]
                if line.startswith("writ listening on "):
                    self.addr = line.split()[-1]
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(60):
            self.proc.kill()
            raise RuntimeError("writ serve did not start")
        self.admin = {"Authorization": f"Bearer {ADMIN}"}

    def url(self, path):
        return self.addr + path

    def gw(self, path):
        return self.gateway + path

    def stdout_and_logs(self):
        self.log_file.flush()
        return "".join(self.lines) + self.log_path.read_text()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.log_file.close()
        self.dir.cleanup()


@pytest.fixture()
def writ():
    w = Writ()
    yield w
    w.stop()
