"""The independent signer of the authentication tests: keys and JWTs made with PyJWT and
cryptography, never with the crate under test.

    tokens.py DIRECTORY < spec.json > tokens.json

On first use in DIRECTORY it writes an HS256 secret (hs256.secret) and the PEM key pairs of
RS256 (rsa), ES256 (ec) and EdDSA (ed): NAME.private.pem and NAME.public.pem, plus a second
"wrong" pair of each kind and a wrong secret. The spec on stdin is {"NAME": TOKEN_SPEC, ...};
the answer on stdout {"NAME": "token", ...}. A TOKEN_SPEC:

    {"key": "hs256" | "rsa" | "ec" | "ed" | "wrong_hs256" | "wrong_rsa" | "wrong_ec" |
            "wrong_ed" | "none" | "hs256_with_rsa_public",
     "claims": {...},              # copied; exp_in / nbf_in / iat_in (seconds) are made
                                   # absolute (exp = now + exp_in)
     "tamper": {...}}              # optional: claims swapped in after signing
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ALGORITHMS = {"hs256": "HS256", "rsa": "RS256", "ec": "ES256", "ed": "EdDSA"}


def private_key(kind):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def write_keys(directory):
    os.makedirs(directory, exist_ok=True)
    for prefix in ("", "wrong_"):
        secret_path = os.path.join(directory, prefix + "hs256.secret")
        if not os.path.exists(secret_path):
            with open(secret_path, "w") as file:
                file.write(base64.urlsafe_b64encode(os.urandom(48)).decode() + "\n")
        for kind in ("rsa", "ec", "ed"):
            public_path = os.path.join(directory, prefix + kind + ".public.pem")
            if os.path.exists(public_path):
                continue
            key = private_key(kind)
            private_pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            public_pem = key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            with open(os.path.join(directory, prefix + kind + ".private.pem"), "wb") as file:
                file.write(private_pem)
            with open(public_path, "wb") as file:
                file.write(public_pem)


def read(directory, name):
    with open(os.path.join(directory, name), "rb") as file:
        return file.read()


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header, claims):
    return b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())


def absolute(claims):
    now = time.time()
    claims = dict(claims)
    for relative, absolute_name in (("exp_in", "exp"), ("nbf_in", "nbf"), ("iat_in", "iat")):
        if relative in claims:
            claims[absolute_name] = int(now + claims.pop(relative))
    return claims


def sign(directory, spec):
    claims = absolute(spec.get("claims", {}))
    key = spec["key"]
    if key == "none":
        token = jwt.encode(claims, None, algorithm="none")
    elif key == "hs256_with_rsa_public":
        # Algorithm confusion: HMAC keyed with the server's public key, which PyJWT refuses
        # to do, so the signature is made here by hand.
        message = unsigned({"alg": "HS256", "typ": "JWT"}, claims)
        secret = read(directory, "rsa.public.pem")
        signature = hmac.new(secret, message.encode(), hashlib.sha256).digest()
        token = message + "." + b64(signature)
    elif key.removeprefix("wrong_") == "hs256":
        secret = read(directory, key + ".secret").rstrip(b"\n")
        token = jwt.encode(claims, secret, algorithm="HS256")
    else:
        kind = key.removeprefix("wrong_")
        pem = read(directory, key + ".private.pem")
        token = jwt.encode(claims, pem, algorithm=ALGORITHMS[kind])
    if "tamper" in spec:
        header, _, signature = token.split(".")
        payload = b64(json.dumps(absolute(spec["tamper"])).encode())
        token = header + "." + payload + "." + signature
    return token


def main():
    directory = sys.argv[1]
    write_keys(directory)
    specs = json.load(sys.stdin)
    json.dump({name: sign(directory, spec) for name, spec in specs.items()}, sys.stdout)


if __name__ == "__main__":
    main()
