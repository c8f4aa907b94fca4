"""The PKI intermediate's live rotation, and what every peer reads to trust both during the overlap.

Vault's PKI mount `pki_int` holds several issuers (Vault >= 1.11, OpenBao): rotating adds a new
intermediate (a new key, signed by the same root) and makes it the default, so every certificate
issued from then on comes from it; the old issuer stays, retired from issuing (its `usage` keeps
`crl-signing` only, its name `retired-<epoch>`), so the certificates it issued keep verifying and can
still be revoked until they expire. Peers trust the root and present their own chain, so a leaf of
either intermediate verifies everywhere; every issuer's CRL is followed (ServiceVault.crl_bundles),
each with its intermediate, which must be signed by the root the peer trusts (tls/revocation.py).
`prune` deletes a retired issuer (and its key) once every certificate it issued has expired (retired
longer ago than the longest leaf life any role allows, read from Vault).

`histo pki rotate` / `histo pki prune` (cli.py) run these with a token allowed to manage pki_int and
sign intermediates with the root: the root token, or a regenerated one (docs/SECURITY.md)."""
from __future__ import annotations

import re
import time
from typing import Any

import hvac

ROOT, INT = "pki", "pki_int"
INTERMEDIATE_TTL = "43800h"
_RETIRED = re.compile(r"retired-(\d+)")


class PkiError(RuntimeError):
    """The mount is not in a shape a rotation can start from."""


def _data(resp: Any) -> dict[str, Any]:
    return resp.get("data", resp) if isinstance(resp, dict) else {}


def retired_at(info: dict[str, Any]) -> int | None:
    """When an issuer (its LIST key_info) was retired by `rotate`, or None for a current one."""
    m = _RETIRED.fullmatch(str(info.get("issuer_name") or ""))
    return int(m.group(1)) if m else None


def issuers(client: hvac.Client, mount: str = INT) -> dict[str, dict[str, Any]]:
    """issuer id -> {issuer_name, key_id, ...} (LIST is unauthenticated in Vault's PKI)."""
    return dict(_data(client.list(f"{mount}/issuers")).get("key_info") or {})


def default_issuer(client: hvac.Client, mount: str = INT) -> str:
    return str(_data(client.read(f"{mount}/config/issuers")).get("default") or "")


def rotate(client: hvac.Client, ttl: str = INTERMEDIATE_TTL, now: float | None = None) -> dict[str, Any]:
    """A new intermediate becomes the default issuer; the previous default is retired from issuing.
    Returns {"new": id, "retired": [ids]}. Each step is safe to repeat after a failure: a half-made
    intermediate (generated, never signed) holds only a key, which `prune` of a later run ignores."""
    now = time.time() if now is None else now
    old = default_issuer(client)
    if not old:
        raise PkiError(f"{INT} has no default issuer: run vault setup first")
    stamp = int(now)
    csr = _data(client.write_data(f"{INT}/intermediate/generate/internal", data={
        "common_name": f"histo intermediate CA {stamp}", "key_type": "ec", "key_bits": 256,
        "key_name": f"intermediate-{stamp}"}))["csr"]
    signed = _data(client.write_data(f"{ROOT}/root/sign-intermediate", data={
        "csr": csr, "common_name": f"histo intermediate CA {stamp}", "ttl": ttl, "format": "pem",
        "max_path_length": 0}))
    root_pem = str(_data(client.read(f"{ROOT}/cert/ca"))["certificate"]).strip()
    imported = _data(client.write_data(f"{INT}/intermediate/set-signed", data={
        "certificate": str(signed["certificate"]).strip() + "\n" + root_pem + "\n"}))
    new = [i for i in imported.get("imported_issuers") or [] if _has_key(client, i)]
    if len(new) != 1:
        raise PkiError(f"the signed intermediate was imported as {imported.get('imported_issuers')!r}")
    client.write_data(f"{INT}/issuer/{new[0]}", data={"issuer_name": f"intermediate-{stamp}"})
    # the new one issues from now on; the old one may sign CRLs (revocations of what it issued) only
    client.write_data(f"{INT}/config/issuers", data={"default": new[0]})
    retired = []
    for iid, info in issuers(client).items():
        if iid != new[0] and info.get("key_id") and retired_at(info) is None:
            client.write_data(f"{INT}/issuer/{iid}", data={"issuer_name": f"retired-{stamp}",
                                                           "usage": "read-only,crl-signing"})
            retired.append(iid)
    return {"new": new[0], "retired": retired, "previous_default": old}


def _has_key(client: hvac.Client, issuer_id: str) -> bool:
    return bool(_data(client.read(f"{INT}/issuer/{issuer_id}")).get("key_id"))


def longest_leaf(client: hvac.Client, mount: str = INT) -> int:
    """The longest life any PKI role of the mount may give a certificate (seconds): a retired issuer
    may still have live leaves for that long after it stopped issuing."""
    names = _data(client.list(f"{mount}/roles")).get("keys") or []
    lives = [int(_data(client.read(f"{mount}/roles/{n}")).get("max_ttl") or 0) for n in names]
    mount_max = int((_data(client.read(f"sys/mounts/{mount}/tune")).get("max_lease_ttl")) or 0)
    return max([*lives, 0]) or mount_max


def prune(client: hvac.Client, at_least: int = 0, now: float | None = None) -> list[str]:
    """Delete every retired issuer (and its key) whose last certificate has expired: retired longer
    ago than the longest leaf life any role of the mount allows (read from Vault, never guessed; `at_least`
    only raises it). The default issuer is never touched. Returns the deleted ids."""
    now = time.time() if now is None else now
    wait = max(int(at_least), longest_leaf(client))
    default = default_issuer(client)
    gone = []
    for iid, info in issuers(client).items():
        since = retired_at(info)
        if iid == default or since is None or now - since <= wait:
            continue
        key_id = info.get("key_id")
        client.delete(f"{INT}/issuer/{iid}")
        if key_id:
            client.delete(f"{INT}/key/{key_id}")
        gone.append(iid)
    return gone


def issuer_pem(client: hvac.Client, issuer_id: str, mount: str = INT) -> str:
    return str(_data(client.read(f"{mount}/issuer/{issuer_id}/json"))["certificate"]).strip()


def intermediates_pem(client: hvac.Client, mount: str = INT) -> list[str]:
    """Every issuer's certificate of the mount (PEM), retired ones last. Both calls are unauthenticated
    in Vault's PKI, so a service needs no policy line for them."""
    found = issuers(client, mount)
    ids = sorted(found, key=lambda i: retired_at(found[i]) is not None)
    return [issuer_pem(client, i, mount) for i in ids]
