"""``Authorization: DPoP`` for ``httpx`` and ``httpx2`` clients calling a
tool through a writ gateway."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, AsyncGenerator, Generator, Sequence

import httpx2

from ._core import AsyncTask, ToolToken, blocking, on_loop
from ._http import Nonces

if TYPE_CHECKING:  # pragma: no cover
    _Bases: tuple[type, ...] = (httpx2.Auth,)
else:
    try:  # the original httpx too, when it is installed: one class serves both
        import httpx as _httpx

        _Bases = (httpx2.Auth,) if _httpx.Auth is httpx2.Auth else (httpx2.Auth, _httpx.Auth)
    except ImportError:
        _Bases = (httpx2.Auth,)


def _nonce_wanted(response: Any) -> bool:
    return response.status_code == 401 and 'error="use_dpop_nonce"' in (response.headers.get("www-authenticate") or "")


class DpopAuth(*_Bases):  # type: ignore[misc]
    """Adds the task's token for ``tool`` (``Authorization: DPoP``) and a
    fresh proof to every request; answers a ``use_dpop_nonce`` challenge
    with the server's nonce, and a 401 with a newly exchanged token (once
    each). A task that is over raises :class:`~writ_sdk.TaskEnded` or
    :class:`~writ_sdk.Quarantined` from the request."""

    requires_request_body = True

    def __init__(self, task: AsyncTask, tool: str, scopes: Sequence[str] | None = None) -> None:
        self.task = task
        self.tool = tool
        self.scopes = list(scopes) if scopes is not None else None
        self.nonces = Nonces()

    def _sign(self, request: Any, token: ToolToken) -> None:
        url = str(request.url)
        request.headers["Authorization"] = f"DPoP {token.access_token}"
        request.headers["DPoP"] = self.task.client.key.proof(request.method, url, token.access_token,
                                                            self.nonces.get(url))

    def _next(self, response: Any, state: dict[str, bool]) -> str | None:
        """What to do after ``response``: ``"nonce"``, ``"refresh"`` or None."""
        self.nonces.update(str(response.request.url), response.headers)
        if _nonce_wanted(response) and not state["nonce"]:
            state["nonce"] = True
            return "nonce"
        if response.status_code == 401 and not state["refresh"]:
            state["refresh"] = True
            return "refresh"
        return None

    def sync_auth_flow(self, request: Any) -> Generator[Any, Any, None]:
        if self.requires_request_body:
            request.read()
        task = self.task
        token = blocking(task.loop, lambda: task.token_for(self.tool, self.scopes))
        state = {"nonce": False, "refresh": False}
        while True:
            self._sign(request, token)
            response = yield request
            step = self._next(response, state)
            if step is None:
                return
            if step == "refresh":
                token = blocking(task.loop, lambda: task.token_for(self.tool, self.scopes, fresh=True))

    async def async_auth_flow(self, request: Any) -> AsyncGenerator[Any, Any]:
        if self.requires_request_body:
            await request.aread()
        task = self.task
        token = await on_loop(task.loop, lambda: task.token_for(self.tool, self.scopes))
        state = {"nonce": False, "refresh": False}
        while True:
            self._sign(request, token)
            response = yield request
            step = self._next(response, state)
            if step is None:
                return
            if step == "refresh":
                token = await on_loop(task.loop, lambda: task.token_for(self.tool, self.scopes, fresh=True))
