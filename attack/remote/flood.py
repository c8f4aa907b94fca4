"""The flood client of the `flood` drill: it runs on the controller, inside a network namespace of its own
on histo-br0 (attack/availability.py), with the controller's Python. It reads one JSON line from stdin
(url, ca, the two source addresses a and b, the uploader token, how many uploads n and m), posts n
uploads with a forged token from a and m uploads of garbage with the valid token from b, and prints the
answers as one JSON line: {"forged": [...], "principal": [...]}."""
from __future__ import annotations

import http.client
import json
import ssl
import sys

BOUNDARY = "drillflood"
BODY = ("--%s\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\nContent-Type: image/png\r\n\r\n"
        "not an image\r\n--%s--\r\n" % (BOUNDARY, BOUNDARY)).encode()
CTYPE = "multipart/form-data; boundary=" + BOUNDARY


def post(host: str, ctx: ssl.SSLContext, src: str, token: str) -> int | str:
    c = http.client.HTTPSConnection(host, 443, context=ctx, source_address=(src, 0), timeout=15)
    try:
        c.request("POST", "/api/v1/jobs", body=BODY,
                  headers={"Authorization": "Bearer " + token, "Content-Type": CTYPE})
        r = c.getresponse()
        r.read()
        return r.status
    except OSError as e:
        return type(e).__name__
    finally:
        c.close()


def main() -> None:
    p = json.loads(sys.stdin.readline())
    ctx = ssl.create_default_context(cafile=p["ca"])
    host = p["url"].split("//")[1]
    out = {"forged": [post(host, ctx, p["a"], "flood.of.garbage") for _ in range(p["n"])],
           "principal": [post(host, ctx, p["b"], p["token"]) for _ in range(p["m"])]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
