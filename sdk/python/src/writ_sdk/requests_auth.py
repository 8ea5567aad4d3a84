"""``Authorization: DPoP`` for ``requests`` (``pip install 'writ-sdk[requests]'``)."""

from __future__ import annotations

from typing import Any, Sequence

import requests
from requests.auth import AuthBase

from ._core import AsyncTask, ToolToken, blocking
from ._http import Nonces


class RequestsDpopAuth(AuthBase):
    """``requests.get(url, auth=task.requests_auth("crm"))``: the task's
    token for the tool with a fresh proof per request, the server's nonce
    on a ``use_dpop_nonce`` challenge and a new token on a 401 (each once).
    Works from any thread but the one an :class:`~writ_sdk.AsyncClient`
    runs on (use the httpx auth there)."""

    def __init__(self, task: AsyncTask, tool: str, scopes: Sequence[str] | None = None) -> None:
        self.task = task
        self.tool = tool
        self.scopes = list(scopes) if scopes is not None else None
        self.nonces = Nonces()

    def _token(self, fresh: bool = False) -> ToolToken:
        return blocking(self.task.loop, lambda: self.task.token_for(self.tool, self.scopes, fresh=fresh))

    def _sign(self, r: requests.PreparedRequest, token: ToolToken) -> None:
        url = str(r.url)
        r.headers["Authorization"] = f"DPoP {token.access_token}"
        r.headers["DPoP"] = self.task.client.key.proof(str(r.method), url, token.access_token, self.nonces.get(url))

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        self._sign(r, self._token())
        r.register_hook("response", self._retry)  # type: ignore[no-untyped-call]
        setattr(r, "_writ_retried", set())
        return r

    def _retry(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        req = response.request
        done: set[str] = getattr(req, "_writ_retried", set())
        self.nonces.update(str(req.url), response.headers)
        if response.status_code != 401:
            return response
        www = response.headers.get("www-authenticate") or ""
        if 'error="use_dpop_nonce"' in www and "nonce" not in done:
            done.add("nonce")
            token = self._token()
        elif "refresh" not in done:
            done.add("refresh")
            token = self._token(fresh=True)
        else:
            return response
        response.content  # noqa: B018 - read it, so the connection can be reused
        response.close()
        again = req.copy()
        setattr(again, "_writ_retried", done)
        self._sign(again, token)
        connection = response.connection
        new = connection.send(again, **kwargs)
        new.history = [*response.history, response]
        new.request = again
        return self._retry(new, **kwargs)
