"""`python -m attack.local [STATE_DIR]`: the attack drills against a running local cluster (`make local`,
.histo/local by default). Each drill prints what it tried, what happened, and whether the control held.
The same drills run in `make test` (tests/integration/test_attack_drills.py), so a regression in any control
fails CI.

The attacker here holds what a compromised worker holds: its files (certificate, key, stored
secret_id) and its credentials; and, for the network drill, a packet capture on the loopback."""
from __future__ import annotations

import base64
import functools
import http.client
import json
import socket
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import hvac
from kazoo.exceptions import NoAuthError
from kazoo.security import OPEN_ACL_UNSAFE

from histo.edge.tokens import issue_token
from histo.testing.attacker import get_from, root_client, stable_tls, zk_client, zk_credentials
from histo.testing.cluster import Cluster, sample_image
from histo.vault.client import ServiceVault, VaultAuthError
from histo.vault.provision import wrapped_secret_id, write_credentials
from histo.vault.secretzero import unseal

from . import revocation
from .outcome import Outcome, run_drills, summary


def _net(cl: Cluster) -> str:
    net: str = json.loads((cl.root / "topology.json").read_text())["net"]
    return net


def _internal(cl: Cluster, target: str, path: str, as_service: str, source: str, method: str = "GET",
              body: bytes = b"", headers: dict[str, str] | None = None, cert_dir: Path | None = None) -> int:
    cfg = cl.config(target)
    tls = cert_dir or stable_tls(cl, as_service)
    ctx = ssl.create_default_context(cafile=str(tls / "ca.pem"))
    ctx.load_cert_chain(str(tls / "cert.pem"), str(tls / "key.pem"))
    conn = http.client.HTTPSConnection(cfg["address"], cfg["internal_port"], context=ctx, timeout=10,
                                       source_address=(source, 0))
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        return conn.getresponse().status
    finally:
        conn.close()


def _vault_as(cl: Cluster, name: str) -> ServiceVault:
    cfg = cl.config(name)
    v = ServiceVault(cfg["vault_url"], cfg["vault_ca"], host=name, role=cfg["role"],
                     creds_dir=Path(cfg["creds_dir"]), source_address=cfg["address"])
    v.login()
    return v


# -- the drills ------------------------------------------------------------------------------------
def eavesdrop(cl: Cluster) -> Outcome:
    """Capture every packet between the cluster's addresses during a job: only TLS may cross."""
    net = _net(cl).encode()
    net_prefix = bytes(int(x) for x in net.split(b"."))
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
    sock.bind(("lo", 0))
    sock.settimeout(0.2)
    payloads: list[bytes] = []
    stop = threading.Event()

    def capture() -> None:
        while not stop.is_set():
            try:
                frame = sock.recv(65535)
            except socket.timeout:
                continue
            ip = frame[14:]
            if len(ip) < 20 or ip[9] != 6 or ip[12:15] != net_prefix and ip[16:19] != net_prefix:
                continue
            ihl = (ip[0] & 0x0F) * 4
            tcp = ip[ihl:]
            data = tcp[(tcp[12] >> 4) * 4:] if len(tcp) >= 20 else b""
            if data:
                payloads.append(data)
    t = threading.Thread(target=capture, daemon=True)
    t.start()
    image = sample_image(200, 150, "JPEG")
    status, doc = cl.upload(image, mode="rgb")
    cl.wait_job(doc["id"])
    cl.request("GET", f"/api/v1/jobs/{doc['id']}/result", token=cl.token("uploader"))
    stop.set()
    t.join()
    sock.close()
    blob = b"".join(payloads)
    secrets = [image[:64], b"\xff\xd8\xff\xe0", cl.token("uploader").encode()[:40], b"histo-worker", b"histo-master",
               b"Authorization: Bearer"]
    leaks = [s[:12] for s in secrets if s in blob]
    non_tls = sum(1 for p in payloads if p[0] not in (0x14, 0x15, 0x16, 0x17))
    # Non-record-aligned TCP segments (continuations) are counted loosely: the decisive check is
    # that no plaintext secret appears anywhere in the capture.
    held = status == 202 and len(payloads) > 20 and not leaks
    return Outcome("eavesdrop", f"capturing {len(payloads)} TCP payloads during an upload and a job",
                   f"plaintext found: {leaks or 'none'}; segments not starting a TLS record: {non_tls}", held)


def stolen_certificate(cl: Cluster) -> Outcome:
    thief = f"{_net(cl)}.99"
    s1 = _internal(cl, "master1", "/internal/v1/results", "worker1", thief, "POST", b"[]",
                   {"X-Histo-Job": "x", "X-Histo-Task": "0", "X-Histo-Attempt": "x", "X-Histo-Phase": "equalize",
                    "X-Histo-Image-Mode": "L", "X-Histo-Width": "1", "X-Histo-Rows": "1",
                    "X-Histo-Reply-To": "https://x"})
    s2 = _internal(cl, "worker2", "/internal/v1/status", "master1", thief)
    return Outcome("stolen certificate", "worker1's and master1's certificate and key used from another address",
                   f"master answered {s1}, worker answered {s2}", s1 == 403 and s2 == 403)


def compromised_worker_vault(cl: Cluster) -> Outcome:
    v = _vault_as(cl, "worker1")
    refused = []
    for what, fn in (("read master ZooKeeper credentials", lambda: v.client.secrets.kv.v2.read_secret_version(
                         "histo/zk/master", mount_point="secret", raise_on_deleted_version=True)),
                     ("read the super digest", lambda: v.client.secrets.kv.v2.read_secret_version(
                         "histo/zk/super", mount_point="secret", raise_on_deleted_version=True)),
                     ("issue a master certificate", lambda: v.client.write_data(
                         "pki_int/issue/host-master1", data={"common_name": "master1.histo.internal"})),
                     ("sign an API token", lambda: v.client.secrets.transit.sign_data(
                         "histo-tokens", "aGk=", mount_point="transit"))):
        try:
            fn()
        except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest):
            refused.append(what)
    return Outcome("compromised worker vs Vault", "4 privileged calls with worker1's own Vault token",
                   f"refused: {len(refused)}/4 ({', '.join(refused)})", len(refused) == 4)


def compromised_worker_zookeeper(cl: Cluster) -> Outcome:
    root = root_client(cl)
    creds = root.secrets.kv.v2.read_secret_version("histo/zk/worker", mount_point="secret",
                                                   raise_on_deleted_version=True)["data"]["data"]
    zk = zk_client(cl, "worker1", (creds["username"], creds["password"]))
    refused: list[str] = []
    jobs: list[str]  # read below, before the first attempt runs
    attempts: tuple[tuple[str, Callable[[], object]], ...]
    attempts = (("delete a job", lambda: zk.delete(f"/histo/jobs/{jobs[0]}", recursive=True) if jobs
                 else zk.delete("/histo/jobs")),
                ("join the election", lambda: zk.create("/histo/election/x-", b"w", ephemeral=True, sequence=True)),
                ("rewrite worker2's membership", lambda: zk.set("/histo/workers/worker2/member", b"{}")),
                ("squat worker2's slot", lambda: zk.create("/histo/workers/worker2/x", b"{}", ephemeral=True)),
                ("register a ghost member", lambda: zk.create("/histo/workers/ghost1", b"{}", ephemeral=True)),
                ("revoke-list tampering", lambda: zk.create("/histo/revoked/x", b"")))
    try:
        jobs = zk.get_children("/histo/jobs")
        for what, fn in attempts:
            try:
                fn()
            except NoAuthError:
                refused.append(what)
        # the legitimate path: worker1 still rewrites its own member node, in its own slot
        data, _ = zk.get("/histo/workers/worker1/member")
        zk.set("/histo/workers/worker1/member", data)
        own_ok = True
    except NoAuthError:
        own_ok = False
    finally:
        zk.stop()
        zk.close()
    return Outcome("compromised worker vs ZooKeeper",
                   f"with worker credentials and certificate: {len(attempts)} writes",
                   f"refused: {len(refused)}/{len(attempts)} ({', '.join(refused)}); own member node writable: "
                   f"{own_ok}", len(refused) == len(attempts) and own_ok)


def zookeeper_own_nodes(cl: Cluster) -> Outcome:
    """ZooKeeper's own nodes, world:anyone:cdrwa out of the box: a holder of a histo certificate
    with no digest, and root on worker1 with the workers' digest, try to create there (memory
    exhaustion; a zookeeper_limits child is reported to crash 3.8.0) and to reopen their ACLs;
    the masters' digest still administers them and the server still answers."""
    tag = f"drill-{time.time_ns()}"
    attempts = ((f"/zookeeper/{tag}", b""), (f"/zookeeper/quota/{tag}", b""),
                (f"/zookeeper/quota/{tag}/zookeeper_limits", b"count=1,bytes=1"))
    refused, allowed = [], []
    for how, creds in (("no digest", None), ("workers' digest", zk_credentials(cl, "worker"))):
        zk = zk_client(cl, "worker1", creds)
        try:
            for path, data in attempts:
                try:
                    zk.create(path, data, makepath=True)
                    allowed.append(f"{how}: create {path}")
                except NoAuthError:
                    refused.append(f"{how}: create {path}")
            try:
                zk.set_acls("/zookeeper/quota", OPEN_ACL_UNSAFE)
                allowed.append(f"{how}: open /zookeeper/quota")
            except NoAuthError:
                refused.append(f"{how}: open /zookeeper/quota")
        finally:
            zk.stop()
            zk.close()
    master = zk_client(cl, "master1", zk_credentials(cl, "master"))
    try:
        own = master.get_acls("/zookeeper/quota")[0]
        master.create(f"/zookeeper/quota/{tag}", b"", acl=own)
        master_ok = tag in master.get_children("/zookeeper/quota")
        master.delete(f"/zookeeper/quota/{tag}")
        world = [str(a) for p in ("/zookeeper", "/zookeeper/quota") for a in master.get_acls(p)[0]
                 if a.id.scheme == "world"]
    finally:
        master.stop()
        master.close()
    ruok = _ruok(cl)
    total = 2 * (len(attempts) + 1)
    return Outcome("ZooKeeper's own nodes", f"{total} writes to /zookeeper and /zookeeper/quota with worker1's "
                   "certificate, without a digest and with the workers' digest",
                   f"refused: {len(refused)}/{total}; allowed: {allowed or 'none'}; "
                   f"world ACLs left: {world or 'none'}; "
                   f"masters administer them: {master_ok}; ruok: {ruok}",
                   len(refused) == total and not world and master_ok and ruok == "imok")


def _ruok(cl: Cluster) -> str:
    tls = stable_tls(cl, "worker1")
    ctx = ssl.create_default_context(cafile=str(tls / "ca.pem"))
    ctx.load_cert_chain(str(tls / "cert.pem"), str(tls / "key.pem"))
    address = f"{_net(cl)}.11"
    with socket.create_connection((address, 2281), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=address) as s:
        s.sendall(b"ruok")
        return s.recv(4).decode(errors="replace")


def lateral_movement(cl: Cluster) -> Outcome:
    status = _internal(cl, "worker2", "/internal/v1/status", "worker1", cl.config("worker1")["address"])
    return Outcome("lateral movement", "worker1 calls worker2's internal port with its own identity",
                   f"worker2 answered {status}", status == 403)


def forged_result(cl: Cluster) -> Outcome:
    status, doc = cl.upload(sample_image(64, 48, "PNG"), mode="gray")
    cl.wait_job(doc["id"])
    root = root_client(cl)
    creds = root.secrets.kv.v2.read_secret_version("histo/zk/worker", mount_point="secret",
                                                   raise_on_deleted_version=True)["data"]["data"]
    zk = zk_client(cl, "worker1", (creds["username"], creds["password"]))
    try:
        tasks = {n: json.loads(zk.get(f"/histo/jobs/{doc['id']}/tasks/{n}")[0])
                 for n in zk.get_children(f"/histo/jobs/{doc['id']}/tasks")}
    finally:
        zk.stop()
        zk.close()
    leader = cl.leader()
    assert leader is not None, "no leader master"
    statuses = []
    for n, t in tasks.items():
        hdr = {"X-Histo-Job": doc["id"], "X-Histo-Task": str(n), "X-Histo-Attempt": t["attempt"],
               "X-Histo-Phase": t["phase"], "X-Histo-Image-Mode": "L", "X-Histo-Width": "64", "X-Histo-Rows": "1",
               "X-Histo-Reply-To": "https://x"}
        statuses.append(_internal(cl, leader, "/internal/v1/results", "worker1", cl.config("worker1")["address"],
                                  "POST", b"\0" * 64, hdr))
    return Outcome("forged / replayed result", f"worker1 re-reports {len(statuses)} finished task attempts it read "
                   "from ZooKeeper", f"leader answered {statuses}", bool(statuses) and set(statuses) == {409})


def secret_id_reuse(cl: Cluster, scratch: Path) -> Outcome:
    root = root_client(cl)
    role_id = root.auth.approle.read_role_id("histo-worker2")["data"]["role_id"]
    write_credentials(scratch, role_id, wrapped_secret_id(root, "worker2", cl.config("worker2")["address"]))
    wrap = (scratch / "secret_id.wrap").read_text()
    cfg = cl.config("worker2")
    first = ServiceVault(cfg["vault_url"], cfg["vault_ca"], "worker2", "worker", scratch, cfg["address"])
    first.login()
    (scratch / "secret_id").unlink()
    (scratch / "secret_id.wrap").write_text(wrap)
    try:
        first.login()
        return Outcome("used secret_id", "unwrapping a wrapped secret_id a second time", "it worked", False)
    except VaultAuthError as exc:
        return Outcome("used secret_id", "unwrapping a wrapped secret_id a second time", str(exc), True)


def expired_certificate(cl: Cluster, scratch: Path) -> Outcome:
    v = _vault_as(cl, "worker1")
    bundle = v.issue_cert("2s")
    (scratch / "cert.pem").write_text(bundle.cert_pem + "\n" + bundle.chain_pem)
    (scratch / "key.pem").write_text(bundle.key_pem)
    (scratch / "ca.pem").write_text(v.ca_chain_pem())
    time.sleep(max(0.0, bundle.not_after.timestamp() - time.time()) + 1.5)
    try:
        status = _internal(cl, "master1", "/internal/v1/results", "worker1", cl.config("worker1")["address"],
                           "POST", b"[]", {}, cert_dir=scratch)
        return Outcome("expired certificate", "calling a master with worker1's expired certificate",
                       f"answered {status}", False)
    except (ssl.SSLError, ConnectionError) as exc:
        return Outcome("expired certificate", "calling a master with worker1's expired certificate",
                       f"handshake refused ({type(exc).__name__})", True)


def revoked_token(cl: Cluster) -> Outcome:
    net = _net(cl)
    signer = hvac.Client(url=f"https://{net}.10:8200", verify=str(cl.root / "vault" / "tls" / "ca.pem"),
                         token=(cl.root / "issuer-token").read_text().strip())
    tok = issue_token(signer, role="uploader", subject="mallory", ttl_seconds=600)
    jti = json.loads(base64.urlsafe_b64decode(tok.split(".")[1] + "==="))["jti"]
    cl.request("POST", "/api/v1/tokens/revoke", token=cl.token("admin"), body=json.dumps({"jti": jti}).encode(),
               headers={"Content-Type": "application/json"})
    t0 = time.time()
    while time.time() - t0 < 5:
        if all(_status_from(cl, f"{net}.97", url, tok) == 401 for url in cl.urls):
            return Outcome("revoked token", "using a token after an admin revoked it",
                           f"401 on every master after {time.time() - t0:.1f}s", True)
        time.sleep(0.2)
    return Outcome("revoked token", "using a token after an admin revoked it", "still accepted after 5 s", False)


def _status_from(cl: Cluster, source: str, url: str, token: str, path: str = "/api/v1/jobs") -> int:
    return get_from(cl, source, path, token, url)[0]


def flood(cl: Cluster) -> Outcome:
    net = _net(cl)
    statuses = [_status_from(cl, f"{net}.96", cl.url, "flood.of.garbage") for _ in range(40)]
    legit = _status_from(cl, f"{net}.95", cl.url, cl.token("uploader"))
    held = 429 in statuses and legit == 200
    return Outcome("flood", "40 requests with forged tokens from one address",
                   f"{statuses.count(401)}x401 then {statuses.count(429)}x429; a legitimate user meanwhile got {legit}",
                   held)


def connection_flood(cl: Cluster) -> Outcome:
    """An outsider holds as many sockets as it can to the public port without ever starting TLS."""
    net = _net(cl)
    host, port = cl.url.split("//")[1].split(":")
    cap = int(cl.config("master1").get("conn_per_address", 64))
    held: list[socket.socket] = []
    try:
        for _ in range(cap * 2):
            held.append(socket.create_connection((host, int(port)), timeout=5, source_address=(f"{net}.94", 0)))
        time.sleep(0.3)
        closed = 0
        for s in held:
            s.settimeout(0.05)
            try:
                closed += s.recv(1) == b""
            except (socket.timeout, BlockingIOError):
                pass
            except ConnectionResetError:
                closed += 1
        legit = _status_from(cl, f"{net}.93", cl.url, cl.token("uploader"))
    finally:
        for s in held:
            s.close()
    held_open = len(held) - closed
    return Outcome("connection flood", f"{len(held)} plain TCP sockets from one address to the public port, no TLS",
                   f"{held_open} kept (cap {cap}), {closed} closed at once; a legitimate user meanwhile got {legit}",
                   held_open <= cap and legit == 200)


def oversized_result(cl: Cluster) -> Outcome:
    """worker1 (its own certificate, its own address) announces a 512 MiB result for no pending attempt."""
    leader = cl.leader() or "master1"
    cfg, tls = cl.config(leader), stable_tls(cl, "worker1")
    ctx = ssl.create_default_context(cafile=str(tls / "ca.pem"))
    ctx.load_cert_chain(str(tls / "cert.pem"), str(tls / "key.pem"))
    hdr = {"X-Histo-Job": "nosuchjob", "X-Histo-Task": "0", "X-Histo-Attempt": "forged", "X-Histo-Phase": "equalize",
           "X-Histo-Image-Mode": "RGB", "X-Histo-Width": "8192", "X-Histo-Rows": "8192", "X-Histo-Reply-To": "https://x"}
    head = ("POST /internal/v1/results HTTP/1.1\r\nHost: x\r\nContent-Length: 536870912\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in hdr.items()) + "\r\n").encode()
    t0 = time.time()
    with socket.create_connection((cfg["address"], cfg["internal_port"]), timeout=10,
                                  source_address=(cl.config("worker1")["address"], 0)) as raw:
        with ctx.wrap_socket(raw, server_hostname=cfg["address"]) as conn:
            conn.sendall(head)
            answer = conn.recv(256).split(b"\r\n", 1)[0].decode(errors="replace")
    took = time.time() - t0
    status, doc = cl.upload(sample_image(48, 32, "PNG"))
    served = status == 202 and cl.wait_job(doc["id"])["state"] == "done"
    return Outcome("oversized result", "worker1 announces a 512 MiB result for an attempt that is not pending",
                   f"answered '{answer}' after {took:.2f}s without reading the body; a job meanwhile done: {served}",
                   answer.startswith("HTTP/1.1 409") and took < 2 and served)


def decompression_bombs(cl: Cluster) -> Outcome:
    """One uploader token, 64-Mpx PNG bombs of a few KB, sent at once through both masters."""
    import struct
    import zlib
    from concurrent.futures import ThreadPoolExecutor
    net = _net(cl)
    signer = hvac.Client(url=f"https://{net}.10:8200", verify=str(cl.root / "vault" / "tls" / "ca.pem"),
                         token=(cl.root / "issuer-token").read_text().strip())
    tok = issue_token(signer, role="uploader", subject=f"drill-bomber-{int(time.time())}", ttl_seconds=600)
    cfg = cl.config(cl.leader() or "master1")
    side = int(min(cfg.get("max_pixels", 64_000_000), cfg.get("pixels_per_principal", 256_000_000)) ** 0.5)

    def chunk(c: bytes) -> bytes:
        return struct.pack(">I", len(c) - 4) + c + struct.pack(">I", zlib.crc32(c))
    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR" + struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + chunk(b"IDAT" + zlib.compress(b"\0" * 65536, 9)) + chunk(b"IEND"))
    allowed = int(cfg.get("pixels_per_principal", 256_000_000)) // (side * side)
    n = allowed + 6
    with ThreadPoolExecutor(8) as pool:
        futs = [pool.submit(cl.upload, bomb, "luma", tok, cl.urls[i % len(cl.urls)]) for i in range(n)]
        st, doc = cl.upload(sample_image(48, 32, "PNG"))
        served = st == 202 and cl.wait_job(doc["id"])["state"] == "done"
        statuses = [f.result()[0] for f in futs]
    decoded = sum(1 for s in statuses if s not in (429, 503))
    return Outcome("decompression bombs", f"{n} PNG bombs of {len(bomb)} bytes declaring {side}x{side} px, at once, "
                   "half through each master, with one uploader token",
                   f"decoded {decoded} (budget allows {allowed}), refused {n - decoded} (429/503); "
                   f"a legitimate job meanwhile done: {served}", decoded <= allowed and served)


def stream_after_revocation(cl: Cluster) -> Outcome:
    """A viewer's event stream stays open after its token is revoked?"""
    import asyncio

    import aiohttp
    net = _net(cl)
    signer = hvac.Client(url=f"https://{net}.10:8200", verify=str(cl.root / "vault" / "tls" / "ca.pem"),
                         token=(cl.root / "issuer-token").read_text().strip())
    tok = issue_token(signer, role="viewer", subject="drill-stream", ttl_seconds=600)
    jti = json.loads(base64.urlsafe_b64decode(tok.split(".")[1] + "==="))["jti"]

    async def run() -> float | None:
        ctx = ssl.create_default_context(cafile=cl.ca)
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(cl.url.replace("https", "wss") + "/api/v1/events", ssl=ctx) as ws:
                await ws.send_json({"type": "auth", "token": tok})
                await ws.receive_json(timeout=5)
                t0 = time.time()
                await asyncio.get_running_loop().run_in_executor(None, lambda: cl.request(
                    "POST", "/api/v1/tokens/revoke", token=cl.token("admin"), body=json.dumps({"jti": jti}).encode(),
                    headers={"Content-Type": "application/json"}))
                try:
                    while True:
                        msg = await ws.receive(timeout=10)
                        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                            return time.time() - t0
                except asyncio.TimeoutError:
                    return None
    took = asyncio.run(run())
    return Outcome("event stream after revocation", "keeping a SecOps event stream open after its token is revoked",
                   f"closed {took:.1f}s after the revocation" if took is not None else "still open after 10 s",
                   took is not None and took < 5)


def vault_sealed(cl: Cluster) -> Outcome:
    # a result stored before: each master has unwrapped its data key once (kept in memory)
    status, doc = cl.upload(sample_image(80, 60, "JPEG"))
    cl.wait_job(doc["id"])
    result = f"/api/v1/jobs/{doc['id']}/result"
    before = [cl.request("GET", result, token=cl.token("uploader"), url=u)[2] for u in cl.urls]
    root = root_client(cl)
    root.sys.seal()
    try:
        deadline = time.time() + 30
        degraded = False
        while time.time() < deadline and not degraded:
            _, _, raw = cl.request("GET", "/readyz")
            degraded = json.loads(raw)["status"] == "degraded"
            time.sleep(0.5)
        # stored results are still served; a new upload is still accepted (its data key was made ahead)
        served = [cl.request("GET", result, token=cl.token("uploader"), url=u)[2] for u in cl.urls] == before
        status, during = cl.upload(sample_image(80, 60, "JPEG"))
        told = status == 202
    finally:
        unseal(root, cl.root / "vault" / "init.json")
    deadline = time.time() + 40
    recovered = False
    while time.time() < deadline and not recovered:
        _, _, raw = cl.request("GET", "/readyz")
        recovered = json.loads(raw)["checks"]["vault"]["ok"]
        time.sleep(0.5)
    finished = cl.wait_job(during["id"])["state"] if told and recovered else "not accepted"
    return Outcome("Vault sealed", "sealing Vault while the cluster serves",
                   f"readyz degraded: {degraded}; stored results still served: {served}; new upload accepted "
                   f"(a data key made ahead): {told}; recovered after unseal: {recovered}; that upload's job: "
                   f"{finished}", degraded and served and told and recovered and finished == "done")


def run_all(cl: Cluster, scratch: Path, disruptive: bool = True) -> list[Outcome]:
    drills: list[tuple[str, Callable[[Cluster], Outcome]]]
    drills = [("eavesdrop", eavesdrop), ("stolen certificate", stolen_certificate),
              ("compromised worker vs Vault", compromised_worker_vault),
              ("compromised worker vs ZooKeeper", compromised_worker_zookeeper),
              ("ZooKeeper's own nodes", zookeeper_own_nodes),
              ("lateral movement", lateral_movement), ("forged / replayed result", forged_result),
              ("used secret_id", lambda c: secret_id_reuse(c, _fresh(scratch, "sid"))),
              ("expired certificate", lambda c: expired_certificate(c, _fresh(scratch, "cert"))),
              ("revoked token", revoked_token), ("flood", flood), ("connection flood", connection_flood),
              ("oversized result", oversized_result), ("decompression bombs", decompression_bombs),
              ("event stream after revocation", stream_after_revocation),
              ("certificate without its address", revocation.addressless_issuance),
              ("certificate without an IP SAN", revocation.addressless_certificate),
              ("revoked certificate", revocation.revoked_identity),
              ("provisioner token", revocation.provisioner_bounds),
              ("retired key version", revocation.retired_key_version)]
    if disruptive:
        drills.append(("Vault sealed", vault_sealed))
    return run_drills([(name, functools.partial(d, cl)) for name, d in drills], post=lambda r: _post(cl, r))


def _post(cl: Cluster, result: Outcome) -> str:
    """The drill as a SecOps event on the master the dashboard is served from (admin only)."""
    status, _h, _b = cl.request("POST", "/api/v1/events", token=cl.token("admin"), body=result.event_body(),
                                headers={"Content-Type": "application/json"})
    return f"drill event recorded on {cl.url}" if status == 201 else f"drill event not recorded ({status})"


def _fresh(base: Path, name: str) -> Path:
    path = base / name
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def main() -> None:
    import tempfile
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".histo/local").resolve()
    env_file = root / "env"
    if not env_file.exists():
        print(f"attack: no running cluster at {root} (run `make local` first)", file=sys.stderr)
        sys.exit(2)
    env = dict(line.split("=", 1) for line in env_file.read_text().split())
    cl = Cluster(root=root, env=env)
    with tempfile.TemporaryDirectory() as scratch:
        results = run_all(cl, Path(scratch))
    print(summary(results))
    sys.exit(0 if all(r.held for r in results) else 1)


if __name__ == "__main__":
    main()
