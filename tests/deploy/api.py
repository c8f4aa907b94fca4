"""The deployed cluster's public API as the operator meets it (stdlib only: the deploy virtualenv has
no imaging library and no histo package): requests with the env file's CA and tokens, a small PNG,
an upload, and the same readiness the operator's `make up` waits for (live members only)."""
from __future__ import annotations

import json
import shlex
import ssl
import struct
import time
import urllib.error
import urllib.request
import uuid
import zlib
from email.message import Message
from typing import Any, Callable

from attack.deployed import DeployedCluster, Machine


def png(width: int = 64, height: int = 48) -> bytes:
    """A small RGB gradient, built by hand."""
    raw = b"".join(b"\x00" + bytes(v for x in range(width) for v in ((x * 3) % 200 + 20, (y * 5) % 150 + 40, 90))
                   for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def request(cluster: DeployedCluster, method: str, path: str, token: str | None = None, body: bytes | None = None,
            headers: dict[str, str] | None = None, url: str | None = None,
            timeout: float = 30) -> tuple[int, bytes, Message]:
    ctx = ssl.create_default_context(cafile=cluster.env["HISTO_CA"])
    req = urllib.request.Request((url or cluster.env["HISTO_URL"]) + path, data=body, method=method,
                                 headers=headers or {})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:
            return resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers


def upload(cluster: DeployedCluster, token: str, image: bytes | None = None) -> tuple[int, bytes]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"t.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + (image or png()) + f"\r\n--{boundary}--\r\n".encode()
    status, raw, _h = request(cluster, "POST", "/api/v1/jobs", token, body,
                              {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    return status, raw


def wait_ready(cluster: DeployedCluster, timeout: float = 180) -> None:
    """What `make up` waits for before it returns: every master ready, counting every master and
    worker of the inventory as a live process, with a leader that answered it."""
    urls = cluster.env["HISTO_URLS"].split(",")
    want = (len(cluster.group("workers")), len(cluster.group("masters")))
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        ok = 0
        for url in urls:
            try:
                status, raw, _h = request(cluster, "GET", "/readyz", url=url, timeout=5)
                checks = json.loads(raw)["checks"]
                seen = (checks["workers"]["count"], checks["masters"]["count"])
                ok += status == 200 and seen == want
                last = f"{url}: {status} {seen}"
            except (OSError, ValueError, KeyError) as exc:
                last = f"{url}: {exc}"
        if ok == len(urls):
            return
        time.sleep(0.5)
    raise AssertionError(f"the cluster is not ready after {timeout:.0f}s ({last})")


def vault_read_without_token(cluster: DeployedCluster, machine: Machine, vault: Machine, marker: str) -> str:
    """`machine` (its system python3) reads secret/data/<marker> from `vault` with no token: the status
    Vault answered, as text ("403": refused, and the node's audit device records the denial)."""
    url = f"https://{vault.address}:{cluster.ports['vault']}/v1/secret/data/{marker}"
    probe = ("import ssl, urllib.request, urllib.error\n"
             "ctx = ssl.create_default_context(cafile='/etc/histo/vault-ca.pem')\n"
             f"try:\n    urllib.request.urlopen({url!r}, context=ctx, timeout=10)\n    print(200)\n"
             "except urllib.error.HTTPError as e:\n    print(e.code)\n")
    return str(machine.run(f"python3 -c {shlex.quote(probe)}").stdout.strip())


SECOPS_EVENTS = "/api/v1/secops/events"  # the SecOps record's refusals a master holds (viewer)
_PAST_EVERY_SEQ = 9007199254740991  # a `since` above every record sequence: no event, but the head


def secops_head(cluster: DeployedCluster, url: str) -> int:
    """The highest record sequence the master at `url` holds: read before a refusal is provoked, the
    events above it are the ones that came after (and those the collector had not yet pushed to it)."""
    status, raw, _h = request(cluster, "GET", f"{SECOPS_EVENTS}?limit=1&since={_PAST_EVERY_SEQ}",
                              cluster.env["HISTO_TOKEN_VIEWER"], url=url)
    assert status == 200, f"GET {SECOPS_EVENTS} on {url}: {status} {raw[:200]!r}"
    return int(json.loads(raw)["head"])


def secops_since(cluster: DeployedCluster, url: str, since: int,
                 query: str = "") -> tuple[list[dict[str, Any]], int]:
    """Every event above record sequence `since` the master at `url` holds (`query`: its filters, e.g.
    `layer=vault&host=worker1`), page after page, and the `next_since` to go on from."""
    events: list[dict[str, Any]] = []
    nxt, filters = since, f"&{query}" if query else ""
    while True:
        status, raw, _h = request(cluster, "GET", f"{SECOPS_EVENTS}?limit=500&since={nxt}{filters}",
                                  cluster.env["HISTO_TOKEN_VIEWER"], url=url)
        assert status == 200, f"GET {SECOPS_EVENTS} on {url}: {status} {raw[:200]!r}"
        page = json.loads(raw)
        events += [dict(ev) for ev in page["events"]]
        nxt = int(page["next_since"])
        if not page["more"]:
            return events, nxt


def secops_find(cluster: DeployedCluster, url: str, since: int, query: str,
                match: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    """The first event above `since` (with the `query` filters) that `match`es, or None."""
    return next((ev for ev in secops_since(cluster, url, since, query)[0] if match(ev)), None)


RECORD = "/var/lib/histo/secops/secops.log"  # the collector's tamper-evident record (roles/logship)


def incidents(collector: Machine) -> list[dict[str, object]]:
    """The record's incident entries (`incident_*`: opened, escalated, evidence, decisions). Its lines are
    compact JSON: filtered here, not by grep."""
    out = collector.run(f"grep -F '\"kind\":\"incident_' {RECORD} || true").stdout
    found = []
    for line in out.splitlines():
        event = json.loads(line)["event"]
        if isinstance(event, dict):
            found.append(event)
    return found
