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
from .cluster_fixture import NET

ADDRESS = f"{NET}.70"


def _oidc(tmp: Path, people: list[dict[str, Any]]) -> dict[str, Any]:
    return {"redirect_uris": [f"https://{NET}.21:4443/", "http://127.0.0.1/callback"],
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


def test_deployed_shape_root_retired_provisioner_rerun_is_unchanged(tmp_path: Path) -> None:
    """What the vault_config role does on the cluster, end to end: `histo vault-setup` with the spec the
    role writes (issuer given, two masters sharing a floating public address registered first as a
    redirect URI, people and a machine client), the root token retired, people signing in in between,
    then the role's second run with the provisioner token alone: no change, no refusal."""
    import base64
    import hashlib
    import json
    import secrets
    import subprocess
    import sys
    import urllib.parse

    from histo.testing.signin import authorize
    from histo.vault.secretzero import retire_root

    net = "127.0.21"
    hosts = [{"name": "zk1", "role": "zookeeper", "address": f"{net}.11"},
             {"name": "master1", "role": "master", "address": f"{net}.21", "public_address": f"{net}.20"},
             {"name": "master2", "role": "master", "address": f"{net}.22", "public_address": f"{net}.20"},
             {"name": "worker1", "role": "worker", "address": f"{net}.31"}]
    floating = f"https://{net}.20/"
    with running_bao(tmp_path / "vault", f"{NET}.71") as bao:
        oidc = {"issuer": bao.url, "redirect_uris": [floating, f"https://{net}.21/", f"https://{net}.22/",
                                                     "http://127.0.0.1/callback"],
                "people": [{"name": "alice", "groups": ["admin"]}, {"name": "bob", "groups": ["uploader"]}],
                "machine_clients": [{"name": "ci", "roles": ["uploader", "viewer"]}],
                "secrets_dir": str(tmp_path / "people")}
        spec = spec_for(bao, hosts, oidc=oidc, issuer_max_ttl="72h")
        (tmp_path / "vault-spec.json").write_text(json.dumps(spec, indent=4) + "\n")
        root_token = json.loads(bao.init_path.read_text())["root_token"]
        (tmp_path / "root-token").write_text(root_token + "\n")
        (tmp_path / "root-token").chmod(0o600)

        def setup(token_file: str) -> dict[str, Any]:
            proc = subprocess.run([sys.executable, "-m", "histo.cli", "vault-setup",
                                   f"--spec={tmp_path / 'vault-spec.json'}", f"--vault-url={bao.url}",
                                   f"--vault-ca={bao.ca_path}", f"--token-file={tmp_path / token_file}"],
                                  capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr
            out: dict[str, Any] = json.loads(proc.stdout)
            return out

        first = setup("root-token")
        assert first["changed"] is True and first["oidc"]["issuer"] == f"{bao.url}/v1/identity/oidc/provider/histo"
        retired = retire_root(bao.client(), bao.init_path, tmp_path / "provisioner-token", tmp_path / "root-token")
        assert retired["root_token"] == "revoked"

        # between the runs: alice signs in with the floating address as her redirect URI
        ca = str(bao.ca_path)
        token = person_token(bao.url, ca, "alice", (tmp_path / "people" / "alice.password").read_text().strip())
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()

        def ask(redirect: str) -> tuple[int, dict[str, Any]]:
            q = urllib.parse.urlencode({"client_id": first["oidc"]["client_id"], "response_type": "code",
                                        "scope": "openid histo", "redirect_uri": redirect, "state": "s1",
                                        "nonce": "n1", "code_challenge": challenge, "code_challenge_method": "S256"})
            return authorize(bao.url, ca, token, f"{bao.url}/ui/vault/identity/oidc/provider/histo/authorize?{q}")
        status, answer = ask(floating)
        assert status == 200 and answer.get("code"), answer
        status, answer = ask("https://attacker.invalid/")
        assert status == 400 and answer["error"] == "invalid_redirect_uri"

        for _ in range(2):  # the idempotence run, and one more
            again = setup("provisioner-token")
            assert again["changed"] is False, again["changes"]
            assert again["oidc"]["client_id"] == first["oidc"]["client_id"]
