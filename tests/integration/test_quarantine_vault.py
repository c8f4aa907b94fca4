"""Quarantine (issue 18) against a real OpenBao: the SecOps collector secops1, with its own AppRole
token, cuts worker1's Vault identity off (policy emptied, secret_ids destroyed, PKI role deleted,
certificates revoked, a record the masters read), and can do nothing else with that power: no other
policy text, nothing of a ZooKeeper host. worker2 keeps working throughout. Release is refused until
vault-setup and a new wrapped secret_id gave worker1 a fresh identity; then worker1 works again."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import hvac
import pytest
from hvac.exceptions import Forbidden, InvalidPath

from histo.files import write_private
from histo.local.bao import BaoServer
from histo.vault.client import ServiceVault, VaultAuthError
from histo.vault.quarantine import QUARANTINED_POLICY, QuarantineError, contain, list_quarantined, release
from histo.vault.revoke import _colon
from histo.vault.provision import wrapped_secret_id
from histo.vault.setup import SetupError, apply

from .cluster_fixture import QUARANTINE_NET
from .vaultfix import configure, default_hosts, provision, provisioned_service, running_bao, service_vault, spec_for

NET = QUARANTINE_NET
SECOPS = {"name": "secops1", "role": "secops", "address": f"{NET}.40"}
HOSTS = [*default_hosts(NET), SECOPS]
HOST = {h["name"]: h for h in HOSTS}
INCIDENT = {"id": "inc-42", "rule": "zk_auth_burst"}

Vault = tuple[BaoServer, dict[str, str], Path]


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vault]:
    root = tmp_path_factory.mktemp("quarantine-it")
    with running_bao(root / "vault", f"{NET}.10") as bao:
        yield bao, configure(bao, HOSTS)["role_ids"], root


def _token_client(bao: BaoServer, policy: str) -> hvac.Client:
    token = bao.root_client().auth.token.create(policies=[policy], ttl="1h", no_parent=True)["auth"]["client_token"]
    return hvac.Client(url=bao.url, verify=str(bao.ca_path), token=token)


def _histo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    return subprocess.run([sys.executable, "-m", "histo.cli", *args], capture_output=True, text=True, timeout=60,
                          env=env)


def _d(resp: Any) -> dict[str, Any]:
    assert isinstance(resp, dict), resp
    return resp


def _capabilities(client: hvac.Client, path: str) -> list[str]:
    return list(_d(client.write_data("sys/capabilities-self", data={"paths": [path]}))["data"][path])


def test_the_collector_may_write_the_quarantine_text_and_nothing_else(vault: Vault, tmp_path: Path) -> None:
    bao, role_ids, _ = vault
    secops = provisioned_service(bao, role_ids, SECOPS, tmp_path / "secops1").client
    root = bao.root_client()
    before = root.sys.read_acl_policy("histo-worker1")["data"]["policy"]
    grant = QUARANTINED_POLICY + 'path "secret/*" {\n  capabilities = ["read", "list"]\n}\n'
    for text in (grant, QUARANTINED_POLICY.strip(), 'path "sys/*" {\n  capabilities = ["sudo"]\n}\n'):
        with pytest.raises(Forbidden):
            secops.sys.create_or_update_acl_policy("histo-worker1", text)
    with pytest.raises(Forbidden):  # the legacy path of the same policy is no way around it
        secops.sys.create_or_update_policy("histo-worker1", QUARANTINED_POLICY)
    assert root.sys.read_acl_policy("histo-worker1")["data"]["policy"] == before
    # a ZooKeeper host (and the collector itself, and the provisioner) are out of its reach entirely
    for name in ("zk1", "secops1"):
        with pytest.raises(Forbidden):
            secops.sys.create_or_update_acl_policy(f"histo-{name}", QUARANTINED_POLICY)
        with pytest.raises(Forbidden):
            secops.delete(f"pki_int/roles/host-{name}")
        with pytest.raises(Forbidden):
            secops.list(f"auth/approle/role/histo-{name}/secret-id")
        if name != "secops1":  # its own secret_ids it may replace and destroy (vault/secretid.py)
            with pytest.raises(Forbidden):
                secops.write_data(f"auth/approle/role/histo-{name}/secret-id-accessor/destroy",
                                  data={"secret_id_accessor": "x"})
        with pytest.raises(Forbidden):
            secops.secrets.kv.v2.create_or_update_secret(f"histo/quarantine/{name}", secret={"host": name},
                                                         mount_point="secret")
    for name in ("histo-provisioner", "histo-token-issuer", "default"):
        with pytest.raises(Forbidden):
            secops.sys.create_or_update_acl_policy(name, QUARANTINED_POLICY)
    assert root.read("pki_int/roles/host-zk1") and "update" in _capabilities(secops, "pki_int/revoke")
    # the master is containable (it is no ZooKeeper host): the same narrow rights as for a worker
    assert _capabilities(secops, "sys/policies/acl/histo-master1") == ["update"]
    assert _capabilities(secops, "sys/policies/acl/histo-zk1") == ["deny"]
    with pytest.raises(Forbidden):  # it cannot read the records it writes, nor delete them
        secops.secrets.kv.v2.delete_metadata_and_all_versions("histo/quarantine/worker1", mount_point="secret")


def test_the_provisioner_lists_accessors_but_still_mints_only_wrapped(vault: Vault) -> None:
    bao, _, _ = vault
    prov = _token_client(bao, "histo-provisioner")
    with pytest.raises(Forbidden):
        prov.write_data("auth/approle/role/histo-worker2/secret-id")
    with pytest.raises(Forbidden):
        prov.write_data("auth/approle/role/histo-worker2/secret-id", data={"cidr_list": [f"{NET}.32/32"]})
    wrapped = wrapped_secret_id(prov, "worker2", HOST["worker2"]["address"])  # the legitimate way still works
    assert wrapped
    keys = _d(prov.list("auth/approle/role/histo-worker2/secret-id"))["data"]["keys"]
    assert keys  # accessors, with no secret_id in the answer
    info = _d(prov.write_data("auth/approle/role/histo-worker2/secret-id-accessor/lookup",
                              data={"secret_id_accessor": keys[0]}))["data"]
    assert info["creation_time"] and "secret_id" not in info
    with pytest.raises(Forbidden):  # still no policy write
        prov.sys.create_or_update_acl_policy("histo-worker2", QUARANTINED_POLICY)


def test_contain_cuts_worker1_off_and_release_waits_for_a_fresh_identity(vault: Vault, tmp_path: Path) -> None:
    bao, role_ids, _ = vault
    root = bao.root_client()
    worker1 = provisioned_service(bao, role_ids, HOST["worker1"], tmp_path / "worker1")
    worker2 = provisioned_service(bao, role_ids, HOST["worker2"], tmp_path / "worker2")
    master = provisioned_service(bao, role_ids, HOST["master1"], tmp_path / "master1").client
    secops = provisioned_service(bao, role_ids, SECOPS, tmp_path / "secops1").client
    serials = [worker1.issue_cert("10m").serial for _ in range(2)]
    assert worker1.zk_credentials()[0] == "histo-worker"

    out = contain(secops, "worker1", INCIDENT)
    assert out["contained"], out["actions"]
    steps = {a["name"]: a for a in out["actions"]}
    assert steps["secret_ids"]["detail"] == {"destroyed": 1}
    assert sorted(steps["certificates"]["detail"]["revoked"]) == sorted(serials)
    assert contain(secops, "worker1", INCIDENT)["contained"]  # idempotent: a second run succeeds too

    # the token worker1 already holds: every capability of its own gone at once
    with pytest.raises(VaultAuthError):
        worker1.issue_cert("10m")
    for call in (lambda: worker1.client.secrets.kv.v2.read_secret_version("histo/zk/worker", mount_point="secret",
                                                                         raise_on_deleted_version=True),
                 lambda: worker1.client.secrets.kv.v2.read_secret_version("histo/zk/acl-ids", mount_point="secret",
                                                                         raise_on_deleted_version=True),
                 lambda: worker1.client.write_data("auth/approle/role/histo-worker1/secret-id")):
        with pytest.raises(Forbidden):
            call()
    for path in ("pki_int/issue/host-worker1", "secret/data/histo/zk/worker", "pki_int/cert/ca_chain"):
        assert _capabilities(worker1.client, path) == ["deny"], path  # (ca_chain: public anyway)
    with pytest.raises(VaultAuthError):  # its stored secret_id: no new login
        service_vault(bao, HOST["worker1"], tmp_path / "worker1").login()
    for serial in serials:
        assert int(_d(root.read(f"pki_int/cert/{_colon(serial)}"))["data"]["revocation_time"]) > 0
    assert root.read("pki_int/roles/host-worker1") is None
    # the record, which a master reads
    record = list_quarantined(master)["worker1"]
    assert (record["incident"], record["rule"], record["host"]) == ("inc-42", "zk_auth_burst", "worker1")
    assert record["since"] > 0 and all(a["ok"] for a in record["actions"])
    # worker2, the legitimate path: untouched
    assert worker2.issue_cert("10m").serial and worker2.zk_credentials()[0] == "histo-worker"

    # release: refused until the identity is given back, by the library and by the command
    prov = _token_client(bao, "histo-provisioner")
    with pytest.raises(QuarantineError, match="policy histo-worker1 is not restored"):
        release(prov, "worker1")
    token_file = tmp_path / "provisioner.token"
    write_private(token_file, str(prov.token) + "\n")
    cli = _histo("quarantine", "release", "worker1", "--vault-url", bao.url, "--vault-ca", str(bao.ca_path),
                 "--token-file", str(token_file))
    assert cli.returncode != 0
    assert len(cli.stderr.strip().splitlines()) == 1 and "Traceback" not in cli.stderr, cli.stderr
    assert cli.stderr.startswith("histo: quarantine release: worker1 is still quarantined"), cli.stderr

    # a re-apply that does not name worker1 (make provision: the provisioner token; or root, re-admitting
    # another host) leaves its containment as it is, and succeeds
    for client in (prov, root):
        out = apply(client, spec_for(bao, HOSTS))
        assert out["held"] == ["worker1"] and not any("worker1" in c for c in out["changes"]), out
        assert _d(root.sys.read_policy("histo-worker1"))["data"]["rules"].strip() == QUARANTINED_POLICY.strip()
        assert root.read("pki_int/roles/host-worker1") is None
    # a containment whose policy step failed (its record written, its PKI role gone): held by its record
    root.sys.create_or_update_policy("histo-worker1", "# the quarantine's policy step failed\n")
    out = apply(root, spec_for(bao, HOSTS))
    assert out["held"] == ["worker1"] and root.read("pki_int/roles/host-worker1") is None, out
    root.sys.create_or_update_policy("histo-worker1", QUARANTINED_POLICY)
    with pytest.raises(SetupError, match="not a host of the spec"):
        apply(root, spec_for(bao, HOSTS, readmit="worker9"))
    # vault-setup (root) naming worker1, as `make readmit HOST=worker1` does: the policy and the PKI role come back
    changes = configure(bao, HOSTS, readmit="worker1")["changes"]
    assert "policy histo-worker1" in changes and "pki role host-worker1" in changes
    with pytest.raises(QuarantineError, match="no secret_id of histo-worker1 was made after"):
        release(prov, "worker1")
    assert "worker1" in list_quarantined(master)
    provision(bao, role_ids, HOST["worker1"], tmp_path / "worker1-again")
    done = release(prov, "worker1")
    assert done["checked"] == {"policy": "restored", "pki_role": "present", "fresh_secret_ids": 1}
    assert list_quarantined(master) == {}
    with pytest.raises(InvalidPath):  # no version left behind
        root.secrets.kv.v2.read_secret_metadata("histo/quarantine/worker1", mount_point="secret")
    again = ServiceVault(bao.url, str(bao.ca_path), host="worker1", role="worker", creds_dir=tmp_path / "worker1-again",
                         source_address=HOST["worker1"]["address"])
    again.login()
    assert again.issue_cert("10m").serial and again.zk_credentials()[0] == "histo-worker"
    with pytest.raises(QuarantineError, match="worker1 is not quarantined"):
        release(prov, "worker1")


def test_every_machine_may_list_the_names_and_its_firewall_follows(vault: Vault, tmp_path: Path) -> None:
    """`histo quarantine sync --once` on zk1 (any machine: its own AppRole, which may list the
    quarantined names and read nothing else) puts worker2's address — from its own hosts file, not from
    the record — into a real nft set, in a network namespace of the test's own."""
    import json
    import shutil
    import uuid
    if shutil.which("nft") is None or shutil.which("ip") is None:
        pytest.skip("nft and iproute2 are needed")
    bao, role_ids, _ = vault
    zk = provisioned_service(bao, role_ids, HOST["zk1"], tmp_path / "zk1")
    with pytest.raises(Forbidden):  # the names, not the records
        zk.client.secrets.kv.v2.read_secret_version("histo/quarantine/worker2", mount_point="secret",
                                                    raise_on_deleted_version=True)
    contain(bao.root_client(), "worker2", INCIDENT)
    ns = f"histo-sync-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], check=True, text=True,
                       input="table inet histo {\n  set quarantined {\n    type ipv4_addr\n  }\n}\n")
        hosts = tmp_path / "hosts.json"
        hosts.write_text(json.dumps({"hosts": HOSTS}))
        out = _histo("quarantine", "sync", "--once", "--host=zk1", f"--hosts-file={hosts}",
                     f"--creds={tmp_path / 'zk1'}", f"--nft=ip netns exec {ns} nft", f"--vault-url={bao.url}",
                     f"--vault-ca={bao.ca_path}")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["dropped"] == [HOST["worker2"]["address"]]
        listed = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "set", "inet", "histo", "quarantined"],
                                capture_output=True, text=True, check=True).stdout
        assert HOST["worker2"]["address"] in listed and HOST["worker1"]["address"] not in listed
        bad = _histo("quarantine", "sync", "--once", "--host=nobody", f"--hosts-file={hosts}",
                     f"--creds={tmp_path / 'zk1'}", f"--vault-url={bao.url}", f"--vault-ca={bao.ca_path}")
        assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
