"""Secret zero after setup: the root token is revoked and provisioning carries on with a token of
policy histo-provisioner; the unseal keys stay in their own file, never beside a token.

`histo vault-retire-root` (the vault_config role, once setup is done):
  1. with the root token, make (or keep) the provisioner token: orphan, periodic (each
     `make provision` renews it; it lapses if provisioning stops for longer than its period);
  2. revoke the root token in Vault (revoke-self);
  3. rewrite the init file with the unseal keys only, and delete the root-token file.
A later operator who truly needs root regenerates one with the unseal keys
(`bao operator generate-root`, docs/SECURITY.md) and revokes it again when done.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hvac
from hvac.exceptions import Forbidden, InvalidRequest

from ..files import write_private
from .setup import ISSUER_TOKEN_ROLE, PROVISIONER_POLICY, VERIFIER_TOKEN_ROLE

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


def retire_root(client: hvac.Client, init_file: Path, provisioner_file: Path,
                root_token_file: Path | None = None) -> dict[str, Any]:
    """Idempotent: with no root token left in `init_file` it only checks the provisioner token."""
    doc = json.loads(init_file.read_text())
    out: dict[str, Any] = {"changed": False}
    root = doc.get("root_token")
    if root:
        admin = hvac.Client(url=client.url, verify=client.session.verify, token=root)
        current = provisioner_file.read_text().strip() if provisioner_file.exists() else ""
        if not current or not token_valid(hvac.Client(url=client.url, verify=client.session.verify,
                                                      token=current)):
            write_private(provisioner_file, provisioner_token(admin) + "\n")
            out["provisioner_token"] = "created"
        if token_valid(admin):
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
    policy = {ISSUER_TOKEN_ROLE: "histo-token-issuer", VERIFIER_TOKEN_ROLE: "histo-receipt-verifier"}[role]
    resp = provisioner.auth.token.create(role_name=role, policies=[policy], ttl=ttl, renewable=False,
                                         display_name=display_name)
    return str(resp["auth"]["client_token"])
