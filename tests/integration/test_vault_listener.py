"""Vault's own listener certificate renews itself (issue 16, item 1), against a real OpenBao and real TLS.

pki_vault is an intermediate the bootstrap CA signed (on the "controller": this test's state folder),
so a client that trusts only the bootstrap ca.pem keeps verifying Vault across the swap; the renewer
issues with the Vault host's own AppRole and makes the real `bao` reload on SIGHUP; a worker's or a
master's identity cannot issue a certificate for Vault's names or address."""
from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from cryptography import x509
from hvac.exceptions import Forbidden, InvalidRequest

from histo.local.bao import BaoServer
from histo.vault.listener import ListenerConfig, ListenerRenewer
from histo.vault.setup import LISTENER

from .cluster_fixture import NET
from .vaultfix import configure, default_hosts, provision, provisioned_service, running_bao

pytestmark = pytest.mark.long

TTL = "45s"  # + OpenBao's 30 s backdating: a 75 s life, due 20 s after issue


def _served(address: str, port: int, ca: Path, name: str = "vault.histo.internal") -> list[x509.Certificate]:
    """The listener's certificate from a real handshake that verifies the chain and the name with the
    bootstrap CA alone (raises if it does not)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection((address, port), timeout=5) as sock:
        with ctx.wrap_socket(sock, server_hostname=name) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der
    return [x509.load_der_x509_certificate(der)]


Fixture = tuple[BaoServer, dict[str, Any], list[dict[str, str]], Path]


@pytest.fixture()
def listener(tmp_path: Path) -> Iterator[Fixture]:
    vault_host = {"name": "vault1", "role": "vault", "address": f"{NET}.10"}
    hosts = default_hosts(NET) + [vault_host]
    with running_bao(tmp_path / "vault", vault_host["address"]) as bao:
        result = configure(bao, hosts, listener_ca_dir=str(bao.ca_path.parent), vault_listener_ttl=TTL)
        creds = provision(bao, result["role_ids"], vault_host, tmp_path / "vault1-creds")
        cfg_path = tmp_path / "listener.json"
        cfg_path.write_text(json.dumps({
            "host": "vault1", "address": bao.address, "port": bao.port, "hostnames": bao.hostnames,
            "vault_url": bao.url, "vault_ca": str(bao.ca_path), "creds_dir": str(creds),
            "cert": str(bao.dir / "tls" / "cert.pem"), "key": str(bao.dir / "tls" / "key.pem"), "ttl": TTL,
            "server_pid_file": str(bao.pid_path), "server_marker": str(bao.config_path)}))
        yield bao, result, hosts, cfg_path


def test_listener_renews_through_pki_vault_without_a_failed_request(listener: Fixture, tmp_path: Path) -> None:
    bao, result, hosts, cfg_path = listener
    assert f"{LISTENER} intermediate" in result["changes"]
    before = _served(bao.address, bao.port, bao.ca_path)[0]
    assert before.issuer == x509.load_pem_x509_certificate(bao.ca_path.read_bytes()).subject  # the fallback

    # clients that trust only the bootstrap ca.pem, during the swaps: one opens a new TLS connection per
    # request (each handshake meets whatever is served then), one keeps its connection alive throughout
    stop, ok, failed = threading.Event(), [0, 0], []

    def hammer(keep_alive: bool) -> None:
        kept = requests.Session()
        while not stop.is_set():
            try:
                if keep_alive:
                    r = kept.get(f"{bao.url}/v1/sys/health", verify=str(bao.ca_path), timeout=5)
                else:
                    with requests.Session() as s:
                        r = s.get(f"{bao.url}/v1/sys/health", verify=str(bao.ca_path), timeout=5)
                assert r.status_code == 200, r.status_code
                ok[keep_alive] += 1
            except Exception as exc:  # noqa: BLE001 - every failure counts, whatever it is
                failed.append(repr(exc))
        kept.close()
    workers = [threading.Thread(target=hammer, args=(k,), daemon=True) for k in (False, True)]
    for w in workers:
        w.start()
    try:
        renewer = ListenerRenewer(ListenerConfig.from_file(cfg_path))
        out = renewer.once()  # the bootstrap-made certificate is replaced at the first pass
        assert out["changed"] and out["reloaded"] and out["serving"], out
        first = _served(bao.address, bao.port, bao.ca_path)[0]
        assert first.serial_number != before.serial_number
        assert first.serial_number == int(str(out["serial"]).replace(":", ""), 16)
        assert first.issuer != before.issuer  # pki_vault's intermediate, which chains to the bootstrap CA

        # not due: nothing issued, nothing signalled, the files untouched
        cert_file = Path(json.loads(cfg_path.read_text())["cert"])
        text = cert_file.read_bytes()
        assert renewer.once() == {"changed": False}
        assert cert_file.read_bytes() == text

        # at 2/3 of its life it is due again: a second swap through the same path (the CLI's one pass)
        time.sleep(max(0.0, (first.not_valid_before_utc.timestamp() + 50.5) - time.time()))
        cli = subprocess.run([sys.executable, "-m", "histo.cli", "vault-listener-renew", "--config", str(cfg_path)],
                             capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        second_out = json.loads(cli.stdout)
        assert second_out["changed"] and second_out["why"] == "in its last third" and second_out["serving"]
        time.sleep(1.0)
    finally:
        stop.set()
        for w in workers:
            w.join(10)
    second = _served(bao.address, bao.port, bao.ca_path)[0]
    assert second.serial_number not in (before.serial_number, first.serial_number)
    assert failed == [] and min(ok) > 20, (ok, failed[:3])

    # what the listener serves: this host's names and address, a TLS server and nothing else
    sans = second.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == set(bao.hostnames)
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == [bao.address]
    eku = second.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
    key_file = Path(json.loads(cfg_path.read_text())["key"])
    assert key_file.stat().st_mode & 0o777 == 0o600

    # a server restarted now keeps the renewed certificate (local mode's fallback check accepts it)
    bao.stop()
    bao.start()
    bao.unseal()
    assert _served(bao.address, bao.port, bao.ca_path)[0].serial_number == second.serial_number


def test_only_the_vault_hosts_identity_issues_a_listener_certificate(listener: Fixture, tmp_path: Path) -> None:
    bao, result, hosts, cfg_path = listener
    by_name = {h["name"]: h for h in hosts}
    params = {"common_name": "vault.histo.internal", "alt_names": "vault1", "ip_sans": f"{NET}.10", "ttl": "30s"}
    for name in ("worker1", "master1", "zk1"):  # a compromised service mints a certificate for Vault's address
        vault = provisioned_service(bao, result["role_ids"], by_name[name], tmp_path / f"{name}-creds")
        with pytest.raises(Forbidden):
            vault.client.write_data(f"{LISTENER}/issue/listener-vault1", data=params)
    # the Vault host's own identity: its names and address only
    renewer = ListenerRenewer(ListenerConfig.from_file(cfg_path))
    renewer.vault.login()
    ok = renewer.vault.client.write_data(f"{LISTENER}/issue/listener-vault1", data=params)
    assert isinstance(ok, dict) and x509.load_pem_x509_certificate(ok["data"]["certificate"].encode())
    for bad in ({"ip_sans": f"{NET}.21"}, {"ip_sans": f"{NET}.10,{NET}.21"}, {"common_name": "master1.histo.internal"},
                {"alt_names": "master1"}, {"alt_names": "*.histo.internal"}, {"alt_names": "localhost"}):
        with pytest.raises((Forbidden, InvalidRequest)):
            renewer.vault.client.write_data(f"{LISTENER}/issue/listener-vault1", data={**params, **bad})
    # nor may it issue from the services' PKI for Vault's address
    with pytest.raises(Forbidden):
        renewer.vault.client.write_data("pki_int/issue/host-master1", data={"common_name": "master1.histo.internal",
                                                                           "ip_sans": f"{NET}.21"})


def test_setup_is_idempotent_and_a_second_apply_signs_nothing(listener: Fixture) -> None:
    bao, _result, hosts, _cfg = listener
    again = configure(bao, hosts, listener_ca_dir=str(bao.ca_path.parent), vault_listener_ttl=TTL)
    assert again["changed"] is False, again["changes"]


def test_renewer_with_vault_away_fails_in_one_line(listener: Fixture, tmp_path: Path) -> None:
    bao, _result, _hosts, cfg_path = listener
    bao.stop()
    cli = subprocess.run([sys.executable, "-m", "histo.cli", "vault-listener-renew", "--config", str(cfg_path)],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 1
    assert cli.stderr.startswith("histo: vault-listener-renew:") and len(cli.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    cli = subprocess.run([sys.executable, "-m", "histo.cli", "vault-listener-renew", "--config", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 1 and "Traceback" not in cli.stderr and len(cli.stderr.strip().splitlines()) == 1


def test_files_the_server_does_not_serve_are_reloaded_and_a_stray_key_is_replaced(listener: Fixture) -> None:
    bao, _result, _hosts, cfg_path = listener
    cfg = ListenerConfig.from_file(cfg_path)
    renewer = ListenerRenewer(cfg)
    assert renewer.once()["serving"]
    # new files written without a signal (a lost SIGHUP): the next pass only reloads, issues nothing
    renewer.vault.login()
    cert_text, key_pem, serial = renewer.issue()
    Path(cfg.key).write_text(key_pem)
    Path(cfg.cert).write_text(cert_text)
    out = renewer.once()
    assert out == {"changed": False, "reloaded": True}, out
    assert renewer.wait_served(int(serial.replace(":", ""), 16))
    # a key that does not pair with the certificate: replaced at once (the server could not load it)
    Path(cfg.key).write_text(renewer.issue()[1])
    out = renewer.once()
    assert out["changed"] and out["why"] == "key does not match the certificate" and out["serving"], out
