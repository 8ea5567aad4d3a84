"""The asyncio core: :class:`AsyncClient` and :class:`AsyncTask`. The
synchronous :class:`~writ_sdk.Client` runs this same code on a loop of its
own."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Awaitable, Callable, Mapping, Sequence, TypeVar

import httpx2

from ._http import ACCESS_TOKEN, EXCHANGE, Broker, Unauthenticated, body_of, error_from
from .attestation import Attestation, JoinToken
from .errors import AttestationFailed, PendingApproval, Quarantined, TaskEnded, WritError
from .keys import InstanceKey

T = TypeVar("T")

#: Capabilities as ``{"tickets": ["read"]}`` or ``[{"tool": "tickets", "scopes": ["read"]}]``.
Capabilities = Mapping[str, Sequence[str]] | Sequence[Mapping[str, Any]]


def _deadline(expires_in: float, now: float | None = None) -> float:
    return (now or time.time()) + float(expires_in)


def _renew_at(issued: float, expires: float, fraction: float = 0.2, cap: float = 60.0) -> float:
    """When to replace a credential: a safe margin before it expires (a
    fifth of its life, at most a minute)."""
    return expires - min(cap, (expires - issued) * fraction)


def _parse_ts(v: Any) -> float:
    if isinstance(v, (int, float)):
        # writ's timestamps are Unix milliseconds.
        return float(v) / 1000 if v > 1e11 else float(v)
    s = str(v)
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    return datetime.fromisoformat(s).timestamp()


def _capabilities(caps: Capabilities) -> list[dict[str, Any]]:
    if isinstance(caps, Mapping):
        return [{"tool": tool, "scopes": list(scopes)} for tool, scopes in caps.items()]
    return [dict(c) for c in caps]


async def on_loop(loop: asyncio.AbstractEventLoop, factory: Callable[[], Awaitable[T]]) -> T:
    """Runs ``factory()`` on ``loop``: directly when it is the running loop,
    through ``run_coroutine_threadsafe`` otherwise."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        return await factory()

    async def run() -> T:
        return await factory()

    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), loop))


def blocking(loop: asyncio.AbstractEventLoop, factory: Callable[[], Awaitable[T]]) -> T:
    """Runs ``factory()`` on ``loop`` from another thread and waits."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        raise RuntimeError("a blocking call from the loop it would wait for: use the async API (AsyncClient)")

    async def run() -> T:
        return await factory()

    return asyncio.run_coroutine_threadsafe(run(), loop).result()


@dataclass(frozen=True)
class Instance:
    """The attested instance: its id and token (bound to the key)."""

    instance_id: str
    access_token: str = field(repr=False)
    issued_at: float
    expires_at: float


@dataclass(frozen=True)
class ToolToken:
    """A token for one tool (RFC 8693 exchange), bound to the key."""

    tool: str
    access_token: str = field(repr=False)
    token_type: str
    scope: str
    issued_at: float
    expires_at: float


@dataclass(frozen=True)
class ActorCredentials:
    """What a sub-agent hands its planner so it can delegate to it: its
    instance token and a DPoP proof by its own key for the token endpoint
    (``ath`` of that token), good for one use within a minute."""

    actor_token: str = field(repr=False)
    actor_token_proof: str = field(repr=False)


@dataclass(frozen=True)
class DelegatedGrant:
    """A task delegated to a sub-agent: the child task and its token, bound
    to the sub-agent's key. The sub-agent takes it up with
    ``client.adopt(delegation)``."""

    task_id: str
    access_token: str = field(repr=False)
    token_type: str = "DPoP"
    scope: str = ""
    expires_in: int = 0


@dataclass(frozen=True)
class TaskResult:
    """How a task ended: its status and what ending it revoked."""

    task_id: str
    status: str
    revoked_tokens: int
    ended_descendants: int


class AsyncClient:
    """An agent instance talking to writ at ``base_url`` (its issuer).

    ``attestation`` is how it proves itself (:class:`~writ_sdk.JoinToken`,
    :class:`~writ_sdk.OidcToken`, :class:`~writ_sdk.SpiffeJwtSvid`), ``agent``
    the registered agent's name, ``key`` the instance key (a fresh Ed25519
    key in memory by default; ``InstanceKey.generate("ES256")`` or
    ``InstanceKey.from_file(path)`` otherwise). The private key is never
    sent. The instance token is renewed by attesting again shortly before
    it expires.
    """

    def __init__(self, base_url: str, attestation: Attestation, *, agent: str, key: InstanceKey | None = None,
                 http_client: httpx2.AsyncClient | None = None, timeout: float = 30.0) -> None:
        self.agent = agent
        self.attestation = attestation
        self.key = key or InstanceKey.generate()
        self._broker = Broker(base_url, self.key, http_client, timeout)
        self._instance: Instance | None = None
        self._metadata: dict[str, Any] | None = None
        self._attest_lock: asyncio.Lock | None = None
        self._used_credential: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def base_url(self) -> str:
        return self._broker.base

    @property
    def instance(self) -> Instance | None:
        return self._instance

    def _lock(self) -> asyncio.Lock:
        if self._attest_lock is None:
            self._attest_lock = asyncio.Lock()
            self._loop = asyncio.get_running_loop()
        return self._attest_lock

    async def metadata(self) -> dict[str, Any]:
        """writ's RFC 8414 authorization server metadata (cached)."""
        if self._metadata is None:
            self._metadata = await self._broker.get_json("/.well-known/oauth-authorization-server")
        return self._metadata

    async def issuer(self) -> str:
        return str((await self.metadata())["issuer"])

    async def attest(self) -> Instance:
        """Proves the instance to writ and binds its token to the key."""
        async with self._lock():
            return await self._attest()

    async def _attest(self) -> Instance:
        cred = await self.attestation.credential(await self.issuer())
        self._used_credential = cred
        now = time.time()
        r = await self._broker.send("POST", "/v1/attest",
                                    json={"agent": self.agent, self.attestation.field: cred})
        if r.status_code != 201:
            raise error_from(r, attesting=True)
        b = body_of(r)
        self._instance = Instance(str(b["instance_id"]), str(b["access_token"]), now,
                                  _deadline(b["expires_in"], now))
        return self._instance

    async def instance_token(self) -> str:
        """The instance token, attesting again when it nears expiry."""
        async with self._lock():
            inst = self._instance
            if inst is None or time.time() >= _renew_at(inst.issued_at, inst.expires_at):
                if inst is not None and isinstance(self.attestation, JoinToken) and not self.attestation.reusable:
                    if time.time() < inst.expires_at:
                        return inst.access_token  # a one-time join token: use what is left
                    raise AttestationFailed("the instance token expired, and a one-time join token cannot attest "
                                            "again: give JoinToken a callable, or attest with OIDC or SPIFFE")
                inst = await self._attest()
            return inst.access_token

    async def _quarantine_probe(self) -> Quarantined | None:
        """Once every token is refused: asks attestation, which tells a
        caller holding a real credential that its agent is quarantined."""
        try:
            # The credential it attested with last: real, so writ says why it
            # refuses it (a one-time join token already used still names a
            # quarantine, which is checked first).
            cred = self._used_credential
            if cred is None:
                return None
            r = await self._broker.send("POST", "/v1/attest",
                                        json={"agent": self.agent, self.attestation.field: cred})
        except Exception:  # noqa: BLE001 - a probe: no answer tells nothing
            return None
        if r.status_code == 201:
            b = body_of(r)
            now = time.time()
            self._instance = Instance(str(b["instance_id"]), str(b["access_token"]), now,
                                      _deadline(b["expires_in"], now))
            return None
        err = error_from(r, attesting=True)
        return err if isinstance(err, Quarantined) else None

    def task(self, intent: str, capabilities: Capabilities, *, on_behalf_of: str | None = None,
             ttl: int | None = None, justification: str | None = None,
             approval_timeout: float | None = None, heartbeat: bool = True) -> AsyncTaskScope:
        """``async with client.task(...) as task:`` starts a task, keeps its
        lease alive in the background, completes it on a normal exit and
        ends it all the same on an exception or cancellation.

        When a person must approve the task first, entering raises
        :class:`~writ_sdk.PendingApproval` (``await e.wait(timeout)`` gives the
        task), unless ``approval_timeout`` says how long to wait for it."""
        return AsyncTaskScope(self, dict(intent=intent, capabilities=capabilities, on_behalf_of=on_behalf_of,
                                         ttl=ttl, justification=justification),
                              approval_timeout, heartbeat)

    async def start_task(self, intent: str, capabilities: Capabilities, *, on_behalf_of: str | None = None,
                         ttl: int | None = None, justification: str | None = None,
                         approval_timeout: float | None = None, heartbeat: bool = True) -> AsyncTask:
        """Starts a task (heartbeating) without a scope: end it with
        ``await task.complete()`` or ``async with task:``."""
        body: dict[str, Any] = {"intent": intent, "capabilities": _capabilities(capabilities)}
        if on_behalf_of is not None:
            body["on_behalf_of"] = on_behalf_of
        if ttl is not None:
            body["ttl"] = ttl
        if justification is not None:
            body["justification"] = justification
        token = await self.instance_token()
        r = await self._broker.send("POST", "/v1/tasks", token=token, json=body)
        if r.status_code == 201:
            return AsyncTask._started(self, body_of(r), heartbeat)
        if r.status_code == 202:
            pending = body_of(r)
            task_id, approval_id = str(pending["task_id"]), str(pending["approval_id"])
            if approval_timeout is not None:
                return await self._wait_approval(task_id, approval_id, approval_timeout, heartbeat)
            raise self._pending(task_id, approval_id, heartbeat)
        raise error_from(r)

    def _pending(self, task_id: str, approval_id: str, heartbeat: bool, timed_out: bool = False) -> PendingApproval:
        client = self

        def waiter(timeout: float | None) -> Awaitable[AsyncTask]:
            return client._wait_approval(task_id, approval_id, timeout, heartbeat)

        return PendingApproval(f"task {task_id} waits for approval {approval_id}", approval_id=approval_id,
                               task_id=task_id, timed_out=timed_out, waiter=waiter)

    async def _wait_approval(self, task_id: str, approval_id: str, timeout: float | None,
                             heartbeat: bool) -> AsyncTask:
        """Asks (with the instance token's heartbeat) until a person decided."""
        end = None if timeout is None else time.monotonic() + timeout
        pause = 0.25
        while True:
            token = await self.instance_token()
            r = await self._broker.send("POST", f"/v1/tasks/{task_id}/heartbeat", token=token)
            if r.status_code == 200:
                return AsyncTask._started(self, body_of(r), heartbeat)
            if r.status_code != 202:
                raise error_from(r, task_id=task_id)
            if end is not None and time.monotonic() + pause > end:
                raise self._pending(task_id, approval_id, heartbeat, timed_out=True)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)

    async def actor_credentials(self) -> ActorCredentials:
        """As a sub-agent: what a planner needs to delegate to this instance
        (``task.delegate(actor=...)``)."""
        token = await self.instance_token()
        url = self._broker.url("/oauth2/token")
        return ActorCredentials(token, self.key.proof("POST", url, token, self._broker.nonces.get(url)))

    async def adopt(self, delegation: DelegatedGrant, *, heartbeat: bool = True) -> AsyncTask:
        """As a sub-agent: takes up a task delegated to it (its token is bound
        to this instance's key). ``async with await client.adopt(d) as task:``"""
        info = {"task_id": delegation.task_id, "access_token": delegation.access_token,
                "expires_in": delegation.expires_in, "scope": delegation.scope}
        task = AsyncTask(self, info, heartbeat=False)
        if heartbeat:
            await task.heartbeat()
            task._start_heartbeats()
        return task

    async def aclose(self) -> None:
        await self._broker.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncTaskScope:
    """What ``client.task(...)`` returns: ``async with`` it."""

    def __init__(self, client: AsyncClient, args: dict[str, Any], approval_timeout: float | None,
                 heartbeat: bool) -> None:
        self._client, self._args, self._approval_timeout, self._heartbeat = client, args, approval_timeout, heartbeat
        self._task: AsyncTask | None = None

    async def __aenter__(self) -> AsyncTask:
        self._task = await self._client.start_task(**self._args, approval_timeout=self._approval_timeout,
                                                   heartbeat=self._heartbeat)
        return self._task

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None, tb: Any) -> None:
        assert self._task is not None
        await self._task.__aexit__(et, e, tb)


class AsyncTask:
    """A running task: its id, its token (renewed by heartbeats), and what
    an agent does under it."""

    def __init__(self, client: AsyncClient, info: Mapping[str, Any], *, heartbeat: bool) -> None:
        self.client = client
        self.task_id = str(info["task_id"])
        self.scope = str(info.get("scope", ""))
        self._loop = asyncio.get_running_loop()
        self._token = str(info["access_token"])
        self._instance_id = client.instance.instance_id if client.instance else None
        now = time.time()
        self._token_expires = _deadline(info.get("expires_in", 60), now)
        lease = info.get("lease_expires_at")
        self.lease_expires_at = _parse_ts(lease) if lease is not None else self._token_expires
        self._lease_seconds = max(1.0, self.lease_expires_at - now)
        self._tools: dict[tuple[str, tuple[str, ...] | None], ToolToken] = {}
        self._exchange_lock = asyncio.Lock()
        self._failure: WritError | None = None
        self._failure_seen = False
        self._ended: TaskResult | None = None
        self._beat: asyncio.Task[None] | None = None
        if heartbeat:
            self._start_heartbeats()

    @classmethod
    def _started(cls, client: AsyncClient, info: Mapping[str, Any], heartbeat: bool) -> AsyncTask:
        return cls(client, info, heartbeat=heartbeat)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def access_token(self) -> str:
        """The task token (bound to the key): for writ itself, not for tools."""
        return self._token

    @property
    def ended(self) -> TaskResult | None:
        return self._ended

    # -- lease ------------------------------------------------------------

    def _start_heartbeats(self) -> None:
        if self._beat is None:
            self._beat = asyncio.ensure_future(self._heartbeats())

    def heartbeat_interval(self) -> float:
        """A third of the lease: two beats can be lost before it lapses."""
        return max(0.2, self._lease_seconds / 3)

    async def _heartbeats(self) -> None:
        while self._failure is None and self._ended is None:
            await asyncio.sleep(self.heartbeat_interval())
            try:
                await self.heartbeat()
            except WritError as e:
                if e.status is None or e.status >= 500:
                    continue  # writ unreachable for now: try again at the next beat
                return
            except httpx2.HTTPError:
                continue

    async def heartbeat(self) -> None:
        """Extends the lease and renews the task token."""
        self._raise_if_over()
        r = await self.client._broker.send("POST", f"/v1/tasks/{self.task_id}/heartbeat", token=self._token)
        if r.status_code != 200:
            raise await self._fail(error_from(r, task_id=self.task_id))
        b = body_of(r)
        now = time.time()
        self._token = str(b["access_token"])
        self._token_expires = _deadline(b["expires_in"], now)
        if b.get("lease_expires_at") is not None:
            self.lease_expires_at = _parse_ts(b["lease_expires_at"])
            self._lease_seconds = max(1.0, self.lease_expires_at - now)

    def _raise_if_over(self) -> None:
        if self._failure is not None:
            self._failure_seen = True
            raise self._failure
        if self._ended is not None:
            raise TaskEnded(f"task {self.task_id} is over ({self._ended.status})", task_id=self.task_id,
                            task_status=self._ended.status)

    async def _fail(self, err: WritError) -> WritError:
        """Turns a refused token into what happened (the task ended, the agent
        was quarantined), remembered so every later call raises it too."""
        if isinstance(err, Unauthenticated):
            err = await self._diagnose(err)
        if isinstance(err, (TaskEnded, Quarantined)):
            self._failure = err
            self._failure_seen = True
        return err

    async def _diagnose(self, err: WritError) -> WritError:
        client = self.client
        inst = client.instance
        if inst is not None and inst.instance_id == self._instance_id and time.time() < inst.expires_at:
            r = await client._broker.send("GET", f"/v1/tasks/{self.task_id}", token=inst.access_token)
            if r.status_code == 200:
                t = body_of(r)
                status, reason = str(t.get("status")), t.get("end_reason")
                if status != "active":
                    if reason == "agent quarantined":
                        return Quarantined(f"task {self.task_id} ended: agent quarantined", status=err.status)
                    return TaskEnded(f"task {self.task_id} is over ({status}{': ' + reason if reason else ''})",
                                     task_id=self.task_id, task_status=status, reason=reason, status=err.status)
                return err
        q = await client._quarantine_probe()
        if q is not None:
            return q
        return TaskEnded(f"task {self.task_id} can no longer be used: {err.detail}", task_id=self.task_id,
                         reason=err.detail, status=err.status)

    # -- tool tokens ------------------------------------------------------

    async def token_for(self, tool: str, scopes: Sequence[str] | None = None, *, fresh: bool = False) -> ToolToken:
        """A token for ``tool`` with ``scopes`` (all the task holds for it
        when none are given), by token exchange; cached until shortly before
        it expires."""
        self._raise_if_over()
        key = (tool, tuple(sorted(scopes)) if scopes is not None else None)
        async with self._exchange_lock:
            cached = self._tools.get(key)
            if cached is not None and not fresh and time.time() < _renew_at(cached.issued_at, cached.expires_at):
                return cached
            form = {"grant_type": EXCHANGE, "subject_token": self._token, "subject_token_type": ACCESS_TOKEN,
                    "audience": tool}
            if scopes is not None:
                form["scope"] = " ".join(scopes)
            now = time.time()
            r = await self.client._broker.send("POST", "/oauth2/token", form=form)
            if r.status_code != 200:
                raise await self._fail(error_from(r, task_id=self.task_id))
            b = body_of(r)
            tok = ToolToken(tool, str(b["access_token"]), str(b.get("token_type", "DPoP")), str(b.get("scope", "")),
                            now, _deadline(b["expires_in"], now))
            self._tools[key] = tok
            return tok

    def forget(self, tool: str) -> None:
        """Drops cached tokens for ``tool`` (the next use exchanges anew)."""
        for k in [k for k in self._tools if k[0] == tool]:
            del self._tools[k]

    async def delegate(self, actor: ActorCredentials | AsyncClient | Any,
                       scopes: Sequence[str] | Mapping[str, Sequence[str]]) -> DelegatedGrant:
        """Hands part of this task to a sub-agent: a child task with
        ``scopes`` (``{"tickets": ["read"]}`` or ``["tickets:read"]``; never
        more than this task holds), bound to the sub-agent's key. ``actor`` is the
        sub-agent's :class:`ActorCredentials` or its client."""
        self._raise_if_over()
        proof = await _actor_credentials(actor)
        form = {"grant_type": EXCHANGE, "subject_token": self._token, "subject_token_type": ACCESS_TOKEN,
                "actor_token": proof.actor_token, "actor_token_type": ACCESS_TOKEN,
                "actor_token_proof": proof.actor_token_proof, "scope": " ".join(_qualified(scopes))}
        r = await self.client._broker.send("POST", "/oauth2/token", form=form)
        if r.status_code != 200:
            raise await self._fail(error_from(r, task_id=self.task_id))
        b = body_of(r)
        return DelegatedGrant(str(b["task_id"]), str(b["access_token"]), str(b.get("token_type", "DPoP")),
                          str(b.get("scope", "")), int(b.get("expires_in", 0)))

    # -- HTTP integrations -------------------------------------------------

    def httpx_auth(self, tool: str, scopes: Sequence[str] | None = None) -> Any:
        """An ``httpx.Auth`` (and ``httpx2.Auth``) for calls to ``tool``
        through a gateway: ``Authorization: DPoP`` with a fresh proof per
        request, ``DPoP-Nonce`` followed, a new token on a 401."""
        from .auth import DpopAuth

        return DpopAuth(self, tool, scopes)

    def requests_auth(self, tool: str, scopes: Sequence[str] | None = None) -> Any:
        """The same for ``requests``."""
        from .requests_auth import RequestsDpopAuth

        return RequestsDpopAuth(self, tool, scopes)

    def mcp_auth(self, tool: str | None = None, scopes: Sequence[str] | None = None) -> Any:
        """An auth for the MCP SDK's streamable HTTP client
        (``httpx2.AsyncClient(auth=task.mcp_auth())``). Without ``tool`` it
        finds the tool from the gateway's 401 (RFC 9728 metadata)."""
        from .mcp import McpAuth

        return McpAuth(self, tool, scopes)

    # -- end ------------------------------------------------------------------

    async def complete(self) -> TaskResult:
        """Ends the task: every token issued under it (and under tasks
        delegated from it) stops working."""
        if self._ended is not None:
            return self._ended
        await self._stop_heartbeats()
        if self._failure is not None:
            raise self._failure
        r = await self.client._broker.send("POST", f"/v1/tasks/{self.task_id}/complete", token=self._token)
        if r.status_code != 200:
            raise await self._fail(error_from(r, task_id=self.task_id))
        b = body_of(r)
        self._ended = TaskResult(str(b["task_id"]), str(b["status"]), int(b.get("revoked_tokens", 0)),
                                 int(b.get("ended_descendants", 0)))
        return self._ended

    async def _stop_heartbeats(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._beat
            self._beat = None

    async def end(self) -> TaskResult | None:
        """Ends the task after a failure; never raises (the task may already
        be over)."""
        try:
            return await asyncio.shield(self.complete())
        except (WritError, httpx2.HTTPError, asyncio.CancelledError):
            await self._stop_heartbeats()
            return None

    async def __aenter__(self) -> AsyncTask:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None, tb: Any) -> None:
        await self._exit(et is None)

    async def _exit(self, normally: bool) -> None:
        """A normal exit completes the task, and says so if the task was cut
        off (ended, quarantined) without the agent having been told yet."""
        if normally and not (self._failure is not None and self._failure_seen):
            await self.complete()
        else:
            await self.end()


def _qualified(scopes: Sequence[str] | Mapping[str, Sequence[str]]) -> list[str]:
    if isinstance(scopes, Mapping):
        return [f"{tool}:{s}" for tool, names in scopes.items() for s in names]
    return list(scopes)


async def _actor_credentials(actor: Any) -> ActorCredentials:
    if isinstance(actor, ActorCredentials):
        return actor
    if isinstance(actor, AsyncClient):
        loop = actor._loop
        if loop is None:
            return await actor.actor_credentials()
        return await on_loop(loop, actor.actor_credentials)
    proof = getattr(actor, "actor_credentials", None)
    if proof is None:
        raise TypeError("actor: an ActorCredentials, or the sub-agent's Client / AsyncClient")
    return await asyncio.to_thread(proof)


__all__ = ["AsyncClient", "AsyncTask", "AsyncTaskScope", "ActorCredentials", "DelegatedGrant", "Instance", "TaskResult",
           "ToolToken", "blocking", "on_loop"]
