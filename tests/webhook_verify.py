"""Verifies webhook requests with the Standard Webhooks reference library (PyPI
`standardwebhooks`), independently of ringcast's own signing and of the test's HMAC.

Usage: webhook_verify.py REQUESTS_JSON SECRET
REQUESTS_JSON holds a list of {"id", "timestamp", "signature", "body_base64"}. Prints the number
verified; exits 1 naming the first request that fails.
"""

import base64
import json
import sys

from standardwebhooks import Webhook


def main() -> int:
    path, secret = sys.argv[1], sys.argv[2]
    with open(path, encoding="utf-8") as file:
        requests = json.load(file)
    webhook = Webhook(secret)
    for request in requests:
        body = base64.b64decode(request["body_base64"])
        headers = {
            "webhook-id": request["id"],
            "webhook-timestamp": request["timestamp"],
            "webhook-signature": request["signature"],
        }
        try:
            webhook.verify(body, headers)
        except Exception as error:  # the library raises its own WebhookVerificationError
            print(f"request {request['id']} failed verification: {error!r}", file=sys.stderr)
            return 1
    print(len(requests))
    return 0


if __name__ == "__main__":
    sys.exit(main())
