"""Verifies webhooks with the `standardwebhooks` package, the reference implementation of the
Standard Webhooks specification (an independent check of strongroom's signatures).

Reads a JSON document from standard input: {"secret": "whsec_...", "deliveries": [{"headers":
{...}, "body": "..."}]} and prints one line per delivery: "ok" or "bad: <reason>".
"""
import json
import sys

from standardwebhooks.webhooks import Webhook


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0
    request = json.load(sys.stdin)
    webhook = Webhook(request["secret"])
    for delivery in request["deliveries"]:
        try:
            webhook.verify(delivery["body"], delivery["headers"])
            print("ok")
        except Exception as err:  # noqa: BLE001 - the reason is the test's output
            print(f"bad: {type(err).__name__}: {err}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
