"""Checks a message's DKIM signature with dkimpy, answering the key lookup with the public key
given (no DNS): prints "valid" or "invalid".

    python dkim_check.py MESSAGE_FILE PUBLIC_KEY_BASE64
"""
import sys

import dkim

message = open(sys.argv[1], "rb").read()
record = ("v=DKIM1; k=rsa; p=" + sys.argv[2]).encode()
print("valid" if dkim.verify(message, dnsfunc=lambda name, timeout=5: record) else "invalid")
