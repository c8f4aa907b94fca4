"""The tamper-evident SecOps record against a real OpenBao: the collector secops1 (its own AppRole)
signs checkpoints with its own transit key and anchors the latest in Vault's KV; `histo audit verify`
(an operator token of histo-audit-verifier) accepts the untouched log and names the removed tail
even after the local checkpoints were deleted with it. Each refusal beside the path it must not block."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import hvac
import pytest
from hvac import exceptions as hx

from histo.files import write_private
from histo.local.bao import BaoServer
from histo.secops.checkpoint import anchor_path, key_name
from histo.secops.collector import checkpoints_path
from histo.secops.sources import Inventory, classify
from histo.vault.secretzero import operator_token

from .vaultfix import NET, configure, default_hosts, provision, running_bao, service_vault

SECOPS = {"name": "secops1", "role": "secops", "address": f"{NET}.40"}
HOSTS = [*default_hosts(), SECOPS]
WORKER = next(h for h in HOSTS if h["name"] == "worker1")
VAULT_NODE = {"name": "vault1", "role": "vault", "address": f"{NET}.10"}  # its log shipper's identity


Vault = tuple[BaoServer, dict[str, str], Path, Path]


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vault]:
    root = tmp_path_factory.mktemp("secops-it")
    with running_bao(root / "vault") as bao:
        role_ids = configure(bao, HOSTS)["role_ids"]
        verifier = root / "verifier.token"
        write_private(verifier, operator_token(bao.root_client(), "histo-audit-verifier", "1h", "it") + "\n")
        yield bao, role_ids, root, verifier


def _histo(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    return subprocess.run([sys.executable, "-m", "histo.cli", *args], input=stdin, capture_output=True, text=True,
                          timeout=60, env=env)


def test_collect_verify_and_a_removed_tail(vault: Vault, tmp_path: Path) -> None:
    bao, role_ids, root, verifier = vault
    creds = provision(bao, role_ids, SECOPS, tmp_path / "creds")
    log = tmp_path / "secops.log"
    vault_args = ["--vault-url", bao.url, "--vault-ca", str(bao.ca_path)]
    events = "".join(json.dumps({"kind": "zk_auth_failure", "host": "worker1", "n": i}) + "\n" for i in range(20))
    collect = ["audit", "collect", "--log", str(log), "--host", "secops1", "--creds", str(creds),
               "--source-address", SECOPS["address"], "--confirm", *vault_args]
    out = _histo(*collect, stdin=events)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("OK") == 21  # omprog: ready, then one per stored event
    verify = ["audit", "verify", "--log", str(log), "--host", "secops1", "--token-file", str(verifier), *vault_args]
    ok = _histo(*verify)
    assert ok.returncode == 0 and "log ok: 20 entries" in ok.stdout, ok.stdout + ok.stderr
    # the anchor lives in Vault, off the collector
    anchored = bao.root_client().secrets.kv.v2.read_secret_version(anchor_path("secops1"), mount_point="secret",
                                                                   raise_on_deleted_version=True)
    assert anchored["data"]["data"]["checkpoint"].count(".") == 2

    # a second run resumes the chain; then someone removes its tail and every local checkpoint
    assert _histo(*collect, stdin='{"kind": "ssh_failure", "host": "worker2"}\n').returncode == 0
    lines = log.read_text().splitlines()
    assert json.loads(lines[-1])["seq"] == 21
    log.write_text("\n".join(lines[:15]) + "\n")
    checkpoints_path(log).write_text("")
    bad = _histo(*verify)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.strip().splitlines()[-1] == ("histo: audit: log REJECTED: removed: the log ends at entry 15 "
                                                   "but a signed checkpoint covers entry 21: entries 16..21 were "
                                                   "removed")
    # and an edited entry is named
    lines[3] = lines[3].replace('"n":3', '"n":4')
    log.write_text("\n".join(lines) + "\n")
    bad = _histo(*verify)
    assert bad.returncode == 1 and "entry 4 (line 4) was changed" in bad.stderr


def test_the_collector_signs_with_its_own_key_and_nothing_else(vault: Vault, tmp_path: Path) -> None:
    bao, role_ids, root, verifier = vault
    sec = service_vault(bao, SECOPS, provision(bao, role_ids, SECOPS, tmp_path / "s"))
    sec.login()
    transit = sec.client.secrets.transit
    # the legitimate path: its own key, JWS signature; its own anchor
    assert transit.sign_data(key_name("secops1"), "aGk=", hash_algorithm="sha2-256", marshaling_algorithm="jws",
                             mount_point="transit")["data"]["signature"].startswith("vault:v1:")
    sec.client.secrets.kv.v2.create_or_update_secret(anchor_path("secops1"), secret={"checkpoint": "x.y.z"},
                                                     mount_point="secret")
    refused: list[Callable[[], object]] = [
        lambda: transit.sign_data("histo-receipts", "aGk=", mount_point="transit"),  # a master's key
        lambda: transit.sign_data("histo-tokens", "aGk=", mount_point="transit"),
        lambda: transit.sign_data(key_name("secops1"), "aGk=", hash_algorithm="sha2-512", mount_point="transit"),
        lambda: sec.client.secrets.kv.v2.read_secret_version(anchor_path("secops1"), mount_point="secret",
                                                             raise_on_deleted_version=True),
        lambda: sec.client.secrets.kv.v2.delete_metadata_and_all_versions(anchor_path("secops1"),
                                                                         mount_point="secret"),
        lambda: sec.client.secrets.kv.v2.read_secret_version("histo/zk/worker", mount_point="secret",
                                                             raise_on_deleted_version=True),
    ]
    for attempt in refused:
        with pytest.raises(hx.Forbidden):
            attempt()
    # a worker may neither sign checkpoints nor write the anchor
    wrk = service_vault(bao, WORKER, provision(bao, role_ids, WORKER, tmp_path / "w"))
    wrk.login()
    with pytest.raises(hx.Forbidden):
        wrk.client.secrets.transit.sign_data(key_name("secops1"), "aGk=", mount_point="transit")
    with pytest.raises(hx.Forbidden):
        wrk.client.secrets.kv.v2.create_or_update_secret(anchor_path("secops1"), secret={"checkpoint": "forged"},
                                                         mount_point="secret")
    # each refusal is in OpenBao's audit device, attributed by the collector to the AppRole's host
    inv = Inventory(HOSTS)
    found = [f for f in (classify(json.loads(x), inv) for x in bao.audit_path.read_text().splitlines()) if f]
    mine = [(f["host"], f["spiffe"], f["path"]) for f in found if f["layer"] == "vault"]
    assert ("secops1", "spiffe://histo.internal/secops/secops1", "transit/sign/histo-receipts") in mine
    assert ("worker1", "spiffe://histo.internal/worker/worker1", f"secret/data/{anchor_path('secops1')}") in mine
    # known by the AppRole of the token refused (what the quarantine rules require), not by an address
    assert {f["by"] for f in found if f["layer"] == "vault" and f["host"] in ("secops1", "worker1")} == {"approle"}
    # its refused read of the anchor is there; its legitimate write is no refusal
    anchor_ops = {f["operation"] for f in found if f["host"] == "secops1"
                  and f["path"] == f"secret/data/{anchor_path('secops1')}"}
    assert "read" in anchor_ops and not anchor_ops & {"create", "update"}
    # the verifier reads keys and anchor, and signs nothing
    op = hvac.Client(url=bao.url, verify=str(bao.ca_path), token=Path(verifier).read_text().strip())
    assert op.secrets.transit.read_key(key_name("secops1"), mount_point="transit")["data"]["keys"]
    with pytest.raises(hx.Forbidden):
        op.secrets.transit.sign_data(key_name("secops1"), "aGk=", mount_point="transit")
    with pytest.raises(hx.Forbidden):
        op.secrets.kv.v2.create_or_update_secret(anchor_path("secops1"), secret={"checkpoint": "x"},
                                                 mount_point="secret")


def test_a_second_provisioning_run_with_the_provisioner_token_changes_nothing(tmp_path: Path) -> None:
    """What `make provision` does on a deployed cluster: vault-setup with root once, root retired, then
    every later run with the histo-provisioner token alone. The collector's transit key is read back
    on that run (it must exist); the provisioner may read it (public keys only), so the run is
    unchanged instead of a 403 on transit/keys/histo-secops-secops1. It still may not sign with it."""
    from histo.vault.secretzero import retire_root
    from histo.vault.setup import apply

    from .vaultfix import spec_for
    with running_bao(tmp_path / "vault") as bao:
        spec = spec_for(bao, [*HOSTS, VAULT_NODE])
        assert apply(bao.root_client(), spec)["changed"] is True
        write_private(tmp_path / "root-token", bao.root_client().token + "\n")
        retire_root(bao.client(), bao.init_path, tmp_path / "provisioner-token", tmp_path / "root-token")
        prov = bao.client((tmp_path / "provisioner-token").read_text().strip())
        again = apply(prov, spec)
        assert (again["changed"], again["changes"]) == (False, [])
        # the operator's audit-verifier token comes through its token role, from the provisioner
        op = hvac.Client(url=bao.url, verify=str(bao.ca_path),
                         token=operator_token(prov, "histo-audit-verifier", "10m", "it"))
        assert op.auth.token.lookup_self()["data"]["policies"] == ["default", "histo-audit-verifier"]
        with pytest.raises(hx.Forbidden):
            prov.secrets.transit.sign_data(key_name("secops1"), "aGk=", mount_point="transit")


def test_tls_files_issues_once_then_only_when_due_and_a_vault_node_gets_nothing_else(tmp_path: Path) -> None:
    """`histo tls-files` (roles/logship): the host's own certificate, key (0600) and CA chain; a second
    run changes nothing. A Vault node's identity (role vault) issues its own certificate, nothing else."""
    with running_bao(tmp_path / "vault") as bao:
        role_ids = configure(bao, [*HOSTS, VAULT_NODE])["role_ids"]
        creds = provision(bao, role_ids, VAULT_NODE, tmp_path / "creds")
        out = tmp_path / "tls"
        argv = ["tls-files", "--host", "vault1", "--role", "vault", "--creds", str(creds), "--out", str(out),
                "--source-address", VAULT_NODE["address"], "--ttl", "1h",
                "--vault-url", bao.url, "--vault-ca", str(bao.ca_path)]
        first = _histo(*argv)
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["changed"] is True
        assert oct((out / "key.pem").stat().st_mode & 0o777) == "0o600"
        from cryptography import x509
        cert = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "spiffe://histo.internal/vault/vault1" in sans.get_values_for_type(x509.UniformResourceIdentifier)
        assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == [VAULT_NODE["address"]]
        again = _histo(*argv)
        assert again.returncode == 0 and json.loads(again.stdout) == {"changed": False, "secret_id_renewed": False}, \
            again.stdout + again.stderr
        # the timer's run keeps the host's secret_id alive too: here made due at once (fraction 0)
        from histo.vault.secretid import SecretIdKeeper
        node = service_vault(bao, VAULT_NODE, creds)
        node.login()
        old_secret = (creds / "secret_id").read_text()
        assert SecretIdKeeper(node, fraction=0.0).renew_if_needed() is True
        assert (creds / "secret_id").read_text() != old_secret
        assert oct((creds / "secret_id").stat().st_mode & 0o777) == "0o600"
        renewed = _histo(*argv)  # the next run logs in with the new one
        assert renewed.returncode == 0 and json.loads(renewed.stdout)["secret_id_renewed"] is False, renewed.stderr
        def known(secret_id: str) -> bool:  # Vault answers 204 (no body) for a secret_id it does not hold
            resp = bao.root_client().write_data("auth/approle/role/histo-vault1/secret-id/lookup",
                                           data={"secret_id": secret_id})
            return isinstance(resp, dict) and bool(resp.get("data"))
        assert known((creds / "secret_id").read_text().strip())
        assert not known(old_secret.strip())  # the old one was destroyed, not left to expire
        for attempt in (lambda: node.client.write_data("pki_int/issue/host-worker1",
                                                       data={"common_name": "worker1.histo.internal"}),
                        lambda: node.client.secrets.kv.v2.read_secret_version("histo/zk/worker", mount_point="secret",
                                                                              raise_on_deleted_version=True),
                        lambda: node.client.secrets.transit.sign_data(key_name("secops1"), "aGk=",
                                                                      mount_point="transit")):
            with pytest.raises(hx.Forbidden):
                attempt()
