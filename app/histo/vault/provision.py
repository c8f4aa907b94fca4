"""Secret zero for a service: a secret_id bound to the host's address, delivered response-wrapped.
Only a single-use, short-lived wrapping token ever leaves the provisioner: whoever unwraps it first
gets the secret_id, so a service that finds its token already used knows it was intercepted."""
from __future__ import annotations

import os
from pathlib import Path

import hvac

from .setup import APPROLE, host_cidr
from ..files import private_dir, write_private


def wrapped_secret_id(client: hvac.Client, host: str, address: str, wrap_ttl: str = "120s") -> str:
    """A new secret_id for AppRole histo-<host>, usable only from `address` (and its tokens too),
    response-wrapped: returns the wrapping token only, never the secret_id itself."""
    cidr = [host_cidr(address)]
    resp = client.write_data(f"auth/{APPROLE}/role/histo-{host}/secret-id", wrap_ttl=wrap_ttl,
                             data={"cidr_list": cidr, "token_bound_cidrs": cidr})
    return resp["wrap_info"]["token"]


def write_credentials(dirpath: Path, role_id: str, wrapping_token: str) -> None:
    """role_id and secret_id.wrap in `dirpath` (folder 0700, files 0600)."""
    dirpath = Path(dirpath)
    private_dir(dirpath)
    os.chmod(dirpath, 0o700)
    write_private(dirpath / "role_id", role_id + "\n")
    write_private(dirpath / "secret_id.wrap", wrapping_token + "\n")
