"""Vault as the only source of identity (the test cluster's real OpenBao): least privilege per host,
address-bound secret_ids, single-use wrapping, audit, secret zero kept private."""
import json
import re
import stat
from pathlib import Path

import hvac
from cryptography import x509
import pytest
from hvac.exceptions import Forbidden

from histo.testing.attacker import root_client, service_vault
from histo.vault.client import VaultAuthError
from histo.vault.provision import wrapped_secret_id, write_credentials


def test_worker_identity_gets_only_its_own(cluster):
    vault = service_vault(cluster, "worker1")
    vault.login()
    bundle = vault.issue_cert("60s")  # legitimate: its own certificate and its role's credentials
    cert = x509.load_pem_x509_certificate(bundle.cert_pem.encode())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://histo.internal/worker/worker1"]
    assert vault.zk_credentials()[0] == "histo-worker"
    c = vault.client
    for path, params in (("pki_int/issue/host-master1", {"common_name": "master1.histo.internal"}),
                         ("pki_int/issue/host-worker2", {"common_name": "worker2.histo.internal"}),
                         ("pki_int/issue/host-worker1", {"common_name": "worker1.histo.internal",
                                                         "ip_sans": cluster.config("master1")["address"]}),
                         ("pki_int/issue/host-worker1", {"common_name": "worker1.histo.internal",
                                                         "uri_sans": "spiffe://histo.internal/master/worker1"})):
        with pytest.raises((Forbidden, hvac.exceptions.InvalidRequest)):
            c.write_data(path, data=params)
    for secret in ("histo/zk/master", "histo/zk/super"):
        with pytest.raises(Forbidden):
            c.secrets.kv.v2.read_secret_version(secret, mount_point="secret", raise_on_deleted_version=True)
    with pytest.raises(Forbidden):
        c.secrets.transit.sign_data("histo-tokens", "aGVsbG8=", mount_point="transit")
    with pytest.raises(Forbidden):  # its own next secret_id it may mint (vault/secretid.py); another host's never
        c.write_data("auth/approle/role/histo-worker2/secret-id")


def test_secret_id_is_bound_to_its_host_address(cluster):
    stolen = service_vault(cluster, "worker1", source=cluster.config("worker2")["address"])
    with pytest.raises(VaultAuthError):
        stolen.login()
    service_vault(cluster, "worker1").login()  # from its own address it works


def test_wrapped_secret_id_works_once(cluster, tmp_path):
    root = root_client(cluster)
    role_id = root.auth.approle.read_role_id("histo-worker2")["data"]["role_id"]
    write_credentials(tmp_path, role_id, wrapped_secret_id(root, "worker2", cluster.config("worker2")["address"]))
    wrap = (tmp_path / "secret_id.wrap").read_text()
    legit = service_vault(cluster, "worker2")
    legit.creds = tmp_path
    legit.login()  # first unwrap: the service's own
    assert stat.S_IMODE((tmp_path / "secret_id").stat().st_mode) == 0o600
    (tmp_path / "secret_id").unlink()
    (tmp_path / "secret_id.wrap").write_text(wrap)  # an interceptor replays the wrapping token
    with pytest.raises(VaultAuthError, match="already used"):
        legit.login()


def test_unauthenticated_and_audit(cluster):
    topo = json.loads((cluster.root / "topology.json").read_text())
    anon = hvac.Client(url=f"https://{topo['net']}.10:8200", verify=str(cluster.root / "vault" / "tls" / "ca.pem"))
    with pytest.raises((Forbidden, hvac.exceptions.Unauthorized)):
        anon.secrets.kv.v2.read_secret_version("histo/zk/super", mount_point="secret",
                                              raise_on_deleted_version=True)
    audit = (cluster.root / "vault" / "audit.log").read_text().splitlines()
    assert len(audit) > 10 and json.loads(audit[-1])["type"] in ("request", "response")
    assert "histo/zk/super" in "".join(audit)


def test_secret_zero_private_and_no_secret_in_logs(cluster):
    init = cluster.root / "vault" / "init.json"
    assert stat.S_IMODE(init.stat().st_mode) == 0o600
    doc = json.loads(init.read_text())
    secrets = [doc["root_token"], *doc["keys"]]
    for sdir in ("master1", "master2", "worker1", "worker2"):
        secrets.append((cluster.service_dir(sdir) / "creds" / "secret_id").read_text().strip())
    logs = [p for p in Path(cluster.root).rglob("*.log") if p.name != "audit.log"]
    assert logs
    for log in logs:
        text = log.read_text(errors="replace")
        for s in secrets:
            assert s not in text, f"a secret leaked into {log}"
        assert not re.search(r"eyJ[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{20,}\.", text), f"a token leaked into {log}"
    for name in ("master1", "worker1"):
        pid = cluster.pid(name)
        env = open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace")
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
        for s in secrets:
            assert s not in env and s not in cmd


def test_vault_configuration_is_idempotent(cluster):
    from histo.vault.setup import apply
    topo = json.loads((cluster.root / "topology.json").read_text())
    out = apply(root_client(cluster), {"trust_domain": "histo.internal", "hosts": topo["hosts"],
                                       "leaf_max_ttl": "24h"})
    assert out["changed"] is False, out["changes"]
    assert set(out["role_ids"]) == {h["name"] for h in topo["hosts"]}


def test_public_address_only_in_master_certificates(cluster):
    """The floating public address (HISTO_URL) is named by the masters' certificates only: a
    compromised worker cannot get a certificate for it, so even an address it steals on the network
    (ARP, VRRP) serves nothing a client accepts; a master cannot name a third address."""
    public = cluster.config("master1")["public_address"]
    master = service_vault(cluster, "master1")
    master.login()
    bundle = master.issue_cert("60s")  # the legitimate path: its own address and the public one
    cert = x509.load_pem_x509_certificate(bundle.cert_pem.encode())
    ips = [str(ip) for ip in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
           .get_values_for_type(x509.IPAddress)]
    assert ips == [cluster.config("master1")["address"], public]
    worker = service_vault(cluster, "worker1")
    worker.login()
    own = cluster.config("worker1")["address"]
    for ip_sans in (public, f"{own},{public}"):
        with pytest.raises((Forbidden, hvac.exceptions.InvalidRequest)):
            worker.client.write_data("pki_int/issue/host-worker1", data={
                "common_name": "worker1.histo.internal", "ip_sans": ip_sans,
                "uri_sans": "spiffe://histo.internal/worker/worker1"})
    with pytest.raises((Forbidden, hvac.exceptions.InvalidRequest)):
        master.client.write_data("pki_int/issue/host-master1", data={
            "common_name": "master1.histo.internal", "uri_sans": "spiffe://histo.internal/master/master1",
            "ip_sans": f"{cluster.config('master1')['address']},{cluster.config('worker1')['address']}"})
