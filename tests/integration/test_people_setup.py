"""vault/people.py against a real OpenBao of its own: people, groups, provider and clients applied once,
a second apply changes nothing (passwords kept), the provisioner token verifies but cannot add anyone."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from histo.testing.signin import person_token
from histo.vault.secretzero import provisioner_token
from histo.vault.setup import apply

from .vaultfix import configure, default_hosts, running_bao, spec_for

ADDRESS = "127.0.20.70"


def _oidc(tmp: Path, people: list[dict[str, Any]]) -> dict[str, Any]:
    return {"redirect_uris": ["https://127.0.20.21:4443/", "http://127.0.0.1/callback"],
            "secrets_dir": str(tmp / "people"), "people": people,
            "machine_clients": [{"name": "ci", "roles": ["uploader"]}]}


def test_people_apply_is_idempotent_and_needs_root_to_add(tmp_path: Path) -> None:
    people = [{"name": "alice", "groups": ["admin"]}, {"name": "dave", "groups": []}]
    with running_bao(tmp_path / "vault", ADDRESS) as bao:
        first = configure(bao, oidc=_oidc(tmp_path, people))
        assert first["oidc"]["issuer"].endswith("/v1/identity/oidc/provider/histo")
        pw = (tmp_path / "people" / "alice.password").read_text()
        assert person_token(bao.url, str(bao.ca_path), "alice", pw.strip())
        for f in (tmp_path / "people").iterdir():
            assert f.stat().st_mode & 0o777 == 0o600, f
        assert (tmp_path / "people" / "accounts").read_text().splitlines()[0].startswith("alice admin ")

        again = configure(bao, oidc=_oidc(tmp_path, people))
        assert again["changed"] is False, again["changes"]
        assert (tmp_path / "people" / "alice.password").read_text() == pw  # never rotated behind its owner

        prov = bao.client(provisioner_token(bao.root_client()))
        assert apply(prov, spec_for(bao, default_hosts(), oidc=_oidc(tmp_path, people)))["changed"] is False
        with pytest.raises(PermissionError, match="root token"):
            apply(prov, spec_for(bao, default_hosts(), oidc=_oidc(tmp_path, people + [{"name": "eve",
                                                                                     "groups": ["admin"]}])))
        assert not (tmp_path / "people" / "eve.password").exists()
        groups = bao.root_client().read("identity/group/name/histo-admin")["data"]  # type: ignore[index]
        assert len(groups["member_entity_ids"]) == 1  # alice only: dave is in no histo group
