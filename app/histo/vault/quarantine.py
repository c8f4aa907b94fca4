"""Quarantine (issue 18): a cluster machine the SecOps collector found compromised loses its Vault
identity at once, with the collector's own token, which may do exactly this and nothing more.

contain(client, host, incident), each step idempotent, each recorded (a failed step does not stop
the next ones):
  1. policy     histo-<host> is overwritten with QUARANTINED_POLICY (no path at all): Vault evaluates
                policies at each request, so every token the host holds loses every capability of its
                own at once (the `default` policy stays: lookup/renew/revoke itself). The collector's
                policy may write that text and no other (allowed_parameters), so even a compromised
                collector cannot grant anything with it.
  2. secret_ids every secret_id of AppRole histo-<host> is destroyed (by accessor): no new login.
  3. pki_role   the host's PKI role is deleted: no new certificate, whatever token asks.
  4. certificates every unexpired certificate issued to the host is revoked (peers follow the CRL).
  5. record     KV v2 secret/histo/quarantine/<host>: host, incident id, rule, since, the steps.

Re-admitting the host is provisioning: `histo vault-setup` brings the policy and the PKI role back
(writing a policy needs a root token: the provisioner's may only verify), `histo provision` delivers a
new secret_id, then release() (the provisioner's token) checks exactly that and deletes the record.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Mapping

import hvac
from hvac.exceptions import InvalidPath

from .. import TRUST_DOMAIN
from .revoke import block_host, host_serials, revoke_serial
from .secretid import _epoch
from .setup import CONTAINABLE_ROLES, KV, QUARANTINE_KV

# The whole text of a quarantined host's policy: a comment and no path. The collector's policy allows
# exactly this value (a glob would start or end with '*': this text does neither).
QUARANTINED_POLICY = "# histo: quarantined by SecOps; vault-setup restores it, then histo quarantine release\n"
KV_MOUNT, KV_PREFIX = KV, QUARANTINE_KV


class QuarantineError(RuntimeError):
    """Refused: one readable line says why."""


def record_path(host: str) -> str:
    return f"{KV_PREFIX}/{host}"


def policy_name(host: str) -> str:
    return f"histo-{host}"


def _approle(host: str) -> str:
    return f"auth/approle/role/histo-{host}"


def _reason(exc: BaseException) -> str:
    """One line, never a secret: hvac's message lists Vault's errors, then the URL (no token in it)."""
    errors = getattr(exc, "errors", None)
    if isinstance(errors, list) and errors:
        text = "; ".join(str(e) for e in errors)
    else:
        text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}".strip().rstrip(":")


def _dict(resp: Any) -> dict[str, Any]:
    return resp if isinstance(resp, dict) else {}


def _step(actions: list[dict[str, Any]], name: str, fn: Callable[[], Any]) -> None:
    try:
        actions.append({"name": name, "ok": True, "detail": fn()})
    except Exception as exc:  # noqa: BLE001 (recorded; the next steps still run)
        actions.append({"name": name, "ok": False, "error": _reason(exc)})


def accessors(client: hvac.Client, host: str) -> list[str]:
    """The accessors of every secret_id of AppRole histo-<host> (never a secret_id)."""
    resp = _dict(client.list(f"{_approle(host)}/secret-id"))  # None: no secret_id (or no such role)
    return [str(k) for k in (resp.get("data") or {}).get("keys") or []]


def contain(client: hvac.Client, host: str, incident: Mapping[str, Any], *,
            trust_domain: str = TRUST_DOMAIN, now: float | None = None) -> dict[str, Any]:
    """Quarantine `host` (see the module's docstring). Returns {host, since, contained, actions};
    contained is True when every step succeeded."""
    since = round(time.time() if now is None else now, 3)
    actions: list[dict[str, Any]] = []

    def policy() -> str:
        client.sys.create_or_update_acl_policy(policy_name(host), QUARANTINED_POLICY)
        return f"{policy_name(host)} holds no capability"

    def secret_ids() -> dict[str, int]:
        found = accessors(client, host)
        for acc in found:
            client.write_data(f"{_approle(host)}/secret-id-accessor/destroy", data={"secret_id_accessor": acc})
        return {"destroyed": len(found)}

    def pki_role() -> str:
        block_host(client, host)
        return f"pki_int/roles/host-{host} deleted"

    def certificates() -> dict[str, list[str]]:
        revoked = []
        for serial in host_serials(client, host, trust_domain):
            revoke_serial(client, serial)
            revoked.append(serial)
        return {"revoked": revoked}

    for name, fn in (("policy", policy), ("secret_ids", secret_ids), ("pki_role", pki_role),
                     ("certificates", certificates)):
        _step(actions, name, fn)
    record = {"host": host, "incident": str(incident.get("id", "")), "rule": str(incident.get("rule", "")),
              "since": since, "actions": [{"name": a["name"], "ok": a["ok"]} for a in actions]}
    if incident.get("reason"):
        record["reason"] = str(incident["reason"])
    # what the dashboard shows beside the host: a few of the refusals that convicted it (already
    # summarised and redacted by the detector: secops/detect.py evidence_of), and when it was seen
    evidence = incident.get("evidence")
    if isinstance(evidence, list):
        record["evidence"] = [dict(e) for e in evidence[:5] if isinstance(e, Mapping)]
    for key in ("first_seen", "detected"):
        if isinstance(incident.get(key), (int, float)):
            record[key] = incident[key]

    def write_record() -> str:
        client.secrets.kv.v2.create_or_update_secret(record_path(host), secret=record, mount_point=KV_MOUNT)
        return f"{KV_MOUNT}/{record_path(host)}"

    _step(actions, "record", write_record)
    return {"host": host, "since": since, "contained": all(a["ok"] for a in actions), "actions": actions}


def revoke_tokens_of(client: hvac.Client, host: str) -> int:
    """Revoke every token that carries the host's policy (a root token: listing accessors needs sudo).
    Run before the quarantined policy is restored: otherwise the tokens the host held when it was
    contained would get their capabilities back with it. Returns how many were revoked."""
    try:
        found = _dict(client.list("auth/token/accessors")).get("data", {}).get("keys") or []
    except InvalidPath:
        return 0
    revoked = 0
    for acc in found:
        try:
            info = _dict(client.write_data("auth/token/lookup-accessor", data={"accessor": acc})).get("data") or {}
        except (InvalidPath, hvac.exceptions.InvalidRequest):  # expired meanwhile
            continue
        if policy_name(host) in (info.get("policies") or []):
            client.write_data("auth/token/revoke-accessor", data={"accessor": acc})
            revoked += 1
    return revoked


def quarantined_hosts(client: hvac.Client) -> set[str]:
    """The names on the quarantine list (list only: what the collector's own policy allows)."""
    try:
        resp = client.secrets.kv.v2.list_secrets(KV_PREFIX, mount_point=KV_MOUNT)
    except InvalidPath:  # no record at all
        return set()
    return {str(k).rstrip("/") for k in ((resp or {}).get("data") or {}).get("keys") or []}


def _read(client: hvac.Client, host: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    try:
        resp = client.secrets.kv.v2.read_secret_version(record_path(host), mount_point=KV_MOUNT,
                                                        raise_on_deleted_version=True)
    except InvalidPath:
        return None
    data = resp.get("data") or {}
    return dict(data.get("data") or {}), dict(data.get("metadata") or {})


def list_quarantined(client: hvac.Client) -> dict[str, dict[str, Any]]:
    """host -> its quarantine record; empty when none."""
    out = {}
    for host in sorted(quarantined_hosts(client)):
        found = _read(client, host)
        if found is not None:
            out[host] = found[0]
    return out


def release(client: hvac.Client, host: str) -> dict[str, Any]:
    """End `host`'s quarantine, only once re-provisioning gave it a fresh identity: its policy is no
    longer the quarantine's, its PKI role exists again and it holds a secret_id made after the
    quarantine record (Vault's clock on both sides). Deletes the record (every version)."""
    found = _read(client, host)
    if found is None:
        raise QuarantineError(f"{host} is not quarantined (no {KV_MOUNT}/{record_path(host)})")
    record, meta = found
    try:
        policy = str((_dict(client.sys.read_acl_policy(policy_name(host))).get("data") or {}).get("policy") or "")
    except InvalidPath:
        policy = ""
    if not policy.strip() or policy.strip() == QUARANTINED_POLICY.strip():
        raise QuarantineError(f"{host} is still quarantined: its policy {policy_name(host)} is not restored "
                              f"(run histo vault-setup with a root token, then provision {host})")
    try:
        role = client.read(f"pki_int/roles/host-{host}")
    except InvalidPath:
        role = None
    if not role:
        raise QuarantineError(f"{host} is still quarantined: its PKI role host-{host} is gone "
                              f"(run histo vault-setup, then provision {host})")
    # the record's own time is Vault's (like creation_time): no clock skew between hosts matters
    threshold = _epoch(str(meta["created_time"])) if meta.get("created_time") else float(record.get("since") or 0)
    fresh = 0
    for acc in accessors(client, host):
        info = _dict(client.write_data(f"{_approle(host)}/secret-id-accessor/lookup",
                                       data={"secret_id_accessor": acc}))
        created = (info.get("data") or {}).get("creation_time")
        if created and _epoch(str(created)) > threshold:
            fresh += 1
    if not fresh:
        raise QuarantineError(f"{host} is still quarantined: no secret_id of histo-{host} was made after the "
                              f"quarantine (provision {host} again)")
    client.secrets.kv.v2.delete_metadata_and_all_versions(record_path(host), mount_point=KV_MOUNT)
    return {"host": host, "released": True, "incident": record.get("incident", ""),
            "checked": {"policy": "restored", "pki_role": "present", "fresh_secret_ids": fresh}}


def guard(inventory_hosts: Iterable[Mapping[str, Any]], quarantined: set[str], host: str) -> str | None:
    """Why `host` must NOT be contained automatically (the caller alerts instead), or None."""
    hosts = {str(h.get("name")): str(h.get("role")) for h in inventory_hosts}
    role = hosts.get(host)
    if role is None:
        return f"{host} is not in the inventory"
    if role not in CONTAINABLE_ROLES:
        return f"{host} is a {role} host: never contained automatically"
    if host in quarantined:
        return None  # already out: containing it again changes nothing of what remains
    others = [n for n, r in hosts.items() if r == role and n != host and n not in quarantined]
    if not others:
        return f"{host} is the last {role} not quarantined"
    return None

