"""The instance key: the private half never leaves this process.

Every token writ issues to the instance is bound to this key (``cnf.jkt``)
and presented with a fresh DPoP proof (RFC 9449) signed by it. Proofs are
signed by PyJWT; keys come from ``cryptography``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

Algorithm = Literal["EdDSA", "ES256"]

_REQUIRED = {"OKP": ("crv", "kty", "x"), "EC": ("crv", "kty", "x", "y")}


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def access_token_hash(token: str) -> str:
    """``ath`` (RFC 9449 §4.2): base64url of the token's SHA-256."""
    return b64url(hashlib.sha256(token.encode()).digest())


# An Ed25519 PKCS#8 v2 (RFC 5958 OneAsymmetricKey: version 1, with the public
# key), as `writ dpop keygen` writes it; `cryptography` reads only v1.
_ED25519_V2 = bytes.fromhex("3051020101300506032b657004220420")


def _ed25519_v2(pem: bytes) -> ed25519.Ed25519PrivateKey:
    body = b"".join(line.strip() for line in pem.splitlines() if line and not line.startswith(b"-----"))
    raw = base64.b64decode(body)
    if len(raw) != 83 or not raw.startswith(_ED25519_V2) or raw[48:51] != bytes.fromhex("812100"):
        raise ValueError("not a PKCS#8 private key this SDK reads (Ed25519 or P-256)")
    key = ed25519.Ed25519PrivateKey.from_private_bytes(raw[16:48])
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if public != raw[51:]:
        raise ValueError("the key file's public key does not match its private key")
    return key


class InstanceKey:
    """An Ed25519 (``EdDSA``, the default) or P-256 (``ES256``) key.

    ``InstanceKey.generate()`` makes one in memory; ``InstanceKey.from_file(path)``
    loads a PKCS#8 PEM file (as ``writ dpop keygen`` writes) and, with
    ``create=True``, makes it (mode 0600) when it does not exist yet.
    """

    def __init__(self, private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> None:
        if isinstance(private, ed25519.Ed25519PrivateKey):
            self.alg: Algorithm = "EdDSA"
        elif isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(private.curve, ec.SECP256R1):
            self.alg = "ES256"
        else:
            raise ValueError("an instance key is Ed25519 or P-256")
        self._private = private
        algo = jwt.algorithms.get_default_algorithms()[self.alg]
        self._jwk: dict[str, Any] = json.loads(algo.to_jwk(private.public_key()))
        for k in ("kid", "alg", "use", "key_ops", "d"):
            self._jwk.pop(k, None)

    @classmethod
    def generate(cls, alg: Algorithm = "EdDSA") -> InstanceKey:
        if alg == "EdDSA":
            return cls(ed25519.Ed25519PrivateKey.generate())
        if alg == "ES256":
            return cls(ec.generate_private_key(ec.SECP256R1()))
        raise ValueError(f"unsupported algorithm {alg!r}: EdDSA or ES256")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, create: bool = False, alg: Algorithm = "EdDSA") -> InstanceKey:
        p = Path(path)
        if not p.exists():
            if not create:
                raise FileNotFoundError(f"no instance key at {p}")
            key = cls.generate(alg)
            pem = key._private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption())
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
            return key
        pem = p.read_bytes()
        try:
            private = serialization.load_pem_private_key(pem, password=None)
        except ValueError:
            private = _ed25519_v2(pem)
        if not isinstance(private, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey)):
            raise ValueError(f"{p}: an instance key is Ed25519 or P-256")
        return cls(private)

    @property
    def public_jwk(self) -> dict[str, Any]:
        """The public key as a JWK (no private member)."""
        return dict(self._jwk)

    @property
    def thumbprint(self) -> str:
        """RFC 7638 SHA-256 thumbprint: what writ puts in ``cnf.jkt``."""
        members = {k: self._jwk[k] for k in _REQUIRED[self._jwk["kty"]]}
        canonical = json.dumps(members, sort_keys=True, separators=(",", ":"))
        return b64url(hashlib.sha256(canonical.encode()).digest())

    def proof(self, method: str, url: str, access_token: str | None = None, nonce: str | None = None) -> str:
        """A fresh DPoP proof for ``method url`` (the URL without query or
        fragment), with ``ath`` when it goes with ``access_token`` and the
        server's ``nonce`` when it asked for one."""
        htu = url.split("#", 1)[0].split("?", 1)[0]
        claims: dict[str, Any] = {"jti": uuid.uuid4().hex, "htm": method.upper(), "htu": htu,
                                  "iat": int(time.time())}
        if access_token is not None:
            claims["ath"] = access_token_hash(access_token)
        if nonce is not None:
            claims["nonce"] = nonce
        return jwt.encode(claims, self._private, algorithm=self.alg,
                          headers={"typ": "dpop+jwt", "jwk": self.public_jwk})

    def __repr__(self) -> str:
        return f"InstanceKey({self.alg}, jkt={self.thumbprint})"
