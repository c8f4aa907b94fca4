"""The deployed services: the public API from the controller (upload, result), secrets where they
belong and nowhere else, ZooKeeper TLS-only, Vault initialized, unsealed and audited."""
from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request

import pytest

from attack.deployed import DeployedCluster

from .api import request as _request, upload


def test_env_file_is_private_and_complete(cluster: DeployedCluster):
    env_file = cluster.state / "env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert cluster.env["HISTO_URL"].startswith("https://")
    assert (cluster.root / cluster.env["HISTO_CA"]).exists()
    missing = [k for k in ("HISTO_TOKEN_ADMIN", "HISTO_TOKEN_UPLOADER", "HISTO_TOKEN_VIEWER") if not cluster.env.get(k)]
    assert not missing, f"env file lacks {missing} (histo token issue failed during make up?)"


def test_upload_over_https_from_the_controller(cluster: DeployedCluster):
    token = cluster.env.get("HISTO_TOKEN_UPLOADER")
    if not token:
        pytest.skip("no uploader token in the env file")
    status, _b, _h = _request(cluster, "GET", "/readyz")
    assert status == 200
    status, raw = upload(cluster, token)
    assert status == 202, raw
    job = json.loads(raw)["id"]
    deadline = time.time() + 60
    state = None
    while time.time() < deadline:
        status, raw, _h = _request(cluster, "GET", f"/api/v1/jobs/{job}", token)
        state = json.loads(raw)["state"]
        if state in ("done", "failed"):
            break
        time.sleep(0.3)
    assert state == "done", raw
    status, raw, headers = _request(cluster, "GET", f"/api/v1/jobs/{job}/result", token)
    assert status == 200 and raw.startswith(b"\x89PNG"), headers
    # No token, no service.
    status, _raw, _h = _request(cluster, "GET", f"/api/v1/jobs/{job}", None)
    assert status == 401


def test_secret_zero_stays_on_the_controller(cluster: DeployedCluster):
    assert cluster.state.stat().st_mode & 0o777 == 0o700
    for name in ("vault-init.json", "root-token", "issuer-token"):
        assert (cluster.state / name).stat().st_mode & 0o777 == 0o600, name
    root_token = (cluster.state / "root-token").read_text().strip()
    init = json.loads((cluster.state / "vault-init.json").read_text())
    assert init["root_token"] == root_token
    secrets = [root_token] + init["keys"]
    for host in cluster.machines.values():
        # Nowhere on a machine outside Vault's own barrier: not in a file under /etc, /var/lib/histo*,
        # /opt, /var/log (the audit log HMACs tokens), nor in a command line or a journal.
        for secret in secrets:
            out = host.run(f"grep -rlF -- '{secret}' /etc /opt /var/lib/histo /var/lib/histo-zk /var/log /home "
                           f"/root 2>/dev/null; ps -eo args | grep -F -- '{secret}' | grep -v grep; "
                           f"journalctl --no-pager 2>/dev/null | grep -cF -- '{secret}'", check=False)
            hits = [line for line in out.stdout.splitlines() if line.strip() and line.strip() != "0"]
            assert not hits, f"{host.name} holds secret zero: {hits}"


def test_service_credentials_are_private_and_used(cluster: DeployedCluster):
    for host in cluster.machines.values():
        if host.group in ("masters", "workers"):
            creds, owner = "/var/lib/histo/creds", "histo"
        elif host.group == "zookeeper":
            creds, owner = "/var/lib/histo-zk/creds", "zookeeper"
        else:
            continue
        out = host.run(f"stat -c '%n %U %a' {creds} {creds}/role_id {creds}/secret_id").stdout.split("\n")
        assert out[0].endswith(f"{owner} 700"), out
        for line in out[1:3]:
            assert line.endswith(f"{owner} 600"), out


def test_no_secret_on_a_command_line(cluster: DeployedCluster):
    for host in cluster.machines.values():
        args = host.run("ps -eo args", check=False).stdout
        for word in ("superDigest", "secret_id=", "VAULT_TOKEN", "X-Vault-Token", "password="):
            assert word not in args, f"{host.name}: {word} on a command line"


def test_zookeeper_is_tls_only_with_the_super_digest_in_a_private_zoo_cfg(cluster: DeployedCluster):
    ports = cluster.ports
    for zk in cluster.group("zookeeper"):
        listening = zk.run("ss -Hltn").stdout
        assert (f"{zk.address}:{ports['zk_client']} " in listening
                or f"[::ffff:{zk.address}]:{ports['zk_client']} " in listening), listening
        assert ":2181 " not in listening, "a plain client port is open"
        out = zk.run("stat -c '%U %a' /var/lib/histo-zk/conf/zoo.cfg; "
                     "grep -c '^DigestAuthenticationProvider.superDigest=super:' /var/lib/histo-zk/conf/zoo.cfg; "
                     "grep -c '^clientPort' /var/lib/histo-zk/conf/zoo.cfg || true").stdout.split()
        assert out[:2] == ["zookeeper", "600"] and out[2] == "1" and out[3] == "0", out
        # The TLS port wants a certificate: a TLS client without one is refused at the handshake.
        probe = zk.run(f"timeout 10 openssl s_client -connect {zk.address}:{ports['zk_client']} </dev/null 2>&1 "
                       "| grep -E -c 'alert|certificate required|handshake failure|Verify return code' || true",
                       check=False).stdout.strip()
        assert probe and probe != "0"


def test_vault_is_initialized_unsealed_audited(cluster: DeployedCluster):
    vault = cluster.group("vault")[0]
    ctx = ssl.create_default_context(cafile=str(cluster.state / "vault-tls" / "ca.pem"))
    url = f"https://{vault.address}:{cluster.ports['vault']}/v1/sys/health"
    with urllib.request.urlopen(url, context=ctx, timeout=10) as resp:
        health = json.loads(resp.read())
    assert health["initialized"] and not health["sealed"]
    out = vault.run("stat -c '%U %a %s' /var/log/openbao/audit.log").stdout.split()
    assert out[0] == "openbao" and out[1] == "600" and int(out[2]) > 0


def test_services_run_hardened_as_their_own_users(cluster: DeployedCluster):
    for host in cluster.machines.values():
        unit = {"vault": "openbao", "zookeeper": "histo-zookeeper", "masters": "histo-master",
                "workers": "histo-worker"}[host.group]
        props = dict(line.split("=", 1) for line in host.run(
            f"systemctl show {unit} -p ActiveState -p User -p NoNewPrivileges -p ProtectSystem "
            "-p ProtectHome -p PrivateTmp -p CapabilityBoundingSet").stdout.splitlines() if "=" in line)
        assert props["ActiveState"] == "active", (host.name, props)
        assert props["User"] not in ("", "root"), (host.name, props)
        assert props["NoNewPrivileges"] == "yes" and props["ProtectSystem"] == "strict", (host.name, props)
        if host.group == "masters":
            assert props["CapabilityBoundingSet"] == "cap_net_bind_service", (host.name, props)
        elif host.group in ("workers", "zookeeper"):
            assert props["CapabilityBoundingSet"] == "", (host.name, props)


def test_sshd_is_hardened(cluster: DeployedCluster):
    for host in cluster.machines.values():
        conf = host.run("sshd -T 2>/dev/null").stdout.lower()
        for line in ("permitrootlogin no", "passwordauthentication no", "kbdinteractiveauthentication no",
                     "pubkeyauthentication yes"):
            assert line in conf, f"{host.name}: {line}"
