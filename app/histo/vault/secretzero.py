"""Secret zero after setup: the root token is revoked and provisioning carries on with a token of
policy histo-provisioner; the unseal keys stay in their own file, never beside a token.

`histo vault-retire-root` (the vault_config role, once setup is done):
  1. with the root token, make (or keep) the provisioner token: orphan, periodic (each
     `make provision` renews it; it lapses if provisioning stops for longer than its period);
  2. revoke the root token in Vault (revoke-self);
  3. rewrite the init file with the unseal keys only, and delete the root-token file.
A later operator who truly needs root regenerates one with the unseal keys
(`histo vault-generate-root`, which is `bao operator generate-root` without a key on a command line;
docs/SECURITY.md) and retires it again with `histo vault-retire-root --root-token-file`.
Every retired root token's accessor (not a secret: it cannot act as the token) is kept in
`root-accessors` beside the provisioner token, so a test can prove each one is gone.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import hvac
from hvac.exceptions import Forbidden, InvalidPath, InvalidRequest, UnsupportedOperation

from ..files import write_private
from .setup import AUDIT_VERIFIER_TOKEN_ROLE, ISSUER_TOKEN_ROLE, PROVISIONER_POLICY, VERIFIER_TOKEN_ROLE

PROVISIONER_PERIOD = "768h"  # 32 days between two provisioning runs before the token lapses


def provisioner_token(root: hvac.Client, period: str = PROVISIONER_PERIOD) -> str:
    resp = root.auth.token.create(policies=[PROVISIONER_POLICY], no_parent=True,
                                  period=period, display_name="histo-provisioner", renewable=True)
    return str(resp["auth"]["client_token"])


def token_valid(client: hvac.Client) -> bool:
    try:
        client.auth.token.lookup_self()
        return True
    except (Forbidden, InvalidRequest):
        return False


def accessors_file(provisioner_file: Path) -> Path:
    return provisioner_file.with_name("root-accessors")


def retire_root(client: hvac.Client, init_file: Path, provisioner_file: Path,
                root_token_file: Path | None = None) -> dict[str, Any]:
    """Idempotent: with no root token left in `init_file` nor in `root_token_file` it only checks
    (and renews) the provisioner token."""
    doc = json.loads(init_file.read_text())
    out: dict[str, Any] = {"changed": False}
    root = doc.get("root_token")
    if not root and root_token_file is not None and root_token_file.exists():
        root = root_token_file.read_text().strip()  # a regenerated one (vault-generate-root)
    if root:
        admin = hvac.Client(url=client.url, verify=client.session.verify, token=root)
        current = provisioner_file.read_text().strip() if provisioner_file.exists() else ""
        if not current or not token_valid(hvac.Client(url=client.url, verify=client.session.verify,
                                                      token=current)):
            write_private(provisioner_file, provisioner_token(admin) + "\n")
            out["provisioner_token"] = "created"
        if token_valid(admin):
            accessor = str(admin.auth.token.lookup_self()["data"]["accessor"])
            known = accessors_file(provisioner_file)
            lines = known.read_text().splitlines() if known.exists() else []
            write_private(known, "".join(f"{a}\n" for a in [*lines, accessor] if a))
            admin.auth.token.revoke_self()
            out["root_token"] = "revoked"
        write_private(init_file, json.dumps({"keys": doc["keys"]}))
        if root_token_file is not None:
            root_token_file.unlink(missing_ok=True)
        out["changed"] = True
    prov = hvac.Client(url=client.url, verify=client.session.verify,
                       token=provisioner_file.read_text().strip() if provisioner_file.exists() else None)
    if not prov.token or not token_valid(prov):
        raise RuntimeError(f"no valid provisioner token in {provisioner_file} and no root token left: "
                           "regenerate a root token (docs/SECURITY.md) to make one")
    prov.auth.token.renew_self()  # periodic: every provisioning run renews it
    return out


def operator_token(provisioner: hvac.Client, role: str, ttl: str, display_name: str) -> str:
    """The operator's issuer or receipt-verifier token, through its token role (the provisioner
    itself holds neither policy)."""
    policy = {ISSUER_TOKEN_ROLE: "histo-token-issuer", VERIFIER_TOKEN_ROLE: "histo-receipt-verifier",
              AUDIT_VERIFIER_TOKEN_ROLE: "histo-audit-verifier"}[role]
    resp = provisioner.auth.token.create(role_name=role, policies=[policy], ttl=ttl, renewable=False,
                                         display_name=display_name)
    return str(resp["auth"]["client_token"])


def generate_root(client: hvac.Client, init_file: Path, out_file: Path) -> dict[str, Any]:
    """A new root token from the unseal keys (the quorum an operator would assemble), written 0600 to
    `out_file`; the one-time password never leaves this process. OpenBao ≥ 2.6 serves generation only on
    the authenticated sys/generate-root-token (policy histo-provisioner may start it; only the keys can
    finish it); HashiCorp Vault keeps the unauthenticated sys/generate-root. A half-done earlier attempt
    is cancelled first so a crashed run does not block this one."""
    keys = json.loads(init_file.read_text())["keys"]
    base, progress = _generation_attempt(client)
    if progress.get("started"):
        client.adapter.delete(f"{base}/attempt")
    attempt = _body(client.adapter.put(f"{base}/attempt", json={}))
    otp, nonce = str(attempt["otp"]), str(attempt["nonce"])
    encoded = ""
    for key in keys:
        step = _body(client.adapter.put(f"{base}/update", json={"key": key, "nonce": nonce}))
        if step.get("complete"):
            encoded = str(step["encoded_token"])
            break
    if not encoded:
        client.adapter.delete(f"{base}/attempt")
        raise RuntimeError(f"the unseal keys in {init_file} do not reach the threshold")
    raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    token = bytes(a ^ b for a, b in zip(raw, otp.encode(), strict=True)).decode()
    check = hvac.Client(url=client.url, verify=client.session.verify, token=token)
    if "root" not in check.auth.token.lookup_self()["data"]["policies"]:
        raise RuntimeError("the generated token is not a root token")
    write_private(out_file, token + "\n")
    return {"changed": True, "root_token_file": str(out_file)}


def _body(resp: Any) -> dict[str, Any]:
    """sys/generate-root-token answers inside `data`; the older sys/generate-root answers bare."""
    doc = dict(resp)
    return dict(doc["data"]) if isinstance(doc.get("data"), dict) else doc


def _generation_attempt(client: hvac.Client) -> tuple[str, dict[str, Any]]:
    """The generation endpoint this server serves, and the attempt under way there (one read)."""
    try:
        return "/v1/sys/generate-root-token", _body(client.adapter.get("/v1/sys/generate-root-token/attempt"))
    except (InvalidPath, UnsupportedOperation):  # HashiCorp Vault
        return "/v1/sys/generate-root", _body(client.adapter.get("/v1/sys/generate-root/attempt"))


def unseal(client: hvac.Client, init_file: Path) -> dict[str, Any]:
    """Unseal with the keys alone (no token), as far as the threshold; nothing to do when unsealed."""
    if not client.sys.read_seal_status()["sealed"]:
        return {"changed": False, "sealed": False}
    for key in json.loads(init_file.read_text())["keys"]:
        if not client.sys.submit_unseal_key(key)["sealed"]:
            return {"changed": True, "sealed": False}
    raise RuntimeError(f"the unseal keys in {init_file} do not reach the threshold")
