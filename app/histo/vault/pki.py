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
sign intermediates with the root: the root token, or a regenerated one (docs/SECURITY.md).

**Root rotation** (`histo pki root-stage`, then `histo pki root-finish`, then `histo pki prune`) is the
same idea one level up, in two steps with a wait between them, because a peer refuses a leaf whose
root is not in its bundle and a peer's bundle (tls/certs.py writes ca.pem) is only refreshed when that
peer renews its own certificate:

1. `root_stage`: a new root (`root-<epoch>`, its own key) in `pki`, and a new intermediate signed by it
   in `pki_int`, named `staged-<epoch>` and used for nothing (`read-only,crl-signing`): no leaf of the
   new chain exists yet. Every bundle (ServiceVault.ca_chain_pem: every root of `pki`, every
   intermediate of `pki_int`) now holds both roots; each peer picks it up at its next renewal.
2. `root_finish`, refused until every peer has renewed since the stage: the longest leaf life any PKI
   role allows (read from Vault, as `prune` does; a renewal comes at 2/3 of a life, so every peer still
   holding a valid certificate has renewed by then). The new root becomes `pki`'s default, the staged
   intermediate `pki_int`'s; the old root and every old intermediate are retired (`retired-<epoch>`,
   CRL signing only). Leaves of the old chain keep verifying (the old root stays in every bundle) and
   can still be revoked (their intermediate's CRL, vouched for by the old root, tls/revocation.py).
3. `prune`, once every certificate of the old chain has expired (the same longest leaf life after the
   finish): the retired intermediates, then the retired roots nothing left in `pki_int` hangs from,
   then `pki_int`'s copies of those roots; the old root leaves every bundle at the next renewals.

Why not cross-signing (the new intermediate also signed by the old root, so no wait): Vault picks the
chain it hands out from two issuers sharing one key, every peer's leaf would have to carry the
cross-signed certificate and later swap it, and the old root could not leave a bundle without each
peer's chain-building picking the other certificate; the wait is the price of one chain per leaf, and
the staged intermediate issues nothing during it, so aborting is only deleting it (docs/SECURITY.md)."""
from __future__ import annotations

import re
import time
from typing import Any, Callable

import hvac
from cryptography import x509
from cryptography.exceptions import InvalidSignature

ROOT, INT = "pki", "pki_int"
INTERMEDIATE_TTL = "43800h"
ROOT_TTL = "87600h"
RETIRED_USAGE = "read-only,crl-signing"
ISSUING_USAGE = "read-only,issuing-certificates,crl-signing,ocsp-signing"  # Vault's default usage
_RETIRED = re.compile(r"retired-(\d+)")
_STAGED = re.compile(r"staged-(\d+)")
_NEW_ROOT = re.compile(r"root-(\d+)")


class PkiError(RuntimeError):
    """The mount is not in a shape a rotation can start from."""


def _data(resp: Any) -> dict[str, Any]:
    return resp.get("data", resp) if isinstance(resp, dict) else {}


def retired_at(info: dict[str, Any]) -> int | None:
    """When an issuer (its LIST key_info) was retired by `rotate`, or None for a current one."""
    m = _RETIRED.fullmatch(str(info.get("issuer_name") or ""))
    return int(m.group(1)) if m else None


def staged_at(info: dict[str, Any]) -> int | None:
    """When an intermediate (its LIST key_info) was staged by `root_stage` and not yet finished."""
    m = _STAGED.fullmatch(str(info.get("issuer_name") or ""))
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
    if staged(client):  # its intermediate would be retired before ever issuing
        raise PkiError("a root rotation is staged: run `histo pki root-finish` first")
    stamp = int(now)
    new = _new_intermediate(client, f"{ROOT}/root/sign-intermediate",
                            lambda: str(_data(client.read(f"{ROOT}/cert/ca"))["certificate"]), ttl, stamp)
    client.write_data(f"{INT}/issuer/{new}", data={"issuer_name": f"intermediate-{stamp}"})
    # the new one issues from now on; the old one may sign CRLs (revocations of what it issued) only
    client.write_data(f"{INT}/config/issuers", data={"default": new})
    retired = _retire_others(client, INT, new, stamp)
    return {"new": new, "retired": retired, "previous_default": old}


def _new_intermediate(client: hvac.Client, sign_path: str, root_pem: Callable[[], str], ttl: str,
                      stamp: int) -> str:
    """A new key and CSR in pki_int, signed at `sign_path` (a root issuer of pki), imported with that
    root's certificate: the id of the one imported issuer that has a key (the intermediate)."""
    csr = _data(client.write_data(f"{INT}/intermediate/generate/internal", data={
        "common_name": f"histo intermediate CA {stamp}", "key_type": "ec", "key_bits": 256,
        "key_name": f"intermediate-{stamp}"}))["csr"]
    signed = _data(client.write_data(sign_path, data={
        "csr": csr, "common_name": f"histo intermediate CA {stamp}", "ttl": ttl, "format": "pem",
        "max_path_length": 0}))
    imported = _data(client.write_data(f"{INT}/intermediate/set-signed", data={
        "certificate": str(signed["certificate"]).strip() + "\n" + root_pem().strip() + "\n"}))
    new = [i for i in imported.get("imported_issuers") or [] if _has_key(client, i)]
    if len(new) != 1:
        raise PkiError(f"the signed intermediate was imported as {imported.get('imported_issuers')!r}")
    return str(new[0])


def _retire_others(client: hvac.Client, mount: str, keep: str, stamp: int) -> list[str]:
    """Every current issuer of `mount` with a key but `keep` may sign CRLs only, from now on."""
    retired = []
    for iid, info in issuers(client, mount).items():
        if iid != keep and info.get("key_id") and retired_at(info) is None and staged_at(info) is None:
            client.write_data(f"{mount}/issuer/{iid}", data={"issuer_name": f"retired-{stamp}",
                                                             "usage": RETIRED_USAGE})
            retired.append(iid)
    return retired


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
    only raises it). The default issuer is never touched. After a root rotation, a retired root of `pki`
    goes too, once no intermediate left in `pki_int` hangs from it, and with it `pki_int`'s copy of it
    (set-signed imported one), so it leaves every bundle. Returns the deleted ids; a re-run deletes nothing."""
    now = time.time() if now is None else now
    wait = max(int(at_least), longest_leaf(client))
    gone = _prune_mount(client, INT, wait, now)
    left = [_cert(issuer_pem(client, i)) for i, info in issuers(client).items() if info.get("key_id")]
    gone += _prune_mount(client, ROOT, wait, now,
                         spare=lambda iid: not any(_issued_by(c, _cert(issuer_pem(client, iid, ROOT))) for c in left))
    roots = {_cert(pem) for pem in roots_pem(client)}
    for iid, info in issuers(client).items():
        if info.get("key_id"):
            continue
        cert = _cert(issuer_pem(client, iid))
        if cert.subject == cert.issuer and cert not in roots:  # a copy of a root no longer in pki
            client.delete(f"{INT}/issuer/{iid}")
            gone.append(iid)
    return gone


def _prune_mount(client: hvac.Client, mount: str, wait: int, now: float,
                 spare: Callable[[str], bool] = lambda iid: True) -> list[str]:
    default = default_issuer(client, mount)
    gone = []
    for iid, info in issuers(client, mount).items():
        since = retired_at(info)
        if iid == default or since is None or now - since <= wait or not spare(iid):
            continue
        key_id = info.get("key_id")
        client.delete(f"{mount}/issuer/{iid}")
        if key_id:
            client.delete(f"{mount}/key/{key_id}")
        gone.append(iid)
    return gone


def _cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """`issuer` signed `cert` (name and signature, not only the name)."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# -- root rotation (module docstring) -----------------------------------------------------------------

def staged(client: hvac.Client) -> tuple[str, int] | None:
    """(the staged intermediate's id, when its root was made) while a root rotation is staged, else None."""
    for iid, info in issuers(client).items():
        at = staged_at(info)
        if at is not None and info.get("key_id"):
            return iid, at
    return None


def _named(client: hvac.Client, mount: str, name: str) -> str:
    return next((i for i, info in issuers(client, mount).items() if info.get("issuer_name") == name), "")


def _keep_default(client: hvac.Client, mount: str, want: str) -> None:
    """A mount configured with default_follows_latest_issuer moves its default to what was just made."""
    if default_issuer(client, mount) != want:
        client.write_data(f"{mount}/config/issuers", data={"default": want})


def root_stage(client: hvac.Client, root_ttl: str = ROOT_TTL, ttl: str = INTERMEDIATE_TTL,
               now: float | None = None) -> dict[str, Any]:
    """Step 1: publish a new root and an intermediate under it that issues nothing yet. Returns
    {"changed", "root", "staged", "staged_at"}; a re-run while staged changes nothing, and a re-run
    after a failure reuses the root it had made."""
    now = time.time() if now is None else now
    old_root, old_int = default_issuer(client, ROOT), default_issuer(client)
    if not old_root or not old_int:
        raise PkiError(f"{ROOT} or {INT} has no default issuer: run vault setup first")
    found = staged(client)
    if found:
        return {"changed": False, "root": _named(client, ROOT, f"root-{found[1]}"), "staged": found[0],
                "staged_at": found[1]}
    spare = [(int(m.group(1)), iid) for iid, info in issuers(client, ROOT).items()
             if iid != old_root and (m := _NEW_ROOT.fullmatch(str(info.get("issuer_name") or "")))]
    if spare:  # a stage that failed after making its root
        stamp, root_id = max(spare)
    else:
        stamp = int(now)
        root_id = str(_data(client.write_data(f"{ROOT}/root/generate/internal", data={
            "common_name": f"histo root CA {stamp}", "key_type": "ec", "key_bits": 256, "ttl": root_ttl,
            "issuer_name": f"root-{stamp}", "key_name": f"root-{stamp}"}))["issuer_id"])
        _keep_default(client, ROOT, old_root)
    fresh = int(now)  # key names are unique in a mount: a retried stage makes its key under a new one
    new = _new_intermediate(client, f"{ROOT}/issuer/{root_id}/sign-intermediate",
                            lambda: issuer_pem(client, root_id, ROOT), ttl, fresh)
    # named as staged and kept from issuing until root-finish: no leaf of the new chain before every
    # peer's bundle holds the new root
    client.write_data(f"{INT}/issuer/{new}", data={"issuer_name": f"staged-{stamp}", "usage": RETIRED_USAGE})
    _keep_default(client, INT, old_int)
    return {"changed": True, "root": root_id, "staged": new, "staged_at": stamp}


def root_finish(client: hvac.Client, wait: int | None = None, now: float | None = None) -> dict[str, Any]:
    """Step 2: the new root and its intermediate become the defaults; the old root and intermediates
    are retired (CRL signing only). Refused until `wait` seconds (by default the longest leaf life,
    read from Vault) have passed since the stage. Nothing staged: changes nothing."""
    now = time.time() if now is None else now
    found = staged(client)
    if not found:
        return {"changed": False, "root": default_issuer(client, ROOT), "intermediate": default_issuer(client)}
    iid, stamp = found
    need = longest_leaf(client) if wait is None else int(wait)
    if now - stamp < need:
        left = int(need - (now - stamp))
        raise PkiError(f"the new root was published {int(now - stamp)}s ago; peers renew their CA bundle within "
                       f"{need}s (the longest leaf life): run root-finish again in {left}s")
    new_root = _named(client, ROOT, f"root-{stamp}")
    if not new_root:
        raise PkiError(f"the staged intermediate's root (root-{stamp}) is missing from {ROOT}")
    previous = {"previous_root": default_issuer(client, ROOT), "previous_default": default_issuer(client)}
    client.write_data(f"{ROOT}/config/issuers", data={"default": new_root})
    retired_roots = _retire_others(client, ROOT, new_root, int(now))
    # issuing again, made the default, the old ones retired; the staged name goes last, so a re-run
    # after a failure anywhere here finds the stage and completes it
    client.write_data(f"{INT}/issuer/{iid}", data={"issuer_name": f"staged-{stamp}", "usage": ISSUING_USAGE})
    client.write_data(f"{INT}/config/issuers", data={"default": iid})
    retired = _retire_others(client, INT, iid, int(now))
    client.write_data(f"{INT}/issuer/{iid}", data={"issuer_name": f"intermediate-{stamp}", "usage": ISSUING_USAGE})
    return {"changed": True, "root": new_root, "intermediate": iid, "retired_roots": retired_roots,
            "retired": retired, **previous}


def roots_pem(client: hvac.Client) -> list[str]:
    """Every root of `pki` (PEM), the default first: during a root rotation's overlap, both."""
    # every read here is unauthenticated in Vault's PKI (config/issuers is not): a service needs no policy
    pems = [str(_data(client.read(f"{ROOT}/cert/ca"))["certificate"]).strip()]
    for i in sorted(issuers(client, ROOT)):
        pem = issuer_pem(client, i, ROOT)
        if pem not in pems:
            pems.append(pem)
    return pems


def issuer_pem(client: hvac.Client, issuer_id: str, mount: str = INT) -> str:
    return str(_data(client.read(f"{mount}/issuer/{issuer_id}/json"))["certificate"]).strip()


def intermediates_pem(client: hvac.Client, mount: str = INT) -> list[str]:
    """Every issuer's certificate of the mount (PEM), retired ones last. Both calls are unauthenticated
    in Vault's PKI, so a service needs no policy line for them."""
    found = issuers(client, mount)
    ids = sorted(found, key=lambda i: retired_at(found[i]) is not None)
    return [issuer_pem(client, i, mount) for i in ids]
