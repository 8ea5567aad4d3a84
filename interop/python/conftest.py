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
    def __init__(self):
        self.dir = tempfile.TemporaryDirectory()
        env = {"PATH": os.environ.get("PATH", ""), "WRIT_LOG": "warn"}
        self.proc = subprocess.Popen(
            [BIN, "serve", "--dev", "--dev-admin-token", ADMIN,
             "--data-dir", self.dir.name, "--listen", "127.0.0.1:0",
             "--gateway-listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, text=True, env=env,
        )
        self.lines = []
        self.addr = None
        self.gateway = None
        ready = threading.Event()

        def read():
            for line in self.proc.stdout:
                self.lines.append(line)
                if line.startswith("gateway listening on "):
                    self.gateway = line.split()[-1]
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

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.dir.cleanup()


@pytest.fixture()
def writ():
    w = Writ()
    yield w
    w.stop()
