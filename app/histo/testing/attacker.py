"""What an attacker holding a compromised service's files can do: helpers for the security tests and
the local attack drills."""
from __future__ import annotations

import atexit
import http.client
import json
import shutil
import ssl
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import hvac
from kazoo.client import KazooClient

from histo.vault.client import ServiceVault
from histo.zk.client import SourceBoundHandler

if TYPE_CHECKING:
    from .cluster import Cluster


def root_client(cluster: Cluster) -> hvac.Client:
    init = json.loads((cluster.root / "vault" / "init.json").read_text())
    topo = json.loads((cluster.root / "topology.json").read_text())
    return hvac.Client(url=f"https://{topo['net']}.10:8200", verify=str(cluster.root / "vault" / "tls" / "ca.pem"),
                       token=init["root_token"])


def zk_credentials(cluster: Cluster, role: str) -> tuple[str, str]:
    data = root_client(cluster).secrets.kv.v2.read_secret_version(
        f"histo/zk/{role}", mount_point="secret", raise_on_deleted_version=True)["data"]["data"]
    return data["username"], data["password"]


def stable_tls(cluster: Cluster, service: str) -> Path:
    """A folder with a copy of the service's ca.pem, cert.pem and key.pem that belong together: the
    service renews them as two files (30 s certificates in the tests), so a read between the two writes
    would pair a new certificate with the old key (KEY_VALUES_MISMATCH). Copied again until they match."""
    tls = cluster.service_dir(service) / "tls"
    out = Path(tempfile.mkdtemp(prefix=f"histo-{service}-tls-"))  # 0700
    atexit.register(shutil.rmtree, out, True)  # a test certificate's key: gone with the process
    for _ in range(50):
        for name in ("ca.pem", "cert.pem", "key.pem"):
            shutil.copyfile(tls / name, out / name)
        try:
            ssl.create_default_context().load_cert_chain(str(out / "cert.pem"), str(out / "key.pem"))
            return out
        except (ssl.SSLError, ValueError):
            time.sleep(0.1)
    raise RuntimeError(f"cannot read a matching certificate and key of {service}")


def zk_client(cluster: Cluster, as_service: str | None, creds: tuple[str, str] | None,
              timeout: float = 8, source: str | None = None) -> KazooClient:
    """A kazoo client with `as_service`'s certificate (or none) and digest credentials (or none),
    connecting from `source`, by default `as_service`'s own address (root on that machine)."""
    topo = json.loads((cluster.root / "topology.json").read_text())
    tls = stable_tls(cluster, as_service) if as_service else None
    source = source or next((h["address"] for h in topo["hosts"] if h["name"] == as_service), None)
    client = KazooClient(hosts=f"{topo['net']}.11:2281", use_ssl=True, verify_certs=True, check_hostname=True,
                         handler=SourceBoundHandler(source) if source else None,
                         ca=cluster.ca if not tls else str(tls / "ca.pem"),
                         certfile=str(tls / "cert.pem") if tls else None, keyfile=str(tls / "key.pem") if tls else None,
                         auth_data=[("digest", f"{creds[0]}:{creds[1]}")] if creds else None, timeout=4,
                         connection_retry={"max_tries": 1, "delay": 0.2})
    client.start(timeout=timeout)
    return client


def call_from(cluster: Cluster, source: str, method: str, path: str, body: bytes | None = None,
              headers: dict[str, str] | None = None, url: str | None = None,
              timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """A call from a chosen loopback source address (throttles and bindings key on the client address)."""
    host, port = (url or cluster.url).split("//")[1].split(":")
    conn = http.client.HTTPSConnection(host, int(port), context=ssl.create_default_context(cafile=cluster.ca),
                                       source_address=(source, 0), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def get_from(cluster: Cluster, source: str, path: str, token: str,
             url: str | None = None) -> tuple[int, dict[str, str]]:
    """A GET with a bearer token from a chosen loopback source address."""
    status, headers, _ = call_from(cluster, source, "GET", path, headers={"Authorization": f"Bearer {token}"}, url=url)
    return status, headers


def service_vault(cluster: Cluster, name: str, source: str | None = None) -> ServiceVault:
    cfg = cluster.config(name)
    return ServiceVault(cfg["vault_url"], cfg["vault_ca"], host=name, role=cfg["role"],
                        creds_dir=Path(cfg["creds_dir"]), source_address=source or cfg["address"],
                        extra_ip_sans=(cfg.get("public_address", ""),))
