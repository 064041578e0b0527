"""A software WebAuthn authenticator acting as a synced passkey, for black-box tests (independent of
our code: the WebAuthn structures come from python-fido2, the keys and signatures from
cryptography). It holds one ES256 credential per state file and runs the client (browser) side too.

    python passkey_authenticator.py create --state FILE --origin ORIGIN [--no-uv]
    python passkey_authenticator.py get --state FILE --origin ORIGIN [--no-uv] [--tamper]

create reads webauthn-rs's CreationChallengeResponse on stdin, makes a new credential for rp.id,
saves it to FILE (JSON, with the private key as PEM) and prints a RegisterPublicKeyCredential:
attestation "none"; flags UP, UV (not with --no-uv), BE, BS and AT; sign counter 0.
get reads a RequestChallengeResponse, adds 1 to the stored counter and prints a PublicKeyCredential
whose userHandle is the user.id given at create (an empty allowCredentials is a discoverable login);
--tamper flips one bit of the signature. All bytes are base64url without padding; the
clientDataJSON is compact, as browsers write it, with crossOrigin false.

Exit codes: 0 done; 2 bad arguments or input; 3 the authenticator refuses, as a real one would: no
stored credential for this rpId or allowCredentials, ES256 not offered, or the stored credential
is in excludeCredentials (a second registration for the same account needs another state file).
"""
import argparse
import base64
import json
import os
import sys
import tempfile

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fido2.cose import ES256
from fido2.utils import sha256
from fido2.webauthn import (AttestationObject, AttestedCredentialData, AuthenticatorData,
                            CollectedClientData)

F = AuthenticatorData.FLAG
AAGUID = bytes(16)  # all zero, as "none" attestation reports it


class Refused(Exception):
    """The authenticator declines the request (exit 3)."""


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(text: str) -> bytes:
    """Base64url with or without padding (standard base64's +/ also accepted)."""
    text = text.strip().rstrip("=").replace("+", "-").replace("/", "_")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def flags(uv: bool) -> "AuthenticatorData.FLAG":
    f = F.UP | F.BE | F.BS  # a synced passkey: backup eligible and backed up
    return f | F.UV if uv else f


def load_state(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def save_state(path: str, state: dict) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".passkey-")
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=2)
    os.replace(tmp, path)


def options(doc: dict) -> dict:
    return doc["publicKey"] if "publicKey" in doc else doc


def create(opts: dict, state_path: str, origin: str, uv: bool) -> dict:
    rp_id = opts["rp"]["id"]
    if not any(p.get("type") == "public-key" and p.get("alg") == ES256.ALGORITHM
               for p in opts["pubKeyCredParams"]):
        raise Refused("ES256 (alg -7) is not among pubKeyCredParams")
    if os.path.exists(state_path):
        old = load_state(state_path)
        excluded = {b64d(c["id"]) for c in opts.get("excludeCredentials") or []}
        if old["rp_id"] == rp_id and b64d(old["credential_id"]) in excluded:
            raise Refused("this authenticator's credential is in excludeCredentials")

    key = ec.generate_private_key(ec.SECP256R1())
    cred_id = os.urandom(32)
    cred_data = AttestedCredentialData.create(
        AAGUID, cred_id, ES256.from_cryptography_key(key.public_key()))
    auth_data = AuthenticatorData.create(sha256(rp_id.encode()), flags(uv) | F.AT, 0, cred_data)
    attestation = AttestationObject.create("none", auth_data, {})
    client_data = CollectedClientData.create(
        CollectedClientData.TYPE.CREATE, b64d(opts["challenge"]), origin, cross_origin=False)

    save_state(state_path, {
        "rp_id": rp_id,
        "credential_id": b64e(cred_id),
        "user_handle": b64e(b64d(opts["user"]["id"])),
        "user_name": opts["user"].get("name"),
        "sign_count": 0,
        "private_key_pem": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode(),
    })
    return {
        "id": b64e(cred_id),
        "rawId": b64e(cred_id),
        "type": "public-key",
        "response": {
            "attestationObject": b64e(attestation),
            "clientDataJSON": b64e(client_data),
        },
        "extensions": {},
    }


def get(opts: dict, state_path: str, origin: str, uv: bool, tamper: bool) -> dict:
    if not os.path.exists(state_path):
        raise Refused(f"no credential: state file {state_path} does not exist")
    state = load_state(state_path)
    rp_id = opts["rpId"]
    if rp_id != state["rp_id"]:
        raise Refused(f"no credential for rpId {rp_id!r} (this one is for {state['rp_id']!r})")
    cred_id = b64d(state["credential_id"])
    allowed = [b64d(c["id"]) for c in opts.get("allowCredentials") or []]
    if allowed and cred_id not in allowed:
        raise Refused("the stored credential is not in allowCredentials")

    state["sign_count"] += 1
    auth_data = AuthenticatorData.create(sha256(rp_id.encode()), flags(uv), state["sign_count"])
    client_data = CollectedClientData.create(
        CollectedClientData.TYPE.GET, b64d(opts["challenge"]), origin, cross_origin=False)
    key = serialization.load_pem_private_key(state["private_key_pem"].encode(), password=None)
    signature = bytearray(key.sign(bytes(auth_data) + client_data.hash, ec.ECDSA(hashes.SHA256())))
    if tamper:
        signature[-1] ^= 0x01  # the low bit of s: still well-formed DER, no longer valid
    save_state(state_path, state)
    return {
        "id": b64e(cred_id),
        "rawId": b64e(cred_id),
        "type": "public-key",
        "response": {
            "authenticatorData": b64e(auth_data),
            "clientDataJSON": b64e(client_data),
            "signature": b64e(bytes(signature)),
            "userHandle": state["user_handle"],
        },
        "extensions": {},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("create", "get"):
        p = sub.add_parser(name)
        p.add_argument("--state", required=True, help="JSON file holding the credential")
        p.add_argument("--origin", required=True, help="origin put in clientDataJSON")
        p.add_argument("--no-uv", action="store_true", help="clear the UV (user verified) flag")
        if name == "get":
            p.add_argument("--tamper", action="store_true", help="flip one bit of the signature")
    args = parser.parse_args()
    try:
        opts = options(json.load(sys.stdin))
    except (ValueError, AttributeError) as e:
        print(f"bad input: {e}", file=sys.stderr)
        return 2
    try:
        if args.command == "create":
            out = create(opts, args.state, args.origin, not args.no_uv)
        else:
            out = get(opts, args.state, args.origin, not args.no_uv, args.tamper)
    except Refused as e:
        print(f"refused: {e}", file=sys.stderr)
        return 3
    except (KeyError, TypeError, ValueError) as e:
        print(f"bad input: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
