"""A running local cluster (`make local`, or the integration tests' own) as its clients see it: the
env file's URLs, CA and tokens, each service's state folder and config, and plain-urllib HTTP helpers.
Shared by tests/integration, the local attack drills (attack/local.py) and the benchmarks (bench/)."""
from __future__ import annotations

import hashlib
import io
import json
import ssl
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from .. import procs


@dataclass
class Cluster:
    root: Path
    env: dict[str, str]

    @property
    def url(self) -> str:
        """The first master's own address: tests of one master's behaviour (its throttles, caps and
        counters) must not be spread over two processes by the floating address."""
        return self.urls[0]

    @property
    def public_url(self) -> str:
        """HISTO_URL: the floating public address a user's client uses (master/floating.py)."""
        return self.env["HISTO_URL"]

    @property
    def urls(self) -> list[str]:
        return self.env["HISTO_URLS"].split(",")

    @property
    def ca(self) -> str:
        return self.env["HISTO_CA"]

    def token(self, role: str) -> str:
        return self.env[f"HISTO_TOKEN_{role.upper()}"]

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca)

    def service_dir(self, name: str) -> Path:
        return self.root / name

    def pid(self, name: str) -> int | None:
        sdir = self.service_dir(name)
        return procs.alive(sdir / "pid", f"--config {sdir / 'config.json'}")

    def config(self, name: str) -> dict[str, Any]:
        cfg: dict[str, Any] = json.loads((self.service_dir(name) / "config.json").read_text())
        return cfg

    def restart(self, name: str) -> None:
        sdir = self.service_dir(name)
        if not self.pid(name):
            procs.spawn([sys.executable, "-m", "histo.cli",
                         self.config(name)["role"], "--config", str(sdir / "config.json")],
                        sdir / "service.log", sdir / "pid")

    # -- HTTP helpers (urllib: what a plain client does) ------------------------------------
    def request(self, method: str, path: str, *, token: str | None = None, body: bytes | None = None,
                headers: dict[str, str] | None = None, url: str | None = None,
                timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request((url or self.url) + path, data=body, method=method, headers=headers or {})
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, context=self.ssl_context(), timeout=timeout) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def upload(self, data: bytes, mode: str | None = "luma", token: str | None = None, url: str | None = None,
               filename: str = "image.bin",
               content_type: str = "application/octet-stream") -> tuple[int, dict[str, Any]]:
        body, ctype = multipart({"mode": mode} if mode else {}, {"image": (filename, data, content_type)})
        status, _, raw = self.request("POST", "/api/v1/jobs", token=token or self.token("uploader"), body=body,
                                      headers={"Content-Type": ctype}, url=url)
        doc: dict[str, Any] = json.loads(raw or b"{}")
        return status, doc

    def wait_job(self, job_id: str, token: str | None = None, timeout: float = 90, url: str | None = None,
                 poll: float = 0.1, long_poll: float = 0) -> dict[str, Any]:
        deadline = time.time() + timeout
        doc: dict[str, Any] = {}
        while time.time() < deadline:
            query = f"?wait={long_poll}" if long_poll else ""
            status, _, raw = self.request("GET", f"/api/v1/jobs/{job_id}{query}",
                                          token=token or self.token("uploader"), url=url)
            if status == 200:
                doc = json.loads(raw)
                if doc["state"] in ("done", "failed"):
                    return doc
            time.sleep(poll)
        raise AssertionError(f"job {job_id} did not finish in {timeout}s: {doc}")

    def leader(self) -> str | None:
        for url in self.urls:
            try:
                status, _, raw = self.request("GET", "/readyz", url=url, timeout=3)
                doc = json.loads(raw)
                leader: str | None = doc["checks"]["leader"]["leader"]
                if leader:
                    return leader
            except (OSError, ValueError, KeyError):
                continue
        return None


def until(pred: Callable[[], Any], timeout: float, step: float = 0.2) -> Any:
    """pred()'s first truthy answer within `timeout` seconds, else None (the caller says what it waited for)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(step)
    return None


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data, ctype) in files.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                  f"Content-Type: {ctype}\r\n\r\n".encode())
        out.write(data)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def sample_image(width: int, height: int, fmt: str = "JPEG", mode: str = "RGB") -> bytes:
    """A photo-like test image: smooth gradients plus noise, low contrast so equalization shows."""
    base = Image.linear_gradient("L").resize((width, height))
    noise = Image.effect_noise((width, height), 40)
    r = Image.blend(base, noise, 0.3).point(lambda v: 60 + v // 3)
    g = base.rotate(90).resize((width, height)).point(lambda v: 80 + v // 4)
    b = Image.blend(noise, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 0.5).point(lambda v: 50 + v // 2)
    img = Image.merge("RGB", (r, g, b))
    if mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buf.getvalue()


PIXEL_RUN = b"HISTO-KNOWN-PIXEL-RUN-" * 8  # a row of gray pixels no real image holds


def png_with_pixel_run(width: int = 176, height: int = 48) -> bytes:
    """A gray PNG saved without compression (its rows are in the file as they are, after PNG's one-byte
    row filter) whose first row is PIXEL_RUN: stored in clear, it would be found on disk."""
    pixels = bytes(40 + b % 90 for b in hashlib.shake_256(b"histo").digest(width * (height - 1)))
    img = Image.frombytes("L", (width, height), PIXEL_RUN[:width] + pixels)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=0)
    return buf.getvalue()


def clear_probes(upload: bytes, result: bytes) -> list[bytes]:
    """Byte runs that must not appear in a master's store: the known pixel run (decoded pixels), a
    window of the upload's own bytes (its uncompressed rows) and a window of the result's bytes."""
    mid, rmid = len(upload) // 2, len(result) // 2
    return [PIXEL_RUN[:48], upload[mid:mid + 64], result[rmid:rmid + 64]]
