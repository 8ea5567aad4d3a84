"""Talking to writ: DPoP proofs with server nonces, and answers read into
typed errors."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import httpx2

from .errors import (
    AttestationFailed,
    Denied,
    DpopError,
    InvalidScope,
    InvalidTarget,
    PendingApproval,
    Quarantined,
    TaskEnded,
    WritError,
)
from .keys import InstanceKey

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"


class Unauthenticated(WritError):
    """A token was refused (expired, revoked, or its task or instance is
    over). The SDK looks into why and raises :class:`TaskEnded` or
    :class:`Quarantined` where it can tell."""


def origin(url: str) -> str:
    p = urlsplit(url)
    return f"{p.scheme}://{p.netloc}".lower()


class Nonces:
    """The last ``DPoP-Nonce`` each server sent (RFC 9449 §8)."""

    def __init__(self) -> None:
        self._by_origin: dict[str, str] = {}

    def get(self, url: str) -> str | None:
        return self._by_origin.get(origin(url))

    def update(self, url: str, headers: Any) -> None:
        n = headers.get("dpop-nonce")
        if n:
            self._by_origin[origin(url)] = n


def wants_nonce(status: int, headers: Any, body: dict[str, Any] | None) -> bool:
    """The server refused the proof for lacking its nonce (RFC 9449 §8, §9)."""
    if status not in (400, 401):
        return False
    if 'error="use_dpop_nonce"' in (headers.get("www-authenticate") or ""):
        return True
    return body is not None and body.get("error") == "use_dpop_nonce"


def _json(r: Any) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


_DENIED_BY = re.compile(r"denied by ([^()\[]+)")


def _policies_from(text: str) -> list[str]:
    """The policy ids in an OAuth ``access_denied`` description
    ("denied by a, b (...)"): the token endpoint's error form has no member
    for them."""
    m = _DENIED_BY.search(text)
    if not m:
        return []
    return [p.strip() for p in m.group(1).split(",") if p.strip()]


_NOT_ACTIVE = re.compile(r"task is not active \((\w+)\)")


def error_from(r: Any, *, attesting: bool = False, task_id: str | None = None) -> WritError:
    """The typed error for a refusal from writ (broker or gateway); ``r`` is
    an ``httpx``, ``httpx2`` or ``requests`` response."""
    body = _json(r)
    status = int(r.status_code)
    # RFC 6749 form (/oauth2/*) or RFC 9457 problem details (everything else).
    code = body.get("error") if isinstance(body.get("error"), str) else None
    detail = str(body.get("error_description") or body.get("detail") or body.get("title")
                 or getattr(r, "reason_phrase", None) or getattr(r, "reason", "") or status)
    www = r.headers.get("www-authenticate") or ""
    if code in ("invalid_dpop_proof", "use_dpop_nonce") or 'DPoP error="invalid_dpop_proof"' in www \
            or 'error="use_dpop_nonce"' in www:
        return DpopError(detail, status=status, code=code or "invalid_dpop_proof")
    if "quarantined" in detail and status in (400, 401, 403):
        return Quarantined(detail, status=status, code=code)
    if attesting and status in (400, 401, 403):
        return AttestationFailed(detail, status=status, code=code)
    if body.get("approval_id") and status == 403:
        return PendingApproval(detail, approval_id=str(body["approval_id"]))
    if code == "access_denied" or body.get("determining_policies") or body.get("policy_version") \
            or (status == 403 and detail.startswith("denied")):
        policies = body.get("determining_policies") or _policies_from(detail)
        return Denied(detail, determining_policies=list(policies), policy_version=body.get("policy_version"),
                      status=status, code=code)
    if status == 403 and detail.startswith("approval "):
        # A task start a person denied (or let expire).
        return TaskEnded(detail, task_id=task_id, task_status="denied" if "denied" in detail else "expired",
                         reason=detail, status=status)
    if code == "invalid_scope":
        return InvalidScope(detail, status=status, code=code)
    if code == "invalid_target":
        return InvalidTarget(detail, status=status, code=code)
    m = _NOT_ACTIVE.search(detail)
    if m:
        return TaskEnded(detail, task_id=task_id, task_status=m.group(1), status=status)
    if code == "invalid_grant" and ("ended" in detail or "active" in detail or "revoked" in detail):
        return Unauthenticated(detail, status=status, code=code)
    if status == 401:
        return Unauthenticated(detail, status=status, code=code or "invalid_token")
    return WritError(detail, status=status, code=code or body.get("title"))


def raise_for_writ(response: Any) -> Any:
    """Raises the typed error for a refusal by writ or its gateway (an
    ``httpx``, ``httpx2`` or ``requests`` response with a status of 400 or
    more): :class:`Denied` with the deciding policies, :class:`PendingApproval`
    for a call held for a person, ...; returns the response otherwise."""
    if int(response.status_code) >= 400:
        raise error_from(response)
    return response


class Broker:
    """One connection to writ's API: every request carries a fresh proof by
    the instance key, with the server's nonce once it sent one."""

    def __init__(self, base_url: str, key: InstanceKey, http: httpx2.AsyncClient | None, timeout: float) -> None:
        self.base = base_url.rstrip("/")
        self.key = key
        self._own = http is None
        self.http = http or httpx2.AsyncClient(timeout=timeout)
        self.nonces = Nonces()

    def url(self, path: str) -> str:
        return self.base + path

    async def send(self, method: str, path: str, *, token: str | None = None, json: Any = None,
                   form: dict[str, str] | None = None, prove: bool = True) -> httpx2.Response:
        """``token`` goes in ``Authorization: DPoP`` (with ``ath`` in the
        proof); without one, the proof still shows the key (attestation,
        the token endpoint). One retry when the server asks for a nonce."""
        url = self.url(path)
        r: httpx2.Response | None = None
        for _ in range(2):
            headers: dict[str, str] = {}
            if token is not None:
                headers["Authorization"] = f"DPoP {token}"
            if prove:
                headers["DPoP"] = self.key.proof(method, url, token, self.nonces.get(url))
            r = await self.http.request(method, url, headers=headers, json=json, data=form)
            self.nonces.update(url, r.headers)
            if not (prove and wants_nonce(r.status_code, r.headers, _json(r) if r.status_code == 400 else None)):
                return r
        assert r is not None
        return r

    async def get_json(self, path: str) -> dict[str, Any]:
        r = await self.http.get(self.url(path))
        if r.status_code != 200:
            raise error_from(r)
        return _json(r)

    async def aclose(self) -> None:
        if self._own:
            await self.http.aclose()


def body_of(r: httpx2.Response) -> dict[str, Any]:
    return _json(r)
