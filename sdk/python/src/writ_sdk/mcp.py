"""The official MCP Python SDK (``mcp``) through a writ gateway.

``McpAuth`` is an ``httpx2.Auth`` for the SDK's streamable HTTP client: it
presents a tool token bound to the instance key (``Authorization: DPoP`` and
a fresh proof per request). Without a tool name it finds out which tool the
URL is, and that writ is its authorization server, from the gateway's 401
(RFC 9728: ``WWW-Authenticate: ... resource_metadata="..."``).

``connect(task, url)`` opens a session with it; its ``call_tool`` raises
:class:`~writ_sdk.Denied` and :class:`~writ_sdk.PendingApproval` for the
gateway's refusals (JSON-RPC error -32001) and the task's own failure
(:class:`~writ_sdk.Quarantined`, :class:`~writ_sdk.TaskEnded`) once its token
is refused. Needs the ``mcp`` extra: ``pip install 'writ-sdk[mcp]'``.
"""

from __future__ import annotations

import contextlib
import re
from urllib.parse import urlsplit
from typing import Any, AsyncGenerator, AsyncIterator, Sequence

import httpx2

from ._core import AsyncTask, ToolToken, on_loop
from ._http import Nonces, origin
from .errors import Denied, PendingApproval, WritError

#: The JSON-RPC error code writ's gateway refuses an MCP request with.
REFUSED = -32001

_METADATA = re.compile(r'resource_metadata="([^"]+)"')


def well_known(url: str) -> str:
    """Where RFC 9728 puts the metadata of the resource at ``url``."""
    p = urlsplit(url)
    return f"{p.scheme}://{p.netloc}/.well-known/oauth-protected-resource{p.path.rstrip('/')}"


class McpAuth(httpx2.Auth):
    """DPoP auth for the MCP SDK's ``streamable_http_client``:
    ``httpx2.AsyncClient(auth=task.mcp_auth())``."""

    requires_request_body = True

    def __init__(self, task: AsyncTask, tool: str | None = None, scopes: Sequence[str] | None = None, *,
                 well_known_first: bool = True) -> None:
        """``well_known_first``: without a tool name, ask the RFC 9728
        well-known URL before the first call; otherwise learn it from the
        gateway's 401 only."""
        self.task = task
        self.tool = tool
        self.scopes = list(scopes) if scopes is not None else None
        self.nonces = Nonces()
        #: The typed failure behind the last refused request, if any.
        self.failure: WritError | None = None
        self._asked_well_known = not well_known_first

    async def _token(self, fresh: bool = False) -> ToolToken | None:
        if self.tool is None:
            return None
        tool, task = self.tool, self.task
        try:
            return await on_loop(task.loop, lambda: task.token_for(tool, self.scopes, fresh=fresh))
        except WritError as e:
            # Raised here, it would be lost inside the MCP transport's tasks:
            # the request goes unauthenticated, the gateway refuses it, and
            # the session (see ``connect``) raises this.
            self.failure = e
            return None

    def _sign(self, request: Any, token: ToolToken | None) -> None:
        request.headers.pop("Authorization", None)
        request.headers.pop("DPoP", None)
        if token is None:
            return
        url = str(request.url)
        request.headers["Authorization"] = f"DPoP {token.access_token}"
        request.headers["DPoP"] = self.task.client.key.proof(request.method, url, token.access_token,
                                                            self.nonces.get(url))

    async def _learn(self, request: httpx2.Request, meta_response: httpx2.Response) -> None:
        """RFC 9728: which tool this is, and that writ issues its tokens. The
        metadata must be the resource's own (§3.3): its ``resource`` is the
        URL being called (or a prefix of it), so a server cannot point the
        client at another tool's metadata to be sent that tool's token."""
        await meta_response.aread()
        if meta_response.status_code != 200:
            return
        meta = meta_response.json()
        resource = str(meta.get("resource", "")).rstrip("/")
        called = str(request.url).split("?", 1)[0].rstrip("/")
        if not resource or not (called == resource or called.startswith(resource + "/")):
            self.failure = WritError(f"the protected resource metadata names {resource!r}, not {called!r}: "
                                     "no token is sent", code="invalid_target")
            return
        issuer = await on_loop(self.task.loop, self.task.client.issuer)
        servers = [str(s).rstrip("/") for s in meta.get("authorization_servers", [])]
        if issuer.rstrip("/") not in servers:
            self.failure = WritError(f"{meta.get('resource')} names another authorization server ({servers}), "
                                     f"not {issuer}: no token is sent to it", code="invalid_target")
            return
        name = meta.get("resource_name") or str(meta.get("resource", "")).rstrip("/").rsplit("/", 1)[-1]
        self.tool = str(name)

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        await request.aread()
        tried = {"nonce": False, "refresh": False, "discover": False}
        if self.tool is None and not self._asked_well_known:
            # RFC 9728 §3.1: the metadata of https://gw/tool is at
            # https://gw/.well-known/oauth-protected-resource/tool. Asked first,
            # so the call itself goes out with its token.
            self._asked_well_known = True
            meta_response = yield httpx2.Request("GET", well_known(str(request.url)))
            await self._learn(request, meta_response)
        token = await self._token()
        while True:
            self._sign(request, token)
            response = yield request
            self.nonces.update(str(request.url), response.headers)
            www = " ".join(response.headers.get_list("www-authenticate"))
            if response.status_code != 401:
                if response.status_code < 400:
                    self.failure = None
                return
            if 'error="use_dpop_nonce"' in www and not tried["nonce"]:
                tried["nonce"] = True
                continue
            if self.tool is None and not tried["discover"]:
                tried["discover"] = True
                m = _METADATA.search(www)
                if not m or origin(m.group(1)) != origin(str(request.url)):
                    return  # metadata elsewhere than the resource: not followed
                meta_response = yield httpx2.Request("GET", m.group(1))
                await self._learn(request, meta_response)
                token = await self._token()
                continue
            if token is not None and not tried["refresh"]:
                tried["refresh"] = True
                token = await self._token(fresh=True)
                if token is None:
                    return
                continue
            return


def writ_error(e: BaseException) -> WritError | None:
    """The typed error for an MCP error writ's gateway sent, if it is one."""
    code = getattr(e, "code", None)
    data = getattr(e, "data", None)
    if code != REFUSED or not isinstance(data, dict):
        return None
    message = str(getattr(e, "message", e))
    if data.get("approval_id"):
        return PendingApproval(message, approval_id=str(data["approval_id"]))
    return Denied(message, determining_policies=list(data.get("determining_policies") or []),
                  policy_version=data.get("policy_version"), code="access_denied")


def _session_class() -> type:
    from mcp import ClientSession

    class WritSession(ClientSession):
        """``mcp.ClientSession`` whose calls raise writ's refusals as types."""

        writ_auth: McpAuth

        async def call_tool(self, *args: Any, **kwargs: Any) -> Any:
            try:
                result = await super().call_tool(*args, **kwargs)
            except Exception as e:
                typed = writ_error(e) or self.writ_auth.failure
                if typed is not None:
                    raise typed from e
                raise
            return result

        async def list_tools(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return await super().list_tools(*args, **kwargs)
            except Exception as e:
                typed = writ_error(e) or self.writ_auth.failure
                if typed is not None:
                    raise typed from e
                raise

    return WritSession


@contextlib.asynccontextmanager
async def connect(task: AsyncTask | Any, url: str, *, tool: str | None = None, scopes: Sequence[str] | None = None,
                  timeout: float = 30.0) -> AsyncIterator[Any]:
    """``async with connect(task, gateway + "/everything") as session:``, an
    initialized ``mcp.ClientSession`` through the gateway, for an
    :class:`~writ_sdk.AsyncTask` or a :class:`~writ_sdk.Task`."""
    from mcp.client.streamable_http import streamable_http_client

    aio: AsyncTask = getattr(task, "aio", task)
    auth = McpAuth(aio, tool, scopes)
    session_class = _session_class()
    async with httpx2.AsyncClient(auth=auth, timeout=timeout) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            read, write = streams[0], streams[1]
            async with session_class(read, write) as session:
                session.writ_auth = auth
                try:
                    await session.initialize()
                except Exception as e:
                    if auth.failure is not None:
                        raise auth.failure from e
                    raise
                yield session
