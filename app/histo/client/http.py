"""HTTPS to a master with the standard library: the cluster's CA only, the bearer token in a header,
JSON errors turned into one readable sentence, and an upload body that reports its progress."""
from __future__ import annotations

import json
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import IO, Any, Callable, Mapping, TypeVar


RETRY_AFTER_CAP = 30.0  # seconds: a longer Retry-After is waited in steps, each a fresh attempt
REFUSED_WAIT = 1.0  # seconds before asking again when the address refused the connection


class ApiError(Exception):
    """A refusal or an unreachable master: `status` (0 when none answered) and one readable sentence;
    `retry_after` what a 503 asked for, `refused` when the connection was refused (nothing was sent)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None, refused: bool = False) -> None:
        super().__init__(message)
        self.status, self.retry_after, self.refused = status, retry_after, refused

    def retry_in(self, idempotent: bool) -> float | None:
        """Seconds to wait before the same request may be sent again, or None when it must not be:
        a 503 with Retry-After was not carried out (the master says so); a refused connection never
        reached one (the public address moving to another master); any other failure to reach a
        master only for a request that may be repeated (GET) — an upload might have been accepted."""
        if self.status == 503 and self.retry_after is not None:
            return min(max(self.retry_after, 0.1), RETRY_AFTER_CAP)
        if self.status == 0 and (self.refused or idempotent):
            return REFUSED_WAIT
        return None


def _retry_after(headers: Any) -> float | None:
    try:
        return float(headers.get("Retry-After"))
    except (TypeError, ValueError):
        return None


T = TypeVar("T")


def retrying(fn: Callable[[], T], deadline: float, idempotent: bool = False,
             sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> T:
    """`fn()` again while the master asks to be asked later (ApiError.retry_in) and `deadline` (a
    `clock()` time) allows; the last error otherwise."""
    while True:
        try:
            return fn()
        except ApiError as exc:
            wait = exc.retry_in(idempotent)
            if wait is None or clock() + wait > deadline:
                raise
            sleep(wait)


class ProgressBody:
    """A request body read in blocks by http.client; each read moves the progress bar."""

    def __init__(self, data: bytes, report: Callable[[int, int], None]) -> None:
        self.data, self.pos, self.report = data, 0, report

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size is None or size < 0 else min(len(self.data), self.pos + size)
        chunk = self.data[self.pos:end]
        self.pos = end
        self.report(self.pos, len(self.data))
        return chunk


def progress_bar(out: IO[str] = sys.stderr, width: int = 30) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        filled = width * done // total if total else width
        out.write(f"\rupload [{'#' * filled}{'.' * (width - filled)}] {done * 100 // max(total, 1):3d}% "
                  f"{done / 1e6:.1f}/{total / 1e6:.1f} MB")
        if done >= total:
            out.write("\n")
        out.flush()
    return report


def multipart(fields: Mapping[str, str], name: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    safe = filename.replace('"', "").replace("\r", "").replace("\n", "") or "image"
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{safe}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class Api:
    def __init__(self, url: str, ca: str, token: str | None = None, timeout: float = 120.0) -> None:
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout
        try:
            self.ctx = ssl.create_default_context(cafile=ca)
        except (OSError, ssl.SSLError):
            raise ApiError(0, f"cannot read the CA bundle {ca}") from None

    def call(self, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None,
             length: int | None = None) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=dict(headers or {}))
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        if length is not None:
            req.add_header("Content-Length", str(length))
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=self.timeout) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            raise ApiError(err.code, _error_text(err.code, err.read()), _retry_after(err.headers)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(0, f"cannot reach {self.url}: {reason}",
                           refused=isinstance(reason, ConnectionRefusedError)) from None

    def json(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        _, _, raw = self.call(method, path, **kw)
        try:
            doc = json.loads(raw)
        except ValueError:
            raise ApiError(0, f"{self.url}{path} did not answer JSON") from None
        return doc if isinstance(doc, dict) else {"items": doc}

    def form(self, path: str, fields: Mapping[str, str]) -> dict[str, Any]:
        body = urllib.parse.urlencode(dict(fields)).encode()
        return self.json("POST", path, body=body, headers={"Content-Type": "application/x-www-form-urlencoded"})


def _error_text(status: int, raw: bytes) -> str:
    try:
        doc = json.loads(raw)
        return f"{doc.get('message') or doc.get('error')} ({status} {doc.get('error')})"
    except (ValueError, AttributeError):
        return f"the master answered {status}"
