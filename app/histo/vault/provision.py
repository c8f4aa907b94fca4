"""Secret zero for a service: a secret_id bound to the host's address, delivered response-wrapped
(only a single-use, short-lived wrapping token ever leaves the provisioner)."""
from __future__ import annotations

import os
from pathlib import Path

import hvac


def wrapped_secret_id(client: hvac.Client, host: str, address: str, wrap_ttl: str = "300s") -> str:
    cidr = [f"{address}/32"]
    resp = client.write_data(f"auth/approle/role/histo-{host}/secret-id", wrap_ttl=wrap_ttl,
                             data={"cidr_list": cidr, "token_bound_cidrs": cidr})
    return resp["wrap_info"]["token"]


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")


def write_credentials(dirpath: Path, role_id: str, wrapping_token: str) -> None:
    dirpath.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_private(dirpath / "role_id", role_id)
    _write_private(dirpath / "secret_id.wrap", wrapping_token)
