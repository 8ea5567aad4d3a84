"""The synchronous API: the asyncio core, run on a loop in a thread of the
client's own (which is also where heartbeats run)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Awaitable, Callable, Mapping, Sequence, TypeVar

import httpx2  # noqa: F401 - the core's transport

from ._core import (
    ActorCredentials,
    AsyncClient,
    AsyncTask,
    Capabilities,
    DelegatedGrant,
    Instance,
    TaskResult,
    ToolToken,
    blocking,
)
from .attestation import Attestation
from .errors import PendingApproval
from .keys import InstanceKey

T = TypeVar("T")


class _Portal:
    """An event loop in a daemon thread, and a way to run coroutines on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(ready.set)
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="writ-sdk", daemon=True)
        self.thread.start()
        ready.wait()

    def call(self, factory: Callable[[], Awaitable[T]]) -> T:
        return blocking(self.loop, factory)

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


class Client:
    """A synchronous agent client: the same arguments as
    :class:`~writ_sdk.AsyncClient`.

    ``with client.task(intent=..., capabilities={"tickets": ["read"]}) as task:``
    starts a task, heartbeats in the background, completes it on a normal
    exit and ends it on an exception.
    """

    def __init__(self, base_url: str, attestation: Attestation, *, agent: str, key: InstanceKey | None = None,
                 timeout: float = 30.0) -> None:
        self._portal = _Portal()
        self._async: AsyncClient = self._portal.call(
            lambda: _make(base_url, attestation, agent=agent, key=key, timeout=timeout))

    @property
    def key(self) -> InstanceKey:
        return self._async.key

    @property
    def agent(self) -> str:
        return self._async.agent

    @property
    def instance(self) -> Instance | None:
        return self._async.instance

    @property
    def aio(self) -> AsyncClient:
        """The asyncio client underneath (its loop is the client's thread)."""
        return self._async

    def attest(self) -> Instance:
        return self._portal.call(self._async.attest)

    def issuer(self) -> str:
        return self._portal.call(self._async.issuer)

    def task(self, intent: str, capabilities: Capabilities, *, on_behalf_of: str | None = None,
             ttl: int | None = None, justification: str | None = None,
             approval_timeout: float | None = None, heartbeat: bool = True) -> TaskScope:
        return TaskScope(self, dict(intent=intent, capabilities=capabilities, on_behalf_of=on_behalf_of, ttl=ttl,
                                    justification=justification, approval_timeout=approval_timeout,
                                    heartbeat=heartbeat))

    def start_task(self, intent: str, capabilities: Capabilities, **kw: Any) -> Task:
        try:
            t = self._portal.call(lambda: self._async.start_task(intent, capabilities, **kw))
        except PendingApproval as p:
            raise self._sync_pending(p) from None
        return Task(self, t)

    def _sync_pending(self, p: PendingApproval) -> PendingApproval:
        waiter = p._waiter

        def wait(timeout: float | None) -> Task:
            try:
                return Task(self, self._portal.call(lambda: waiter(timeout)))
            except PendingApproval as again:
                raise self._sync_pending(again) from None

        return PendingApproval(str(p), approval_id=p.approval_id, task_id=p.task_id, timed_out=p.timed_out,
                               waiter=wait)

    def actor_credentials(self) -> ActorCredentials:
        return self._portal.call(self._async.actor_credentials)

    def adopt(self, delegation: DelegatedGrant, *, heartbeat: bool = True) -> Task:
        return Task(self, self._portal.call(lambda: self._async.adopt(delegation, heartbeat=heartbeat)))

    def close(self) -> None:
        try:
            self._portal.call(self._async.aclose)
        finally:
            self._portal.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _make(base_url: str, attestation: Attestation, **kw: Any) -> AsyncClient:
    # Made on the portal's loop, so its locks and connections belong there.
    return AsyncClient(base_url, attestation, **kw)


class TaskScope:
    """What ``client.task(...)`` returns: ``with`` it."""

    def __init__(self, client: Client, args: dict[str, Any]) -> None:
        self._client, self._args = client, args
        self._task: Task | None = None

    def __enter__(self) -> Task:
        args = dict(self._args)
        self._task = self._client.start_task(args.pop("intent"), args.pop("capabilities"), **args)
        return self._task

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: Any) -> None:
        assert self._task is not None
        self._task.__exit__(et, e, tb)


class Task:
    """A running task (synchronous face of :class:`~writ_sdk.AsyncTask`)."""

    def __init__(self, client: Client, task: AsyncTask) -> None:
        self.client = client
        self.aio = task
        self._call = client._portal.call

    @property
    def task_id(self) -> str:
        return self.aio.task_id

    @property
    def access_token(self) -> str:
        return self.aio.access_token

    @property
    def lease_expires_at(self) -> float:
        return self.aio.lease_expires_at

    @property
    def ended(self) -> TaskResult | None:
        return self.aio.ended

    def heartbeat(self) -> None:
        self._call(self.aio.heartbeat)

    def token_for(self, tool: str, scopes: Sequence[str] | None = None, *, fresh: bool = False) -> ToolToken:
        return self._call(lambda: self.aio.token_for(tool, scopes, fresh=fresh))

    def delegate(self, actor: Any, scopes: Sequence[str] | Mapping[str, Sequence[str]]) -> DelegatedGrant:
        if isinstance(actor, Client):
            actor = actor.actor_credentials()
        return self._call(lambda: self.aio.delegate(actor, scopes))

    def httpx_auth(self, tool: str, scopes: Sequence[str] | None = None) -> Any:
        return self.aio.httpx_auth(tool, scopes)

    def requests_auth(self, tool: str, scopes: Sequence[str] | None = None) -> Any:
        return self.aio.requests_auth(tool, scopes)

    def mcp_auth(self, tool: str | None = None, scopes: Sequence[str] | None = None) -> Any:
        return self.aio.mcp_auth(tool, scopes)

    def complete(self) -> TaskResult:
        return self._call(self.aio.complete)

    def end(self) -> TaskResult | None:
        return self._call(self.aio.end)

    def __enter__(self) -> Task:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: Any) -> None:
        self._call(lambda: self.aio._exit(et is None))
