"""Checks a message's DKIM signature with dkimpy, answering the key lookup with the public key
given (no DNS): prints "valid" or "invalid", and the signature's algorithm (a=).

    python dkim_check.py MESSAGE_FILE PUBLIC_KEY_BASE64 [rsa|ed25519]
"""
import re
import sys

import dkim

message = open(sys.argv[1], "rb").read()
key_type = sys.argv[3] if len(sys.argv) > 3 else "rsa"
record = ("v=DKIM1; k=" + key_type + "; p=" + sys.argv[2]).encode()
valid = dkim.verify(message, dnsfunc=lambda name, timeout=5: record)
algorithm = re.search(rb"\ba=([a-z0-9-]+)", message)
print("valid" if valid else "invalid", algorithm.group(1).decode() if algorithm else "none")
