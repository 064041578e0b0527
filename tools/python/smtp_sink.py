"""A real SMTP server for tests (aiosmtpd): stores each message exactly as received, one file
per message, in the folder given, until its standard input closes.

    python smtp_sink.py PORT FOLDER
"""
import os
import sys
import time

from aiosmtpd.controller import Controller


class Store:
    async def handle_DATA(self, server, session, envelope):
        name = os.path.join(sys.argv[2], f"{time.time_ns()}.eml")
        with open(name + ".part", "wb") as f:
            f.write(envelope.original_content)
        os.rename(name + ".part", name)
        return "250 OK"


controller = Controller(Store(), hostname="127.0.0.1", port=int(sys.argv[1]))
controller.start()
print("ready", flush=True)
sys.stdin.read()
controller.stop()
