"""`make local`: the whole cluster as processes on loopback, against a real OpenBao server and a
real ZooKeeper. Each service gets its own 127.0.10.x address so Vault's address bindings are real.

State (secret zero, credentials, certificates, logs) lives under .histo/local, folders 0700 and
secret files 0600; `down` stops exactly the processes whose pid files `up` wrote."""
from __future__ import annotations

import json
import os
import ssl
import sys
import time
import urllib.request
from pathlib import Path

from ..tls.certs import write_private
from ..vault.provision import wrapped_secret_id, write_credentials
from ..vault.server import BaoServer
from ..vault.setup import apply as vault_apply
from ..zk.prepare import prepare_local
from ..zk.server import ZkServer
from . import procs

NET = "127.0.10"
VAULT_PORT, ZK_PORT, PUBLIC_PORT, INTERNAL_PORT = 8200, 2281, 4443, 8443
TOKEN_TTL = 3600


def topology(masters: int, workers: int, net: str = NET) -> list[dict]:
    hosts = [{"name": "zk1", "role": "zookeeper", "address": f"{net}.11"}]
    hosts += [{"name": f"master{i}", "role": "master", "address": f"{net}.{20 + i}"} for i in range(1, masters + 1)]
    hosts += [{"name": f"worker{i}", "role": "worker", "address": f"{net}.{30 + i}"} for i in range(1, workers + 1)]
    return hosts


def _say(msg: str) -> None:
    print(f"histo local: {msg}", flush=True)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def up(root: Path, masters: int = 2, workers: int = 2, cert_ttl: str = "1h", zk_session_timeout: float = 6.0,
       extra: dict | None = None, net: str = NET) -> dict:
    t_start = time.perf_counter()
    root = _mkdir(root.resolve())
    hosts = topology(masters, workers, net)
    (root / "topology.json").write_text(json.dumps({"net": net, "hosts": hosts}, indent=1))
    zk_addr = hosts[0]["address"]

    bao = BaoServer(_mkdir(root / "vault"), f"{net}.10", VAULT_PORT)
    bao.start()
    bao.init_and_unseal()
    admin = bao.root_client()  # root is used for setup and provisioning in local mode only
    vault_apply(admin, {"trust_domain": "histo.internal", "hosts": hosts, "leaf_max_ttl": "24h",
                        "audit_log": str(root / "vault" / "audit.log")})
    ca_pem = admin.secrets.pki.read_ca_certificate(mount_point="pki")
    write_private(root / "ca.pem", ca_pem.strip() + "\n")
    os.chmod(root / "ca.pem", 0o644)  # a CA certificate is public
    _say(f"OpenBao ready at {bao.url}")

    def creds_for(host: dict) -> Path:
        creds = _mkdir(root / host["name"] / "creds")
        if not (creds / "secret_id").exists() and not (creds / "secret_id.wrap").exists():
            role_id = admin.auth.approle.read_role_id(f"histo-{host['name']}")["data"]["role_id"]
            write_credentials(creds, role_id, wrapped_secret_id(admin, host["name"], host["address"]))
        return creds

    zk_host = hosts[0]
    zk = ZkServer(_mkdir(root / "zk1"), zk_addr, ZK_PORT)
    if not zk.running():
        prepare_local(zk, bao.url, str(bao.ca_path), creds_for(zk_host), zk_host["name"], zk_host["address"])
        zk.start()
    _say(f"ZooKeeper ready at {zk_addr}:{ZK_PORT} (TLS only)")

    zk_hosts = f"{zk_addr}:{ZK_PORT}"
    started = []
    for host in hosts[1:]:
        name, role = host["name"], host["role"]
        sdir = _mkdir(root / name)
        cfg = {"role": role, "name": name, "address": host["address"], "vault_url": bao.url,
               "vault_ca": str(bao.ca_path), "creds_dir": str(creds_for(host)), "state_dir": str(sdir),
               "zk_hosts": zk_hosts, "internal_port": INTERNAL_PORT, "public_port": PUBLIC_PORT,
               "cert_ttl": cert_ttl, "zk_session_timeout": zk_session_timeout, **(extra or {})}
        (sdir / "config.json").write_text(json.dumps(cfg, indent=1))
        marker = f"--config {sdir / 'config.json'}"
        if procs.alive(sdir / "pid", marker):
            continue
        procs.spawn([sys.executable, "-m", "histo.cli", role, "--config", str(sdir / "config.json")],
                    sdir / "service.log", sdir / "pid")
        started.append(name)
    if started:
        _say(f"started {', '.join(started)}")

    urls = [f"https://{h['address']}:{PUBLIC_PORT}" for h in hosts if h["role"] == "master"]
    wait_ready(urls, root / "ca.pem", workers, masters, timeout=90)
    env = write_env(root, admin, urls)
    total = time.perf_counter() - t_start
    _say(f"ready in {total:.1f}s — {urls[0]}  (env: {root / 'env'})")
    return {"urls": urls, "env": env, "seconds": total}


def write_env(root: Path, admin, urls: list[str]) -> dict:
    from ..edge.tokens import issue_token
    issuer = admin.auth.token.create(policies=["histo-token-issuer"], ttl="24h", renewable=False,
                                     display_name="histo-local-issuer")["auth"]["client_token"]
    write_private(root / "issuer-token", issuer + "\n")
    import hvac
    signer = hvac.Client(url=admin.url, verify=admin.session.verify if hasattr(admin, "session") else True)
    signer.token = issuer
    env = {"HISTO_URL": urls[0], "HISTO_URLS": ",".join(urls), "HISTO_CA": str(root / "ca.pem")}
    for role, sub in (("admin", "admin"), ("uploader", "alice"), ("viewer", "victor")):
        env[f"HISTO_TOKEN_{role.upper()}"] = issue_token(signer, role=role, subject=sub, ttl_seconds=TOKEN_TTL)
    write_private(root / "env", "".join(f"{k}={v}\n" for k, v in env.items()))
    return env


def wait_ready(urls: list[str], ca: Path, workers: int, masters: int, timeout: float) -> None:
    """Every master answers ready and sees every master and worker registered (a restarted
    service's node reappears only once its previous session has expired)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    deadline = time.time() + timeout
    last = ""
    while time.time() < deadline:
        ok = 0
        for url in urls:
            try:
                with urllib.request.urlopen(url + "/readyz", context=ctx, timeout=3) as resp:
                    doc = json.loads(resp.read())
                    seen = (doc["checks"]["workers"]["count"], doc["checks"]["masters"]["count"])
                    if seen == (workers, masters) and doc["checks"]["masters"]["ok"]:
                        ok += 1
                    else:
                        last = f"{url}: sees {seen[0]} workers and {seen[1]} masters"
            except Exception as exc:
                last = f"{url}: {exc}"
        if ok == len(urls):
            return
        time.sleep(0.3)
    raise RuntimeError(f"cluster not ready after {timeout:.0f}s ({last}); "
                       "see the logs under .histo/local/*/service.log")


def down(root: Path) -> None:
    root = root.resolve()
    if not root.exists():
        _say("nothing to stop")
        return
    stopped = []
    for sdir in sorted(root.iterdir()):
        if (sdir / "config.json").exists() and procs.stop(sdir / "pid", f"--config {sdir / 'config.json'}"):
            stopped.append(sdir.name)
    net = json.loads((root / "topology.json").read_text())["net"] if (root / "topology.json").exists() else NET
    zk = ZkServer(root / "zk1", f"{net}.11", ZK_PORT)
    if zk.stop():
        stopped.append("zk1")
    bao = BaoServer(root / "vault", f"{net}.10", VAULT_PORT)
    if bao.stop():
        stopped.append("vault")
    _say(f"stopped {', '.join(stopped) or 'nothing (already down)'}")


def status(root: Path) -> dict:
    root = root.resolve()
    out = {}
    if root.exists():
        for sdir in sorted(root.iterdir()):
            if (sdir / "config.json").exists():
                out[sdir.name] = bool(procs.alive(sdir / "pid", f"--config {sdir / 'config.json'}"))
    return out
