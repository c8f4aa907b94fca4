"""histo.vault against a real OpenBao server (raft storage, TLS, declarative audit; never -dev mode)
on vaultfix.NET.10:<free port>. Each refusal sits beside the legitimate path it must not block."""
from __future__ import annotations

import ipaddress
import json
import os
import stat
import time
from pathlib import Path

import hvac
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store
from hvac import exceptions as hx

from histo.vault.client import VaultAuthError, VaultUnavailable
from histo.vault.provision import wrapped_secret_id, write_credentials
from histo.vault.setup import SetupError, apply

from .vaultfix import (NET, configure, default_hosts, provision, provisioned_service, running_bao, service_vault,
                       spec_for)

HOSTS = {h["name"]: h for h in default_hosts()}
TD = "histo.internal"


@pytest.fixture(scope="module")
def vault(tmp_path_factory):
    root = tmp_path_factory.mktemp("vault-it")
    with running_bao(root / "vault") as bao:
        result = configure(bao)
        yield bao, result["role_ids"], root


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _blocks(pem: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem.encode())


def test_vault_rotates_every_transit_key_by_itself(vault):
    """Nothing in histo may rotate a transit key, so Vault must: every key (tokens, receipts, the
    store's wrapping key) carries auto_rotate_period, old versions stay usable (min_decryption_version
    1), and the spec changes it idempotently; a period under Vault's floor is refused before any call."""
    bao, _, _ = vault
    root = bao.root_client()
    for key in ("histo-tokens", "histo-receipts", "histo-store"):
        data = root.secrets.transit.read_key(key, mount_point="transit")["data"]
        assert int(data["auto_rotate_period"]) == 720 * 3600, (key, data["auto_rotate_period"])
        assert int(data["min_decryption_version"]) == 1, key
    changed = configure(bao, signing_key_rotation="2h")
    assert "transit key histo-tokens rotation" in changed["changes"], changed["changes"]
    receipts = root.secrets.transit.read_key("histo-receipts", mount_point="transit")["data"]
    assert int(receipts["auto_rotate_period"]) == 7200
    assert configure(bao, signing_key_rotation="2h")["changed"] is False
    with pytest.raises(SetupError, match="at least 3600"):
        configure(bao, signing_key_rotation="10m")
    assert configure(bao)["changes"] == [f"transit key {k} rotation" for k in
                                         ("histo-tokens", "histo-receipts", "histo-store")], "back to the default"


def test_server_lifecycle_files_and_idempotent_setup(vault):
    bao, role_ids, root = vault
    assert set(role_ids) == set(HOSTS)
    again = configure(bao)
    assert again["changed"] is False, again["changes"]
    # a refused AppRole login's reason is audited in clear (secops/sources.py reads it); set once
    approle = bao.root_client().sys.list_auth_methods()["data"]["approle/"]
    assert approle["config"]["audit_non_hmac_response_keys"] == ["error"]
    assert again["role_ids"] == role_ids
    pid = bao.running()
    bao.start()  # starting twice reuses the running server
    assert bao.running() == pid
    # secret zero: 0600, folders 0700, never in a log or the config
    assert _mode(bao.init_path) == 0o600 and _mode(bao.dir) == 0o700 and _mode(bao.dir / "tls") == 0o700
    assert _mode(bao.dir / "tls" / "key.pem") == 0o600 and _mode(bao.config_path) == 0o600
    doc = json.loads(bao.init_path.read_text())
    secrets = [doc["root_token"], *doc["keys"]]
    for path in (bao.log_path, bao.audit_path, bao.config_path):
        text = path.read_text(errors="replace")
        assert not any(s in text for s in secrets), f"secret zero leaked into {path.name}"
    assert _mode(bao.audit_path) == 0o600


def test_spec_is_validated_and_audit_must_be_declared(vault):
    bao, _, root = vault
    evil = [{"name": 'w1"\npath "sys/*" {', "role": "worker", "address": f"{NET}.31"}]
    with pytest.raises(SetupError):
        apply(bao.root_client(), spec_for(bao, evil))
    with pytest.raises(SetupError):
        apply(bao.root_client(), spec_for(bao, [{"name": "w1", "role": "root", "address": f"{NET}.31"}]))
    # OpenBao refuses API-created audit devices: apply says which config stanza is missing
    with pytest.raises(SetupError, match="audit"):
        configure(bao, audit_log=str(root / "elsewhere.log"))
    assert configure(bao, audit_log="<none>")["changed"] is False


def test_master_login_certificate_and_zk_credentials(vault):
    bao, role_ids, root = vault
    host = HOSTS["master1"]
    creds = root / "master1"
    sv = provisioned_service(bao, role_ids, host, creds)
    assert not (creds / "secret_id.wrap").exists() and _mode(creds / "secret_id") == 0o600
    assert _mode(creds / "role_id") == 0o600 and _mode(creds) == 0o700

    bundle = sv.issue_cert("5m")
    cert = x509.load_pem_x509_certificate(bundle.cert_pem.encode())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://{TD}/master/master1"]
    assert set(sans.get_values_for_type(x509.DNSName)) == {f"master1.{TD}", "master1"}
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(host["address"])]
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey) and cert.public_key().curve.name == "secp256r1"
    key = serialization.load_pem_private_key(bundle.key_pem.encode(), None)
    # PKCS#8: the PEM is exactly the key's PKCS#8 encoding (not SEC1's "EC PRIVATE KEY")
    assert bundle.key_pem.strip() == key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()).decode().strip()
    assert key.public_key() == cert.public_key()
    assert cert.serial_number == int(bundle.serial.replace(":", ""), 16)
    assert 200 < (bundle.not_after - bundle.not_before).total_seconds() <= 330  # 5m + 30s backdating

    # the chain verifies up to the root CA read independently from the root mount
    anchor = _blocks(bao.root_client().secrets.pki.read_ca_certificate(mount_point="pki"))[0]
    chain = _blocks(bundle.chain_pem)
    assert chain[-1] == anchor and len(chain) == 2
    verifier = PolicyBuilder().store(Store([anchor])).build_server_verifier(x509.DNSName(f"master1.{TD}"))
    assert verifier.verify(cert, chain[:-1])[-1] == anchor
    assert _blocks(sv.ca_chain_pem()) == [anchor, chain[0]]

    assert sv.zk_credentials()[0] == "histo-master" and len(sv.zk_credentials()[1]) >= 43
    assert "master" in sv.zk_acl_ids() and "worker" in sv.zk_acl_ids()
    sv.client.secrets.transit.read_key("histo-tokens", mount_point="transit")  # public keys: allowed
    # signing its own API tokens for people who signed in (OIDC): ES256 JWS only, no other form
    sv.client.secrets.transit.sign_data("histo-tokens", "aGk=", hash_algorithm="sha2-256",
                                        marshaling_algorithm="jws", mount_point="transit")
    with pytest.raises(hx.Forbidden):
        sv.client.secrets.transit.sign_data("histo-tokens", "aGk=", mount_point="transit")  # no JWS marshaling
    with pytest.raises(hx.Forbidden):
        sv.client.secrets.transit.rotate_key("histo-tokens", mount_point="transit")

    # token upkeep: renewable service token, lookup/renew via the default policy
    assert 3500 < sv.token_ttl_remaining() <= 3600
    sv.renew_token()
    sv.renew_if_needed()
    sv._token_expires = time.time() + 100  # pretend 2/3 of the life is spent: renews
    sv.renew_if_needed()
    assert sv.token_ttl_remaining() > 3500
    sv.client.auth.token.revoke_self()  # token gone: renew_if_needed logs in again with the stored secret_id
    sv.renew_if_needed()
    assert sv.zk_credentials()[0] == "histo-master"


def test_worker_gets_only_its_own(vault):
    bao, role_ids, root = vault
    sv = provisioned_service(bao, role_ids, HOSTS["worker1"], root / "worker1")
    cert = x509.load_pem_x509_certificate(sv.issue_cert("60s").cert_pem.encode())  # legitimate
    assert cert.subject.rfc4514_string() == f"CN=worker1.{TD}"
    assert sv.zk_credentials()[0] == "histo-worker"
    c = sv.client
    refused = [("pki_int/issue/host-master1", {"common_name": f"master1.{TD}"}),
               ("pki_int/issue/host-worker2", {"common_name": f"worker2.{TD}"}),
               ("pki_int/issue/host-worker1", {"common_name": f"worker1.{TD}", "ip_sans": f"{NET}.32"}),
               ("pki_int/issue/host-worker1", {"common_name": f"worker1.{TD}",
                                               "uri_sans": f"spiffe://{TD}/master/worker1"}),
               ("pki_int/issue/host-worker1", {"common_name": f"master1.{TD}"}),
               ("pki_int/issue/host-worker1", {"common_name": f"worker1.{TD}", "alt_names": "localhost"}),
               ("pki_root/issue/x", {}),
               # it may mint its own next secret_id (vault/secretid.py), never another host's
               ("auth/approle/role/histo-worker2/secret-id", {})]
    for path, params in refused:
        with pytest.raises(hx.Forbidden):
            c.write_data(path, data=params)
    for secret in ("histo/zk/master", "histo/zk/super"):
        with pytest.raises(hx.Forbidden):
            c.secrets.kv.v2.read_secret_version(secret, mount_point="secret", raise_on_deleted_version=True)
    with pytest.raises(hx.Forbidden):
        c.secrets.transit.read_key("histo-tokens", mount_point="transit")
    with pytest.raises(VaultAuthError):  # through the service API too
        sv.super_digest()
    # the PKI role itself also pins the address (policy aside): even root cannot get another IP
    with pytest.raises(hx.InvalidRequest, match="not allowed"):
        bao.root_client().write_data("pki_int/issue/host-worker1",
                                     data={"common_name": f"worker1.{TD}", "ip_sans": f"{NET}.32"})


def test_zookeeper_reads_super_digest(vault):
    bao, role_ids, root = vault
    sv = provisioned_service(bao, role_ids, HOSTS["zk1"], root / "zk1")
    assert sv.super_digest().startswith("super:")
    with pytest.raises(VaultAuthError):
        sv.zk_credentials()  # no role credential of its own, and none of the others'


def test_wrapping_token_works_once(vault):
    bao, role_ids, root = vault
    creds = root / "worker2-once"
    provision(bao, role_ids, HOSTS["worker2"], creds)
    wrap = (creds / "secret_id.wrap").read_text()
    service_vault(bao, HOSTS["worker2"], creds).login()  # the service's own, first unwrap
    (creds / "secret_id").unlink()
    (creds / "secret_id.wrap").write_text(wrap)  # an interceptor's replay of the same wrapping token
    with pytest.raises(VaultAuthError, match="already used or expired"):
        service_vault(bao, HOSTS["worker2"], creds).login()
    # a wrapping token minted for another host is refused before it is unwrapped
    other = root / "worker2-substituted"
    write_credentials(other, role_ids["worker2"],
                      wrapped_secret_id(bao.root_client(), "worker1", HOSTS["worker1"]["address"]))
    with pytest.raises(VaultAuthError, match="does not come from"):
        service_vault(bao, HOSTS["worker2"], other).login()
    assert (other / "secret_id.wrap").exists() and not (other / "secret_id").exists()


def test_secret_id_and_token_bound_to_the_host_address(vault):
    bao, role_ids, root = vault
    creds = root / "worker1-bound"
    provision(bao, role_ids, HOSTS["worker1"], creds)
    legit = service_vault(bao, HOSTS["worker1"], creds)
    legit.login()  # unwraps and logs in from {NET}.31
    stolen = service_vault(bao, HOSTS["worker1"], creds, source=f"{NET}.32")
    with pytest.raises(VaultAuthError, match="CIDR"):
        stolen.login()
    # the source-address binding is real: Vault saw each client's own address
    seen = {json.loads(line)["request"].get("remote_address") for line in bao.audit_path.read_text().splitlines()
            if '"auth/approle/login"' in line}
    assert {f"{NET}.31", f"{NET}.32"} <= seen
    stolen.client.token = legit.client.token  # a stolen token is useless elsewhere too
    with pytest.raises((hx.Forbidden, hx.InvalidRequest)):
        stolen.client.secrets.kv.v2.read_secret_version("histo/zk/worker", mount_point="secret",
                                                        raise_on_deleted_version=True)
    legit.login()
    assert legit.zk_credentials()[0] == "histo-worker"


def test_unauthenticated_is_refused_and_audited(vault):
    bao, _, _ = vault
    before = len(bao.audit_path.read_text().splitlines())
    anon = hvac.Client(url=bao.url, verify=str(bao.ca_path))
    for path in ("histo/zk/super", "histo/zk/worker"):
        with pytest.raises((hx.Forbidden, hx.Unauthorized)):
            anon.secrets.kv.v2.read_secret_version(path, mount_point="secret", raise_on_deleted_version=True)
    entries = [json.loads(line) for line in bao.audit_path.read_text().splitlines()[before:]]
    hits = [e for e in entries if e.get("request", {}).get("path") == "secret/data/histo/zk/super"]
    assert hits and any("permission denied" in (e.get("error") or "") for e in hits)
    # secret values are HMAC-ed in the audit log: no ZooKeeper password in clear
    password = bao.root_client().secrets.kv.v2.read_secret_version(
        "histo/zk/super", mount_point="secret", raise_on_deleted_version=True)["data"]["data"]["password"]
    assert password not in bao.audit_path.read_text()


def test_sealed_vault_is_unavailable_then_recovers(vault):
    bao, role_ids, root = vault
    sv = provisioned_service(bao, role_ids, HOSTS["master1"], root / "master1-seal")
    pending = provision(bao, role_ids, HOSTS["worker2"], root / "worker2-seal")  # not yet unwrapped
    bao.seal()
    try:
        assert bao.is_sealed()
        for call in (lambda: sv.issue_cert("60s"), sv.zk_credentials, sv.renew_token, sv.renew_if_needed,
                     sv.login, service_vault(bao, HOSTS["worker2"], pending).login):
            with pytest.raises(VaultUnavailable):
                call()
        assert (pending / "secret_id.wrap").exists()  # an outage does not burn the wrapping token
    finally:
        bao.unseal()
    assert sv.zk_credentials()[0] == "histo-master"
    sv.issue_cert("60s")
    service_vault(bao, HOSTS["worker2"], pending).login()


def test_restart_ignores_stale_pid_and_services_log_in_again(vault):
    bao, role_ids, root = vault
    creds = root / "worker2-restart"
    provision(bao, role_ids, HOSTS["worker2"], creds)
    service_vault(bao, HOSTS["worker2"], creds).login()
    old = bao.running()
    assert bao.stop() and bao.running() is None
    with pytest.raises(VaultUnavailable):
        service_vault(bao, HOSTS["worker2"], creds).login()
    bao.pid_path.write_text(f"{os.getpid()}\n")  # a stale pid file (our own live, non-bao pid)
    bao.start()
    assert bao.running() not in (None, old, os.getpid())
    bao.init_and_unseal()  # initialized already: unseals from init.json only
    sv = service_vault(bao, HOSTS["worker2"], creds)
    sv.login()  # the stored, address-bound secret_id survives a restart
    assert sv.zk_credentials()[0] == "histo-worker"
    assert configure(bao)["changed"] is False


def _denials(bao) -> int:
    text = bao.audit_path.read_text() if bao.audit_path.exists() else ""
    return sum(1 for line in text.splitlines() if '"type":"response"' in line and "permission denied" in line)


def test_a_token_past_its_life_is_never_presented(vault):
    """Vault away when a token was due (make soak: stopped for a minute): the service logs in again before
    its next request instead of presenting the dead token — a refusal the SecOps rules could not tell from
    a probe with a stale token (issue 18: no false alarm from legitimate traffic)."""
    bao, role_ids, root = vault
    sv = provisioned_service(bao, role_ids, HOSTS["worker1"], root / "worker1-expired")
    dead = sv.client.token
    sv.client.auth.token.revoke_self()  # Vault no longer knows it, as when it expired while Vault was away
    sv._token_expires = time.time() - 5  # and by the service's own clock its life is over
    before = _denials(bao)
    assert sv.zk_credentials()[0] == "histo-worker"  # the legitimate path: a new token, first time
    assert sv.client.token != dead
    time.sleep(0.5)  # the audit device has written its entries
    assert _denials(bao) == before
    # the same for a caller that uses hvac directly through the session's client (a master's data keys and
    # receipts: transit), which the first fix (in the service's own calls only) missed: make soak's minute
    # without Vault ended in vault-denied-by-address alerts for transit/datakey and transit/sign
    master = provisioned_service(bao, role_ids, HOSTS["master1"], root / "master1-expired")
    master.client.auth.token.revoke_self()
    master._token_expires = time.time() - 5
    before = _denials(bao)
    key = master.client.secrets.transit.generate_data_key("histo-store", key_type="plaintext", bits=256)
    assert key["data"]["plaintext"]
    time.sleep(0.5)
    assert _denials(bao) == before
    # a token Vault revoked while its life is not over by our clock is presented, and refused as before
    sv.client.auth.token.revoke_self()
    with pytest.raises(VaultAuthError):
        sv.zk_credentials()
    time.sleep(0.5)
    assert _denials(bao) == before + 1


def test_a_failed_login_never_presents_the_expired_token_either(vault, monkeypatch):
    """SECURITY.md's open item, closed: the session's token is past its life and the login that should
    replace it fails (Vault away, a standby answering 503 during an election). The client used to hand the
    expired token to the caller anyway, once — a denial in Vault's audit log that the SecOps rules cannot
    tell from a probe. Now the caller's call fails as Vault's own answer would (VaultUnavailable; a
    master's data keys: KeysUnavailable) and nothing reaches Vault; once the login works, so does the call."""
    from histo.master.datakeys import KeysUnavailable, VaultDataKeys
    bao, role_ids, root = vault
    services = {name: provisioned_service(bao, role_ids, HOSTS[name], root / f"{name}-relogin")
                for name in ("worker1", "master1")}
    for sv in services.values():
        sv.client.auth.token.revoke_self()  # as when it expired while Vault was away
        sv._token_expires = time.time() - 5

    def election() -> None:
        raise VaultUnavailable("Vault failed: 503 (a standby during an election)")
    before = _denials(bao)
    for sv in services.values():
        monkeypatch.setattr(sv, "login", election)
    with pytest.raises(VaultUnavailable):
        services["worker1"].zk_credentials()
    with pytest.raises(VaultUnavailable):
        services["worker1"].issue_cert("60s")
    keys = VaultDataKeys(lambda: services["master1"].client, 4)
    with pytest.raises(KeysUnavailable, match="unreachable"):
        keys.new_key()
    with pytest.raises(KeysUnavailable):
        keys.unwrap("vault:v1:bm90LWEta2V5")
    time.sleep(0.5)  # the audit device has written whatever reached it
    assert _denials(bao) == before  # the expired tokens were presented to no one
    monkeypatch.undo()
    assert services["worker1"].zk_credentials()[0] == "histo-worker"  # the login works again: so does the call
    assert keys.new_key().plaintext
    time.sleep(0.5)
    assert _denials(bao) == before
