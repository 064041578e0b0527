"""Makes a DKIM signing key for the tests: writes the private key to FILE in the form KIND names
and prints the public key as a DKIM DNS record's p= value (RSA: base64 of the DER
SubjectPublicKeyInfo; Ed25519: base64 of the raw 32-byte key, RFC 8463).

    python dkim_key.py KIND FILE

KIND: rsa-pkcs1 (PEM `BEGIN RSA PRIVATE KEY`), rsa-pkcs8 (PEM `BEGIN PRIVATE KEY`), ed25519-pkcs8
(PEM `BEGIN PRIVATE KEY`, as `openssl genpkey -algorithm ed25519` writes it) or ed25519-seed (the
base64 of the 32-byte seed, as dkimpy's `dknewkey --ktype ed25519` writes it).
"""
import base64
import os
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

kind, path = sys.argv[1], sys.argv[2]
pem, raw, none = serialization.Encoding.PEM, serialization.Encoding.Raw, serialization.NoEncryption()
if kind.startswith("rsa-"):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    form = serialization.PrivateFormat.TraditionalOpenSSL if kind == "rsa-pkcs1" else serialization.PrivateFormat.PKCS8
    private = key.private_bytes(pem, form, none)
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
elif kind.startswith("ed25519-"):
    key = ed25519.Ed25519PrivateKey.generate()
    if kind == "ed25519-pkcs8":
        private = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, none)
    else:
        private = base64.b64encode(key.private_bytes(raw, serialization.PrivateFormat.Raw, none)) + b"\n"
    public = key.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
else:
    sys.exit("unknown kind " + kind)
# Owner-only, as strongroom requires of a key file.
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
with os.fdopen(fd, "wb") as f:
    f.write(private)
print(base64.b64encode(public).decode())
