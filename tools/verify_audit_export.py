#!/usr/bin/env python3
"""Verifies a strongroom audit export without strongroom.

An independent implementation, from the specifications only: RFC 6962 Merkle tree hashes,
the C2SP signed-note and checkpoint formats, Ed25519 (via the `cryptography` package), and the
leaf encoding of docs/audit-log.md.

EXPORT_DIR holds entries.jsonl, checkpoints.jsonl and public-key.txt (as written by
`strongroom audit export`). Pass the public key obtained out of band with --public-key: the copy
in the export is only as trustworthy as the export. Exit 0 when every entry is in sequence and
matches its exported leaf hash, every checkpoint's signature verifies, and every checkpoint's root
equals the root recomputed from the entries; otherwise exit 1 naming the first problem, as
`strongroom audit verify` does: the entry, when the export shows which one, or else the range of
entries under the first checkpoint whose root does not match.
"""
import argparse
import base64
import binascii
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


class Problem(Exception):
    """The first thing found wrong with the export."""


def leaf_seq(leaf: bytes):
    """The `seq` a leaf states about itself, or None when it is not a valid entry."""
    try:
        seq = json.loads(leaf).get("seq")
    except (ValueError, AttributeError):
        return None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def read_entries(path):
    """Every entry's leaf hash, in order; raises Problem at the first entry out of sequence or
    not matching its exported leaf hash."""
    hashes = []
    with open(path, encoding="utf-8") as entries:
        for expected, line in enumerate(entries):
            try:
                record = json.loads(line)
                index = record["index"]
                leaf = base64.b64decode(record["leaf"], validate=True)
                exported = record.get("leaf_hash")
                exported = None if exported is None else base64.b64decode(exported, validate=True)
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise Problem(f"entry {expected}: line {expected + 1} of entries.jsonl is not a valid record") from None
            if index != expected:
                raise Problem(
                    f"entry {expected}: expected entry {expected}, found entry {index} next (removed, inserted or reordered)"
                )
            claimed = leaf_seq(leaf)
            if claimed != expected:
                detail = "its leaf is not a valid entry" if claimed is None else f"its leaf says it is entry {claimed}"
                raise Problem(f"entry {expected}: {detail} (removed, inserted or reordered)")
            hashed = leaf_hash(leaf)
            if exported is not None and exported != hashed:
                raise Problem(f"entry {expected} was changed: its leaf does not match the exported leaf hash")
            hashes.append(hashed)
    return hashes


def read_checkpoints(path, name, key_id, key):
    """Every checkpoint as (size, root), smallest first; raises Problem at one that does not verify."""
    checkpoints = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
                stored_size, note = record["size"], record["note"]
            except (ValueError, KeyError, TypeError):
                raise Problem(f"line {number} of checkpoints.jsonl is not a valid record") from None
            try:
                size, root = open_note(note, name, key_id, key)
            except InvalidSignature:
                raise Problem(f"checkpoint of size {stored_size} is not valid: bad signature") from None
            except (ValueError, binascii.Error) as err:
                raise Problem(f"checkpoint of size {stored_size} is not valid: {err}") from None
            if size != stored_size:
                raise Problem(f"checkpoint of size {stored_size} is not valid: the signed note says {size}")
            checkpoints.append((size, root))
    return sorted(checkpoints, key=lambda checkpoint: checkpoint[0])


def verify(directory, public_key):
    """Returns the success line; raises Problem naming the first problem."""
    if public_key is None:
        with open(f"{directory}/public-key.txt", encoding="utf-8") as file:
            public_key = file.read()
    try:
        name, key_id, key = parse_verifier_key(public_key)
    except (ValueError, IndexError, binascii.Error) as err:
        raise Problem(f"the public key is not valid: {err or 'expected name+id+key'}") from None
    checkpoints = read_checkpoints(f"{directory}/checkpoints.jsonl", name, key_id, key)
    leaves = read_entries(f"{directory}/entries.jsonl")
    confirmed = 0
    for size, root in checkpoints:
        if size > len(leaves):
            raise Problem(
                f"the export has {len(leaves)} entries but a signed checkpoint covers {size}: entries were removed"
            )
        if mth(leaves[:size]) != root:
            raise Problem(
                f"the signed root of the checkpoint of size {size} does not match the entries: an entry at index "
                f"{confirmed}..{size} was changed, removed, inserted or reordered"
            )
        confirmed = size
    return (
        f"OK: {len(leaves)} entries in sequence, {len(checkpoints)} checkpoints signed by {name} and matching the entries"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="verify_audit_export.py",
        description="Verifies a strongroom audit export (written by `strongroom audit export --out DIR`) "
        "without strongroom. Exit 0 when it holds, 1 naming the first problem.",
    )
    parser.add_argument("export_dir", metavar="EXPORT_DIR", help="holds entries.jsonl, checkpoints.jsonl and public-key.txt")
    parser.add_argument(
        "--public-key",
        metavar="KEY",
        help="the checkpoint verifier key (name+id+key, from `strongroom audit public-key`), obtained out of band; "
        "default: the export's public-key.txt, which is only as trustworthy as the export",
    )
    args = parser.parse_args(argv)
    try:
        print(verify(args.export_dir, args.public_key))
    except Problem as problem:
        print(f"FAIL: {problem}")
        return 1
    except OSError as err:
        print(f"FAIL: cannot read the export: {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
