"""One renderer each for the OpenBao server configuration (histo/vault/openbao.hcl.j2, also the vault
role's template) and the ZooKeeper JVM command line (ZkConfig.command, also the unit's ExecStart via
`histo zk-exec`)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from histo.vault.hcl import render
from histo.zk import config as zkconfig
from histo.zk.config import ZkConfig


def _hcl(**over: Any) -> str:
    args: dict[str, Any] = dict(node_id="vault1", data_dir="/var/lib/openbao", address="192.168.56.10", port=8200,
                tls_cert_file="/etc/openbao/tls/cert.pem", tls_key_file="/etc/openbao/tls/key.pem",
                audit_file="/var/log/openbao/audit.log")
    args.update(over)
    return render(**args)


def test_openbao_config_has_listener_raft_and_declarative_audit() -> None:
    text = _hcl()
    assert 'address         = "192.168.56.10:8200"' in text
    assert 'cluster_addr = "https://192.168.56.10:8201"' in text
    assert "performance_multiplier = 1" in text
    assert 'file_path = "/var/log/openbao/audit.log"' in text and 'mode      = "0600"' in text
    assert 'tls_min_version = "tls12"' in text and "log_level" not in text


def test_a_single_node_has_no_peers_and_the_shamir_seal() -> None:
    text = _hcl()
    assert "retry_join" not in text and "seal" not in text.replace("unseal", "")


def test_a_raft_node_joins_its_peers_over_tls_and_unseals_from_its_key() -> None:
    peers = ["https://192.168.56.16:8200", "https://192.168.56.17:8200"]
    text = _hcl(retry_join=peers, tls_ca_file="/etc/openbao/tls/ca.pem", seal_key_file="/etc/openbao/seal/unseal.key")
    assert text.count("retry_join {") == 2
    for peer in peers:
        assert f'leader_api_addr     = "{peer}"' in text
    assert text.count('leader_ca_cert_file = "/etc/openbao/tls/ca.pem"') == 2
    assert 'seal "static"' in text and 'current_key    = "file:///etc/openbao/seal/unseal.key"' in text
    with pytest.raises(ValueError, match="tls_ca_file"):  # never join a peer whose certificate is not checked
        _hcl(retry_join=peers)


def test_openbao_config_without_audit_device_for_hashicorp_and_with_log_level() -> None:
    text = _hcl(audit_file="", log_level="warn")
    assert "audit" not in text.replace("audit device", "") and 'log_level    = "warn"' in text


def test_openbao_config_strings_are_escaped() -> None:
    text = _hcl(data_dir='/tmp/a "quoted" dir')
    assert r'path    = "/tmp/a \"quoted\" dir"' in text


def test_zk_command_from_the_machines_json_has_no_secret(tmp_path: Path) -> None:
    cfg = {"name": "zk1", "address": "192.168.56.11", "state_dir": str(tmp_path), "creds_dir": "/x",
           "secure_port": 2281, "server_id": 1, "heap": "128m", "peers": [], "vault_url": "https://v",
           "vault_ca": "/ca"}
    argv = ZkConfig.from_json(cfg).command()
    assert argv[0] == zkconfig.JAVA and "-Xmx128m" in argv and argv[-1] == str(tmp_path / "conf" / "zoo.cfg")
    assert argv[argv.index("-cp") + 1].split(":")[:2] == [str(tmp_path / "conf"), zkconfig.ZK_JAR]
    assert not any("super" in a.lower() or "digest" in a.lower() for a in argv)


def test_zk_exec_execs_the_same_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "zk.json"
    path.write_text(json.dumps({"address": "127.0.0.1", "state_dir": str(tmp_path)}))
    seen: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(os, "execv", lambda exe, argv: seen.append((exe, argv)))
    zkconfig.exec_server(path)
    assert seen == [(zkconfig.JAVA, ZkConfig(tmp_path, "127.0.0.1").command())]
