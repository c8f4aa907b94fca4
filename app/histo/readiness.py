"""Ready means ready: the wait that `make local`, `make up` (`histo wait-ready`) and the test
fixtures share. It returns once an upload through any master would be accepted: every master
answers /readyz 200, names a leader that answered it as leader, and counts the expected masters
and workers as live processes (not nodes a dead process left in ZooKeeper)."""
from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable


class NotReady(RuntimeError):
    """The cluster did not become ready in time; the message is one line saying why."""


def wait_ready(urls: list[str], ca: Path, workers: int, masters: int, timeout: float,
               diagnose: Callable[[], str] | None = None) -> None:
    """Every master answers ready, names a leader that answered it as leader, and counts every
    master and worker as live — a process that answered with the incarnation of its own node, not a
    node left by a previous process (those linger until their session expires). On timeout, one line
    naming what is not ready, and why from its log."""
    ctx = ssl.create_default_context(cafile=str(ca))
    deadline = time.time() + timeout
    last = ""
    while time.time() < deadline:
        ok = 0
        for url in urls:
            try:
                doc = _readyz(url, ctx)
                checks = doc["checks"]
                seen = (checks["workers"]["count"], checks["masters"]["count"])
                if doc.get("_status") == 200 and seen == (workers, masters):
                    ok += 1
                else:
                    why = "; ".join(doc.get("reasons") or []) or "waiting"
                    last = f"{url}: {seen[0]}/{workers} workers and {seen[1]}/{masters} masters live ({why})"
            except Exception as exc:
                last = f"{url}: {exc}"
        if ok == len(urls):
            return
        time.sleep(0.2)
    raise NotReady(f"cluster not ready after {timeout:.0f}s: {diagnose() if diagnose else ''}{last}")


def _readyz(url: str, ctx: ssl.SSLContext) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url + "/readyz", context=ctx, timeout=3) as resp:
            doc, status = json.loads(resp.read()), resp.status
    except urllib.error.HTTPError as exc:  # 503 carries the checks too
        doc, status = json.loads(exc.read() or b"{}"), exc.code
    if not isinstance(doc, dict):
        raise ValueError("/readyz did not answer a JSON object")
    doc["_status"] = status
    return doc


