"""The SecOps collector's side for tests against a local cluster (which runs no collector): its identity
issued from the cluster's real OpenBao PKI, exactly as vault/setup.py makes it for an inventory host of
role secops (PKI role host-<name>: its names, its address, its SPIFFE id), a record written by the
collector's own ChainLog, and pushes to a master's internal listener as the relay makes them."""
from __future__ import annotations

import http.client
import json
import secrets
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import TRUST_DOMAIN
from ..files import write_private
from ..tls.identity import spiffe_id
from ..vault.setup import INT, _Applier
from .attacker import root_client

if TYPE_CHECKING:
    from .cluster import Cluster

PUSH_PATH = "/internal/v1/secops/events"


def net(cluster: Cluster) -> str:
    return str(json.loads((cluster.root / "topology.json").read_text())["net"])


def host(cluster: Cluster, name: str = "secops1") -> dict[str, str]:
    return {"name": name, "role": "secops", "address": f"{net(cluster)}.40"}


def issue_identity(cluster: Cluster, out: Path, name: str = "secops1", ttl: str = "30m") -> Path:
    """cert.pem (leaf + intermediate), key.pem (0600), ca.pem in `out`: the secops identity of `name`,
    from the PKI role vault/setup.py gives such a host (made here with the cluster's root token, as
    `histo vault-setup` would for an inventory that has a collector)."""
    h = host(cluster, name)
    client = root_client(cluster)
    _Applier(client, {"trust_domain": TRUST_DOMAIN}).pki_role(h)
    answer: Any = client.write_data(f"{INT}/issue/host-{name}", data={
        "common_name": f"{name}.{TRUST_DOMAIN}", "ip_sans": h["address"], "uri_sans": spiffe_id("secops", name),
        "ttl": ttl, "format": "pem", "private_key_format": "pkcs8"})
    data = answer["data"]
    out.mkdir(parents=True, exist_ok=True)
    chain = [c.strip() for c in (data.get("ca_chain") or [data["issuing_ca"]])]
    write_private(out / "key.pem", data["private_key"].strip() + "\n")
    write_private(out / "cert.pem", "\n".join([data["certificate"].strip(), *chain[:1]]) + "\n", 0o644)
    write_private(out / "ca.pem", Path(cluster.ca).read_bytes(), 0o644)
    return out


def forget_identity(cluster: Cluster, name: str = "secops1") -> None:
    root_client(cluster).secrets.pki.delete_role(f"host-{name}", mount_point=INT)


def record_id() -> str:
    """A record id of its own for a test (the hash of a record's first entry, as the relay sends it)."""
    return secrets.token_hex(32)


def refusal(seq: int, what: str, host: str = "worker1", layer: str = "vault", kind: str = "vault_denied",
            severity: str = "warning", where: str = "vault1", role: str = "worker") -> dict[str, Any]:
    """One event as the relay pushes it (edge/openapi.py SECOPS_EVENT)."""
    return {"record_seq": seq, "ts": 1.0, "layer": layer, "kind": kind, "severity": severity, "host": host,
            "spiffe": spiffe_id(role, host) if host != "outside" else None, "address": None, "where": where,
            "what": what, "why": "permission denied"}


def push(cluster: Cluster, master: str, body: bytes, tls: Path | None = None, source: str | None = None,
         cert: Path | None = None, key: Path | None = None, path: str = PUSH_PATH,
         method: str = "POST") -> tuple[int, dict[str, Any]]:
    """A call to `master`'s internal listener with the identity in `tls` (or `cert`/`key`; none: no client
    certificate) from `source` (default: the secops host's address). Answers (status, JSON body)."""
    cfg = json.loads((cluster.root / master / "config.json").read_text())
    ctx = ssl.create_default_context(cafile=cluster.ca)
    if tls is not None or cert is not None:
        ctx.load_cert_chain(str(cert or tls / "cert.pem"), str(key or tls / "key.pem"))  # type: ignore[operator]
    src = source or f"{net(cluster)}.40"
    conn = http.client.HTTPSConnection(cfg["address"], cfg["internal_port"], context=ctx, timeout=15,
                                       source_address=(src, 0))
    try:
        conn.request(method, path, body=body if method == "POST" else None,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        doc = json.loads(raw or b"{}")
    except ValueError:
        doc = {"raw": raw[:200].decode("latin-1")}
    return resp.status, doc if isinstance(doc, dict) else {"value": doc}


def batch(record: str, events: list[dict[str, Any]]) -> bytes:
    return json.dumps({"record": record, "events": events}).encode()
