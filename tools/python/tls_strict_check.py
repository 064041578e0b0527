"""Connects to a TLS server with Python's ssl module verifying strictly (VERIFY_X509_STRICT, as
Python 3.13 does by default, and VERIFY_X509_PARTIAL_CHAIN), trusting only the CA file given, and
offering h2 and http/1.1 by ALPN. For each server name given, prints one JSON line:
{"name", "ok", "alpn", "version", "error"}; with "ok" true it then sends GET /healthz over
HTTP/1.1 on a new connection and adds its status line as "http".

    python tls_strict_check.py PORT CA_FILE NAME...
"""
import json
import socket
import ssl
import sys

port, ca_file, names = int(sys.argv[1]), sys.argv[2], sys.argv[3:]


def context(alpn):
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT | getattr(ssl, "VERIFY_X509_PARTIAL_CHAIN", 0)
    ctx.set_alpn_protocols(alpn)
    return ctx


for name in names:
    result = {"name": name, "ok": False}
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            with context(["h2", "http/1.1"]).wrap_socket(sock, server_hostname=name) as tls:
                result.update(ok=True, alpn=tls.selected_alpn_protocol(), version=tls.version())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            with context(["http/1.1"]).wrap_socket(sock, server_hostname=name) as tls:
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: " + name.encode() + b"\r\nConnection: close\r\n\r\n")
                result["http"] = tls.recv(4096).split(b"\r\n", 1)[0].decode()
    except (ssl.SSLError, OSError) as error:
        result["error"] = str(error)
    print(json.dumps(result), flush=True)
