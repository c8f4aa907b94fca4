"""Where the attacker stands on the network: on the controller's bridge (histo-br0), capturing every
packet between the cluster's machines during an upload, a job, a Vault login and a ZooKeeper session.
Every flow must be TLS and no secret or image byte may appear in the capture."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .deployed import BRIDGE, CLUSTER_NET
from .outcome import Outcome
from .target import Target, gray_noise

TLS_PORTS = ("443", "8443", "2281", "2888", "3888", "8200")


def _ensure_tshark() -> str:
    path = shutil.which("tshark")
    if path:
        return path
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-q", "tshark"], env=env, capture_output=True, timeout=900, check=True)
    return shutil.which("tshark") or "tshark"


def _tls_header(data: bytes, i: int) -> int:
    """The length of the TLS record whose header starts at `i`, or -1 when none does."""
    if i + 5 > len(data):
        return -1
    kind, major, length = data[i], data[i + 1], int.from_bytes(data[i + 3:i + 5], "big")
    return length if kind in (20, 21, 22, 23) and major == 3 and length <= 18432 + 256 else -1


def _tls_coverage(data: bytes) -> float:
    """The share of a one-way TCP byte stream made of TLS records (header + body). Where the capture lost
    a segment, or the connection began before the capture, the walk resyncs on the next position where
    two records follow each other. Plaintext (HTTP, ZooKeeper's jute) covers next to nothing."""
    def chained(i: int) -> bool:
        n = _tls_header(data, i)
        return n >= 0 and (i + 5 + n >= len(data) or _tls_header(data, i + 5 + n) >= 0)
    i, covered, synced = 0, 0, False
    while i < len(data):
        n = _tls_header(data, i)
        if n >= 0 and (synced or chained(i)):
            covered += min(5 + n, len(data) - i)
            i += 5 + n
            synced = True
        else:
            synced = False
            i += 1
    return covered / len(data) if data else 1.0


def _streams(tshark: str, pcap: Path) -> dict[tuple[str, ...], bytearray]:
    fields = subprocess.run(
        [tshark, "-r", str(pcap), "-n", "-Y", "tcp.len > 0 && !tcp.analysis.retransmission", "-T", "fields",
         "-E", "separator=/t", "-e", "tcp.stream", "-e", "ip.src", "-e", "tcp.srcport", "-e", "ip.dst",
         "-e", "tcp.dstport", "-e", "tcp.payload"], capture_output=True, text=True, timeout=300, check=True)
    flows: dict[tuple[str, ...], bytearray] = {}
    for line in fields.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) < 6 or not parts[5]:
            continue
        key = (parts[0], parts[1], parts[2], parts[3], parts[4])
        flows.setdefault(key, bytearray()).extend(bytes.fromhex(parts[5].replace(":", "")))
    return flows


def eavesdrop(d: Target) -> Outcome:
    tshark = _ensure_tshark()
    tmp = Path(tempfile.mkdtemp(prefix="histo-capture-"))
    pcap = tmp / "bridge.pcap"
    cap = subprocess.Popen([tshark, "-i", BRIDGE, "-n", "-q", "-f", f"net {CLUSTER_NET}", "-w", str(pcap)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert cap.stderr is not None  # PIPE
    try:
        deadline = time.time() + 20
        while time.time() < deadline and not (pcap.exists() and pcap.stat().st_size > 0):
            if cap.poll() is not None:
                raise RuntimeError(f"tshark stopped: {cap.stderr.read()[-200:]}")
            time.sleep(0.2)
        time.sleep(1.0)
        image, pixels = gray_noise()
        job = d.upload(image, mode="gray")
        status, _h, result = d.api.request("GET", f"/api/v1/jobs/{job['id']}/result", token=d.api.token("uploader"))
        needles = {"uploader token": d.api.token("uploader").encode(), "Authorization header": b"Authorization: Bearer",
                   "Vault token header": b"X-Vault-Token", "HTTP request line": b"HTTP/1.1\r\n",
                   "ZooKeeper digest scheme": b"digest"}
        for k in (0, len(image) // 2, len(image) - 200):
            needles[f"uploaded PNG bytes @{k}"] = image[k:k + 48]
        width = 160
        for row in (5, 60, 110):
            needles[f"image pixels row {row}"] = pixels[row * width:row * width + 48]
        if status == 200:
            needles["result bytes"] = result[len(result) // 2:len(result) // 2 + 48]
        worker = d.group("workers")[0].name
        master = d.group("masters")[0].name
        for name, script in ((worker, "eavesdrop_worker"), (master, "eavesdrop_master")):
            for label, value in d.inside(name, script)["needles"].items():
                if value:
                    needles[label] = value.encode()
        time.sleep(6)  # the services' own Vault token checks (every 5 s) and ZooKeeper pings
    finally:
        cap.terminate()
        try:
            cap.wait(10)
        except subprocess.TimeoutExpired:
            cap.kill()
            cap.wait()
    try:
        flows = _streams(tshark, pcap)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the capture holds ciphertext only, but it goes at once
    leaks = sorted({label for label, n in needles.items() for data in flows.values() if n and n in data})
    ports_seen = sorted({k[4] for k in flows} & set(TLS_PORTS) | {k[2] for k in flows} & set(TLS_PORTS), key=int)
    not_tls = []
    for key, data in flows.items():
        if len(data) >= 64 and _tls_coverage(bytes(data)) < 0.9:
            not_tls.append(f"{key[1]}:{key[2]}->{key[3]}:{key[4]}")
    total = sum(len(v) for v in flows.values())
    expected = {"443", "8443", "2281", "8200"}
    held = not leaks and not not_tls and expected <= set(ports_seen) and status == 200
    return Outcome("eavesdrop", f"tshark on {BRIDGE} during an upload, a job, a Vault login and a ZooKeeper "
                   f"session: searched {len(flows)} directed TCP flows ({total} bytes) for {len(needles)} secrets "
                   "and plaintext markers (image bytes, tokens, secret_id, ZooKeeper passwords)",
                   f"ports seen {','.join(ports_seen)}; plaintext found: {', '.join(leaks) or 'none'}; "
                   f"flows not TLS: {', '.join(sorted(set(not_tls))[:6]) or 'none'}", held)
