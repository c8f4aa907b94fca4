"""Local drills for issue 13, items 4 and 9: address-bound issuance, certificates without an
address, revocation of a workload identity (live connections included), the provisioner token's
bounds, and a retired transit key version. Registered in attack/local.py's run_all."""
from __future__ import annotations

import http.client
import json
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

import hvac
from cryptography import x509

from histo.edge.tokens import issue_token
from histo.testing.attacker import root_client
from histo.testing.cluster import Cluster
from histo.vault.client import ServiceVault
from histo.vault.revoke import revoke

from .outcome import Outcome

RESULT_HEADERS = {"X-Histo-Job": "x", "X-Histo-Task": "0", "X-Histo-Attempt": "x", "X-Histo-Phase": "equalize",
                  "X-Histo-Image-Mode": "L", "X-Histo-Width": "4", "X-Histo-Rows": "1", "X-Histo-Reply-To": "https://x"}
RESULT = json.dumps([0] * 256).encode()
REFUSED = (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest)


def _d(resp: Any) -> dict[str, Any]:
    return resp if isinstance(resp, dict) else {}


def _masters(cl: Cluster) -> list[str]:
    return [h["name"] for h in json.loads((cl.root / "topology.json").read_text())["hosts"] if h["role"] == "master"]


def _copy(cl: Cluster, name: str, scratch: Path) -> tuple[str, str, int]:
    tls = cl.service_dir(name) / "tls"
    for _ in range(20):
        cert, key = (tls / "cert.pem").read_bytes(), (tls / "key.pem").read_bytes()
        c, k = scratch / f"{name}-{time.time_ns()}.crt", scratch / f"{name}-{time.time_ns()}.key"
        c.write_bytes(cert)
        k.write_bytes(key)
        try:
            ssl.create_default_context().load_cert_chain(str(c), str(k))
            return str(c), str(k), x509.load_pem_x509_certificates(cert)[0].serial_number
        except (ssl.SSLError, ValueError):
            time.sleep(0.1)
    raise RuntimeError(f"cannot read {name}'s certificate")


def _conn(cl: Cluster, target: str, cert: str, key: str, source: str) -> http.client.HTTPSConnection:
    ctx = ssl.create_default_context(cafile=cl.ca)
    ctx.load_cert_chain(cert, key)
    cfg = cl.config(target)
    return http.client.HTTPSConnection(cfg["address"], cfg["internal_port"], context=ctx, timeout=10,
                                       source_address=(source, 0))


def _join(conn: http.client.HTTPSConnection) -> int:
    """A call a worker may make that keeps the connection open (an unread result body closes it)."""
    conn.request("POST", "/internal/v1/join", body=b"")
    resp = conn.getresponse()
    resp.read()
    return resp.status


def _post(conn: http.client.HTTPSConnection) -> int:
    conn.request("POST", "/internal/v1/results", body=RESULT, headers=RESULT_HEADERS)
    resp = conn.getresponse()
    resp.read()
    return resp.status


def _once(cl: Cluster, target: str, cert: str, key: str, source: str) -> int:
    conn = _conn(cl, target, cert, key, source)
    try:
        return _post(conn)
    finally:
        conn.close()


def addressless_issuance(cl: Cluster) -> Outcome:
    cfg = cl.config("worker1")
    v = ServiceVault(cfg["vault_url"], cfg["vault_ca"], host="worker1", role="worker",
                     creds_dir=Path(cfg["creds_dir"]), source_address=cfg["address"])
    v.login()
    base = {"common_name": "worker1.histo.internal", "uri_sans": "spiffe://histo.internal/worker/worker1",
            "ttl": "60s", "format": "pem", "private_key_format": "pkcs8"}
    refused = 0
    for ip in (None, "", cl.config("worker2")["address"]):
        try:
            v.client.write_data("pki_int/issue/host-worker1", data=base if ip is None else {**base, "ip_sans": ip})
        except REFUSED:
            refused += 1
    legit = v.client.write_data("pki_int/issue/host-worker1", data={**base, "ip_sans": cfg["address"]})
    ok = bool(_d(legit)["data"]["certificate"])
    return Outcome("certificate without its address", "worker1's own token: a certificate with no IP SAN, "
                   "an empty one, worker2's address", f"refused {refused}/3; with its own address: "
                   f"{'issued' if ok else 'refused'}", refused == 3 and ok)


def addressless_certificate(cl: Cluster) -> Outcome:
    data = _d(root_client(cl).write_data("pki_int/issue/host-worker1", data={
        "common_name": "worker1.histo.internal", "uri_sans": "spiffe://histo.internal/worker/worker1",
        "ttl": "60s", "format": "pem", "private_key_format": "pkcs8"}))["data"]
    with tempfile.TemporaryDirectory() as tmp:
        c, k = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
        c.write_text(data["certificate"] + "\n" + data["issuing_ca"] + "\n")
        k.write_text(data["private_key"])
        src = cl.config("worker1")["address"]
        got = {m: _once(cl, m, str(c), str(k), src) for m in _masters(cl)}
        lc, lk, _ = _copy(cl, "worker1", Path(tmp))
        legit = _once(cl, _masters(cl)[0], lc, lk, src)
    held = all(s == 403 for s in got.values()) and legit == 409
    return Outcome("certificate without an IP SAN", "a worker certificate of our CA with no address "
                   "(what the old policy allowed), at every master", f"answers {got}; worker1's own: {legit}", held)


def revoked_identity(cl: Cluster) -> Outcome:
    masters = _masters(cl)
    w1, w2 = cl.config("worker1")["address"], cl.config("worker2")["address"]
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        cert, key, serial = _copy(cl, "worker1", scratch)
        kept = {m: _conn(cl, m, cert, key, w1) for m in masters}
        before = {m: _join(c) for m, c in kept.items()}
        before = {m: s if kept[m].sock is not None else -1 for m, s in before.items()}  # -1: not kept open
        t0 = time.time()
        revoke(root_client(cl), serial=f"{serial:x}")
        refused_in = {}
        for m in masters:
            while time.time() - t0 < 15 and _once(cl, m, cert, key, w1) != 403:
                time.sleep(0.2)
            refused_in[m] = round(time.time() - t0, 1)
        hung_up = 0
        for c in kept.values():
            try:
                c.auto_open = 0  # the kept connection itself, never a new one
                _join(c)
            except (http.client.HTTPException, OSError):
                hung_up += 1
            c.close()
        c2, k2, _ = _copy(cl, "worker2", scratch)
        others = [_once(cl, m, c2, k2, w2) for m in masters]
        new = None
        while time.time() - t0 < 20:
            nc, nk, ns = _copy(cl, "worker1", scratch)
            if ns != serial:
                new = [_once(cl, m, nc, nk, w1) for m in masters]
                break
            time.sleep(0.3)
    held = (all(s == 200 for s in before.values()) and all(t < 10 for t in refused_in.values())
            and hung_up == len(masters) and all(s == 409 for s in others) and new is not None
            and all(s == 409 for s in new))
    return Outcome("revoked certificate", "worker1's current serial revoked while it holds keep-alive "
                   "connections to every master",
                   f"refused after {refused_in} s; open connections closed: {hung_up}/{len(masters)}; worker2: "
                   f"{others}; worker1's fresh certificate: {new}", held)


def provisioner_bounds(cl: Cluster) -> Outcome:
    root = root_client(cl)
    prov = hvac.Client(url=root.url, verify=root.session.verify,
                       token=(cl.root / "provisioner-token").read_text().strip())
    return provisioner_bounds_with(prov, "worker2", cl.config("worker2")["address"])


def provisioner_bounds_with(prov: hvac.Client, host: str, address: str) -> Outcome:
    """Local mode and the deployed cluster (attack/identity.py) alike: what `make provision` holds."""
    refused = []
    for what, fn in (("an unwrapped secret_id", lambda: prov.write_data("auth/approle/role/histo-worker1/secret-id")),
                     ("a token with a host policy", lambda: prov.auth.token.create(policies=["histo-master1"])),
                     ("rewrite its own policy", lambda: prov.sys.create_or_update_policy(
                         "histo-provisioner", 'path "*" { capabilities = ["sudo"] }')),
                     ("read the ZooKeeper super digest", lambda: prov.secrets.kv.v2.read_secret_version(
                         "histo/zk/super", mount_point="secret", raise_on_deleted_version=True)),
                     ("sign an API token", lambda: prov.secrets.transit.sign_data(
                         "histo-tokens", "aGk=", mount_point="transit")),
                     ("seal Vault", prov.sys.seal)):
        try:
            fn()
        except REFUSED:
            refused.append(what)
    wrapped = prov.write_data(f"auth/approle/role/histo-{host}/secret-id", wrap_ttl="60s",
                              data={"cidr_list": [address + "/32"]})
    ok = bool(_d(wrapped)["wrap_info"]["token"])
    # Never delivered: the drill unwraps its own secret_id and destroys it, so nothing it made outlives it.
    unwrapped = hvac.Client(url=prov.url, verify=prov.session.verify,
                            token=_d(wrapped)["wrap_info"]["token"]).sys.unwrap()
    prov.write_data(f"auth/approle/role/histo-{host}/secret-id/destroy",
                    data={"secret_id": _d(unwrapped)["data"]["secret_id"]})
    return Outcome("provisioner token", "6 calls beyond provisioning with the provisioner token",
                   f"refused {len(refused)}/6; a wrapped secret_id: {'delivered' if ok else 'refused'}",
                   len(refused) == 6 and ok)


def retired_key_version(cl: Cluster) -> Outcome:
    root = root_client(cl)
    old = issue_token(root, role="uploader", subject="drill", ttl_seconds=600)
    root.secrets.transit.rotate_key("histo-tokens", mount_point="transit")
    latest = int(root.secrets.transit.read_key("histo-tokens", mount_point="transit")["data"]["latest_version"])
    new = issue_token(root, role="uploader", subject="drill", ttl_seconds=600)
    time.sleep(1.5)
    try:
        root.secrets.transit.update_key_configuration("histo-tokens", min_decryption_version=latest,
                                                      mount_point="transit")
        time.sleep(3.0)
        olds = [cl.request("GET", "/api/v1/jobs", token=old, url=u)[0] for u in cl.urls]
        news = [cl.request("GET", "/api/v1/jobs", token=new, url=u)[0] for u in cl.urls]
    finally:  # the operator's env tokens are of older versions: give them back
        root.secrets.transit.update_key_configuration("histo-tokens", min_decryption_version=1,
                                                      mount_point="transit")
        time.sleep(3.0)
    held = all(s == 401 for s in olds) and all(s == 200 for s in news)
    return Outcome("retired key version", "a token of a version below a freshly raised min_decryption_version, "
                   "3 s later, at every master", f"old token: {olds}; current token: {news}", held)
