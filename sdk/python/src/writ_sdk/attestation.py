"""How an instance proves what it is to writ (``POST /v1/attest``).

Give a :class:`~writ_sdk.Client` one of these. Each is asked for a fresh
credential whenever the client attests: at first, and again when the
instance token nears its expiry.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from pathlib import Path
from typing import Awaitable, Callable, Union

Source = Union[str, Callable[[], Union[str, Awaitable[str]]]]


async def _resolve(source: Source) -> str:
    if isinstance(source, str):
        return source
    out = source()
    if inspect.isawaitable(out):
        out = await out
    if not isinstance(out, str):
        raise TypeError("an attestation callback must return the credential as a string")
    return out.strip()


class Attestation:
    """Base of the attestation methods."""

    #: The member of the attestation request that carries the credential.
    field: str = ""

    async def credential(self, issuer: str) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


class JoinToken(Attestation):
    """A one-time join token (``writ agent join-token NAME``), or a callable
    that returns a fresh one each time the client attests (a join token
    works once: without a callable, re-attestation is impossible and the
    client stops when its instance token expires)."""

    field = "join_token"

    def __init__(self, token: Source) -> None:
        self._source = token

    @property
    def reusable(self) -> bool:
        return not isinstance(self._source, str)

    async def credential(self, issuer: str) -> str:
        return await _resolve(self._source)


class OidcToken(Attestation):
    """An OIDC identity token from a trusted issuer: read from ``path`` on
    every attestation (a Kubernetes projected service-account token, which
    the kubelet rotates), or returned by ``callback`` (sync or async; a CI
    system's token endpoint, say)."""

    field = "oidc_token"

    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 callback: Callable[[], str | Awaitable[str]] | None = None) -> None:
        if (path is None) == (callback is None):
            raise ValueError("give a token file or a callback, one of them")
        self._path = Path(path) if path is not None else None
        self._callback = callback

    async def credential(self, issuer: str) -> str:
        if self._path is not None:
            return (await asyncio.to_thread(self._path.read_text)).strip()
        assert self._callback is not None
        return await _resolve(self._callback)


class SpiffeJwtSvid(Attestation):
    """A SPIFFE JWT-SVID fetched from the Workload API (``writ node``, or
    SPIRE) with py-spiffe, for ``audience`` (writ's issuer by default).
    ``endpoint`` is the socket (``unix:///run/writ/agent.sock``); without
    it py-spiffe reads ``SPIFFE_ENDPOINT_SOCKET``.
    Needs the ``spiffe`` extra: ``pip install 'writ-sdk[spiffe]'``."""

    field = "jwt_svid"

    def __init__(self, endpoint: str | None = None, *, audience: str | None = None, timeout: float = 10) -> None:
        self._endpoint = endpoint
        self._audience = audience
        self._timeout = timeout

    def _fetch(self, audience: str) -> str:
        try:
            from spiffe import WorkloadApiClient
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError("SPIFFE attestation needs py-spiffe: pip install 'writ-sdk[spiffe]'") from e
        client = WorkloadApiClient(self._endpoint) if self._endpoint else WorkloadApiClient()
        try:
            svid = client.fetch_jwt_svid(audience={audience}, timeout=self._timeout)
            return str(svid.token)
        finally:
            client.close()

    async def credential(self, issuer: str) -> str:
        return await asyncio.to_thread(self._fetch, self._audience or issuer)
