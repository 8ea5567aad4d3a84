"""A real `writ serve --dev` (and `writ node`) for the SDK's integration tests."""

from __future__ import annotations

import os
import pathlib
import subprocess
import tempfile
import threading
import time

import requests

ROOT = pathlib.Path(__file__).resolve().parents[3]
BIN = os.environ.get("WRIT_BIN", str(ROOT / "target" / "debug" / "writ"))
ADMIN = "sdk-test-admin-token"


class Writ:
    def __init__(self, extra: tuple[str, ...] = ()) -> None:
        self.dir = tempfile.TemporaryDirectory()
        env = {"PATH": os.environ.get("PATH", ""), "WRIT_LOG": "warn"}
        self.log = open(pathlib.Path(self.dir.name) / "stderr.log", "w")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--dev", "--dev-admin-token", ADMIN, "--data-dir", self.dir.name,
             "--listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0", *extra],
            stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        self.addr: str | None = None
        self.gateway: str | None = None
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
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

    def url(self, path: str) -> str:
        assert self.addr
        return self.addr + path

    def gw(self, path: str) -> str:
        assert self.gateway
        return self.gateway + path

    def post(self, path: str, body: dict | None = None, expect: int | tuple[int, ...] = (200, 201)) -> dict:
        r = requests.post(self.url(path), json=body or {}, headers=self.admin)
        ok = (expect,) if isinstance(expect, int) else expect
        assert r.status_code in ok, f"{path}: {r.status_code} {r.text}"
        return r.json() if r.content else {}

    def get(self, path: str) -> dict | list:
        r = requests.get(self.url(path), headers=self.admin)
        assert r.status_code == 200, r.text
        return r.json()

    def join_token(self, agent: str = "demo-agent") -> str:
        return str(self.post(f"/v1/agents/{agent}/join-tokens", {"ttl": 300})["join_token"])

    def register_agent(self, name: str, attestation: dict | None = None, **extra: object) -> None:
        self.post("/v1/agents", {"name": name, "attestation": attestation or {"kind": "join_token"}, **extra})

    def register_tool(self, body: dict) -> None:
        self.post("/v1/tools", body)

    def wait_for_tool(self, name: str) -> None:
        """The gateway refreshes its bundle every second."""
        for _ in range(100):
            try:
                if requests.get(self.gw(f"/.well-known/oauth-protected-resource/{name}")).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the gateway never saw tool {name}")

    def task(self, task_id: str) -> dict:
        out = self.get(f"/v1/tasks/{task_id}")
        assert isinstance(out, dict)
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()
        self.dir.cleanup()
