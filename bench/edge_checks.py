#!/usr/bin/env python3
"""The cost of the exhaustion checks (issue 13, items 6-8), measured, not asserted:

1. in-process, per request: the connection gate's admit/release, the pixel budget's charge, a decode
   slot, reading the size from the header;
2. on a loopback TLS listener, the same aiohttp app behind aiohttp's TCPSite and behind CappedSite
   (accept, address check, start_tls, JSON parser errors): new-connection and keep-alive requests/s;
3. with `--cluster`: the 1024² throughput figure of bench/run.py on a fresh local cluster (127.0.30.x).

`python bench/edge_checks.py [--cluster] [--out bench/edge_checks.json]`"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

from histo.compute.imageio import header_size
from histo.edge.admission import Admission
from histo.edge.conncap import CappedSite, ConnectionGate, ConnLimits
from histo.testing.cluster import sample_image
from histo.tls.selfsigned import ensure_bootstrap_tls

HERE = Path(__file__).resolve().parent


def per_call(fn: Callable[[], object], n: int = 100_000) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6  # µs


def in_process() -> dict[str, float]:
    gate = ConnectionGate(ConnLimits())
    adm = Admission(pixels=10**15, window=60, decodes=2, jobs=16)
    png = sample_image(1024, 1024, "PNG")

    def gate_once() -> None:
        gate.admit("10.0.0.1")
        gate.release("10.0.0.1")

    async def slots(n: int) -> float:
        t = time.perf_counter()
        for _ in range(n):
            async with adm.decode_slot("alice"):
                pass
        return (time.perf_counter() - t) / n * 1e6
    return {"gate_admit_release_us": round(per_call(gate_once), 3),
            "pixel_charge_us": round(per_call(lambda: adm.charge("alice", 1 << 20)), 3),
            "header_size_us": round(per_call(lambda: header_size(png, "PNG")), 3),
            "decode_slot_us": round(asyncio.run(slots(20_000)), 3)}


async def _listener(capped: bool, tmp: Path) -> tuple[web.AppRunner, int, ssl.SSLContext]:
    ca, cert, key = ensure_bootstrap_tls(tmp, ["localhost"], ["127.0.0.1"])
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_cert_chain(str(cert), str(key))
    app = web.Application()
    async def ok(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})
    app.router.add_get("/", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    site: web.TCPSite = (CappedSite(runner, "127.0.0.1", port, ssl_context=sctx, limits=ConnLimits())
                         if capped else web.TCPSite(runner, "127.0.0.1", port, ssl_context=sctx))
    await site.start()
    return runner, port, ssl.create_default_context(cafile=str(ca))


def _client(port: int, ctx: ssl.SSLContext, n: int, keepalive: bool) -> float:
    req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    t = time.perf_counter()
    if keepalive:
        with socket.create_connection(("127.0.0.1", port)) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as s:
            for _ in range(n):
                s.sendall(req)
                data = b""
                while not data.endswith(b"}"):
                    data += s.recv(4096)
    else:
        for _ in range(n):
            with socket.create_connection(("127.0.0.1", port)) as raw, \
                    ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(req)
                data = b""
                while not data.endswith(b"}"):
                    data += s.recv(4096)
    return n / (time.perf_counter() - t)


def listener(n_new: int = 400, n_keep: int = 4000) -> dict[str, float]:
    out: dict[str, float] = {}
    for capped in (False, True):
        async def run(capped: bool = capped) -> tuple[float, float]:
            with tempfile.TemporaryDirectory() as tmp:
                runner, port, ctx = await _listener(capped, Path(tmp))
                loop = asyncio.get_running_loop()
                try:
                    new = await loop.run_in_executor(None, _client, port, ctx, n_new, False)
                    keep = await loop.run_in_executor(None, _client, port, ctx, n_keep, True)
                finally:
                    await runner.cleanup()
                return new, keep
        new, keep = asyncio.run(run())
        key = "capped" if capped else "aiohttp"
        out[f"{key}_new_connection_rps"] = round(new, 1)
        out[f"{key}_keepalive_rps"] = round(keep, 1)
    out["new_connection_ratio"] = round(out["capped_new_connection_rps"] / out["aiohttp_new_connection_rps"], 3)
    out["keepalive_ratio"] = round(out["capped_keepalive_rps"] / out["aiohttp_keepalive_rps"], 3)
    return out


def cluster_throughput(jobs: int, clients: int) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    import run as bench  # type: ignore[import-not-found]  # bench/run.py, beside this script
    with tempfile.TemporaryDirectory(prefix="histo-bench-edge-") as tmp:
        cl = bench.up(Path(tmp) / "c", "1h")
        try:
            result: dict[str, Any] = bench.throughput(cl, jobs, clients)
            return result
        finally:
            bench.local_cluster.down(Path(tmp) / "c")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cluster", action="store_true", help="also the 1024² throughput on a local cluster")
    ap.add_argument("--jobs", type=int, default=40)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--out", default=str(HERE / "edge_checks.json"))
    a = ap.parse_args()
    r: dict[str, Any] = {"in_process": in_process(), "listener": listener()}
    if a.cluster:
        r["throughput_1024"] = cluster_throughput(a.jobs, a.clients)
    print(json.dumps(r, indent=1))
    Path(a.out).write_text(json.dumps(r, indent=1) + "\n")


if __name__ == "__main__":
    main()
