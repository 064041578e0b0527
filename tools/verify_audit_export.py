#!/usr/bin/env python3
"""Verifies a strongroom audit export without strongroom.

An independent implementation, from the specifications only: RFC 6962 Merkle tree hashes,
the C2SP signed-note and checkpoint formats, Ed25519 (via the `cryptography` package), and the
leaf encoding of docs/audit-log.md. Usage:

    verify_audit_export.py EXPORT_DIR [--public-key "name+id+key"]

EXPORT_DIR holds entries.jsonl, checkpoints.jsonl and public-key.txt (as written by
`strongroom audit export`). Pass the public key obtained out of band with --public-key: the copy
in the export is only as trustworthy as the export. Exit 0 when every entry is in sequence, every
checkpoint's signature verifies, and every checkpoint's root equals the root recomputed from the
entries; otherwise exit 1 naming the first problem.
"""
import base64
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def mth(hashes):
    """RFC 6962 2.1: MTH of a list of leaf hashes, by its recursive definition."""
    n = len(hashes)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashes[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(mth(hashes[:k]), mth(hashes[k:]))


def parse_verifier_key(text: str):
    name, key_id_hex, key_b64 = text.strip().split("+", 2)
    raw = base64.b64decode(key_b64)
    if raw[0] != 0x01 or len(raw) != 33:
        raise ValueError("not an Ed25519 verifier key")
    key_id = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if key_id.hex() != key_id_hex:
        raise ValueError("key id does not match the key")
    return name, key_id, Ed25519PublicKey.from_public_bytes(raw[1:])


def open_note(note: str, name: str, key_id: bytes, key):
    text, sigs = note.split("\n\n", 1)
    text += "\n"
    verified = False
    for line in sigs.rstrip("\n").split("\n"):
        if not line.startswith("\u2014 "):
            raise ValueError("malformed signature line")
        sig_name, sig_b64 = line[2:].split(" ", 1)
        sig = base64.b64decode(sig_b64)
        if sig_name != name or sig[:4] != key_id:
            continue
        key.verify(sig[4:], text.encode())  # raises InvalidSignature
        verified = True
    if not verified:
        raise ValueError("not signed by the expected key")
    origin, size, root = text.rstrip("\n").split("\n")
    if origin != name:
        raise ValueError("origin differs from the key name")
    return int(size), base64.b64decode(root)


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    directory = argv[1]
    public_key = open(f"{directory}/public-key.txt").read()
    if "--public-key" in argv:
        public_key = argv[argv.index("--public-key") + 1]
    name, key_id, key = parse_verifier_key(public_key)

    leaves = []
    with open(f"{directory}/entries.jsonl") as entries:
        for expected, line in enumerate(entries):
            record = json.loads(line)
            leaf = base64.b64decode(record["leaf"])
            entry = json.loads(leaf)
            if record["index"] != expected or entry.get("seq") != expected:
                print(f"FAIL: entry {expected}: out of sequence (row {record['index']}, leaf seq {entry.get('seq')})")
                return 1
            leaves.append(leaf_hash(leaf))

    checkpoints = 0
    with open(f"{directory}/checkpoints.jsonl") as lines:
        for line in lines:
            record = json.loads(line)
            try:
                size, root = open_note(record["note"], name, key_id, key)
            except (InvalidSignature, ValueError) as err:
                print(f"FAIL: checkpoint of size {record['size']}: {err or 'bad signature'}")
                return 1
            if size != record["size"]:
                print(f"FAIL: checkpoint of size {record['size']}: the note says {size}")
                return 1
            if size > len(leaves):
                print(f"FAIL: checkpoint covers {size} entries but the export has {len(leaves)}")
                return 1
            if mth(leaves[:size]) != root:
                print(f"FAIL: checkpoint of size {size}: root does not match the entries")
                return 1
            checkpoints += 1
    print(f"OK: {len(leaves)} entries in sequence, {checkpoints} checkpoints signed by {name} and matching the entries")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
