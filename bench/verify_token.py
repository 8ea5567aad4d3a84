"""Verifies a JWT against a JWKS URL with `cryptography` (an outside
library): bench/issuance.sh checks one token from each server it measures.

    verify_token.py JWKS_URL TOKEN
"""
import base64
import json
import sys
import urllib.request

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


def b64(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def main(jwks_url, token):
    head, body, sig = token.split(".")
    header = json.loads(b64(head))
    keys = json.load(urllib.request.urlopen(jwks_url))["keys"]
    key = next(k for k in keys if k.get("kid") == header["kid"])
    signing_input = f"{head}.{body}".encode()
    if key["kty"] == "OKP":
        ed25519.Ed25519PublicKey.from_public_bytes(b64(key["x"])).verify(b64(sig), signing_input)
    else:
        pub = ec.EllipticCurvePublicNumbers(
            int.from_bytes(b64(key["x"]), "big"), int.from_bytes(b64(key["y"]), "big"), ec.SECP256R1()
        ).public_key()
        raw = b64(sig)
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        pub.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
    print(f"{header['alg']} {len(token)} bytes, verified")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
