"""The deployed services: the public API from the controller (upload, result), secrets where they
belong and nowhere else, ZooKeeper TLS-only, Vault initialized, unsealed and audited."""
from __future__ import annotations

import json
import secrets
import ssl
import time
import urllib.error
import urllib.request

import pytest

from attack.deployed import DeployedCluster

from .api import request as _request, upload, vault_read_without_token


def test_env_file_is_private_and_complete(cluster: DeployedCluster):
    env_file = cluster.state / "env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert cluster.env["HISTO_URL"].startswith("https://")
    assert (cluster.root / cluster.env["HISTO_CA"]).exists()
    missing = [k for k in ("HISTO_TOKEN_ADMIN", "HISTO_TOKEN_UPLOADER", "HISTO_TOKEN_VIEWER") if not cluster.env.get(k)]
    assert not missing, f"env file lacks {missing} (histo token issue failed during make up?)"


@pytest.mark.drill
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
    for name in ("vault-init.json", "provisioner-token", "issuer-token"):
        assert (cluster.state / name).stat().st_mode & 0o777 == 0o600, name
    init = json.loads((cluster.state / "vault-init.json").read_text())
    secrets = init["keys"] + [(cluster.state / n).read_text().strip() for n in ("provisioner-token", "issuer-token")]
    for host in cluster.machines.values():
        # Nowhere on a machine outside Vault's own barrier: not in a file under /etc, /var/lib/histo*,
        # /opt, /var/log (the audit log HMACs tokens), nor in a command line or a journal. The secrets
        # reach the machine's grep on stdin (-f -), never on a command line of their own.
        out = host.attach(["grep", "-rslFf", "-", "/etc", "/opt", "/var/lib/histo", "/var/lib/histo-zk", "/var/log",
                           "/home", "/root"], input="\n".join(secrets) + "\n", timeout=120)
        hits = [line for line in out.stdout.splitlines() if line.strip()]
        assert not hits, f"{host.name} holds secret zero: {hits}"
        out = host.run("ps -eo args; journalctl --no-pager 2>/dev/null", check=False)
        leaked = [i for i, secret in enumerate(secrets) if secret in out.stdout]
        assert not leaked, f"{host.name} shows secret zero (#{leaked}) in a command line or its journal"


@pytest.mark.drill
def test_the_root_token_is_retired_and_an_operator_can_regenerate_one(cluster: DeployedCluster, tmp_path):
    """DESIGN.md: the root token is not used after setup. The init file keeps only the unseal keys;
    docs/SECURITY.md's procedure regenerates one (provisioner token + the keys' quorum), and retiring
    it again leaves every root token ever issued revoked."""
    import subprocess
    state = cluster.state
    assert set(json.loads((state / "vault-init.json").read_text())) == {"keys"}
    assert not (state / "root-token").exists()
    accessors = (state / "root-accessors").read_text().split()
    assert accessors
    vault = cluster.group("vault")[0]
    url, ca = f"https://{vault.address}:{cluster.ports['vault']}", str(state / "vault-tls" / "ca.pem")
    histo = str(cluster.root / ".venv" / "bin" / "histo")
    common = [f"--vault-url={url}", f"--vault-ca={ca}"]

    def vault_call(path: str, token: str, body: dict | None = None) -> int:
        req = urllib.request.Request(url + path, method="POST" if body is not None else "GET",
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"X-Vault-Token": token})
        try:
            with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=ca), timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code

    prov = (state / "provisioner-token").read_text().strip()
    assert vault_call("/v1/sys/policy/histo-provisioner", prov, {"policy": 'path "*" {capabilities=["sudo"]}'}) == 403
    new_root = tmp_path / "root-token"
    subprocess.run([histo, "vault-generate-root", f"--init-file={state / 'vault-init.json'}", f"--out={new_root}",
                    f"--token-file={state / 'provisioner-token'}", *common], check=True, capture_output=True)
    try:
        root = new_root.read_text().strip()
        assert vault_call("/v1/auth/token/lookup-self", root) == 200
        for accessor in accessors:  # every earlier root token is gone
            assert vault_call("/v1/auth/token/lookup-accessor", root, {"accessor": accessor}) == 400
    finally:
        out = subprocess.run([histo, "vault-retire-root", f"--init-file={state / 'vault-init.json'}",
                              f"--provisioner-file={state / 'provisioner-token'}", f"--root-token-file={new_root}",
                              *common], check=True, capture_output=True, text=True)
    assert json.loads(out.stdout)["root_token"] == "revoked"
    assert vault_call("/v1/auth/token/lookup-self", root) == 403
    assert not new_root.exists() and len((state / "root-accessors").read_text().split()) == len(accessors) + 1


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
    """Every Vault node: initialized and unsealed. sys/health answers a raft standby with 429 unless asked
    not to (standbyok, perfstandbyok): a standby is a healthy node, so it is asked for 200 and the body tells
    active from standby; with several nodes exactly one is active."""
    ctx = ssl.create_default_context(cafile=str(cluster.state / "vault-tls" / "ca.pem"))
    nodes = cluster.group("vault")
    health = {}
    for vault in nodes:
        url = f"https://{vault.address}:{cluster.ports['vault']}/v1/sys/health?standbyok=true&perfstandbyok=true"
        with urllib.request.urlopen(url, context=ctx, timeout=10) as resp:
            health[vault.name] = json.loads(resp.read())
    assert all(h["initialized"] and not h["sealed"] for h in health.values()), health
    active = [name for name, h in health.items() if not h.get("standby") and not h.get("performance_standby")]
    assert len(active) == 1, health
    # The audit log is the server's own (0600) on every node that has one; the active node writes it (a
    # standby forwards requests), so across the cluster it is not empty.
    sizes = []
    for vault in nodes:
        out = vault.run("stat -c '%U %a %s' /var/log/openbao/audit.log 2>/dev/null || true").stdout.split()
        if out:
            assert out[0] == "openbao" and out[1] == "600", (vault.name, out)
            sizes.append(int(out[2]))
    assert sizes and max(sizes) > 0, sizes


def test_services_run_hardened_as_their_own_users(cluster: DeployedCluster):
    for host in cluster.machines.values():
        if host.group == "secops":
            continue  # the collector is rsyslog (Debian runs it as root): test_the_collector_and_the_shippers
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


def test_zookeeper_renewer_runs_unprivileged_on_every_server(cluster: DeployedCluster):
    """Nothing renews a ZooKeeper certificate unless histo-zk-renew runs: on every server, as the
    server's own user (it reads the host's AppRole, never root), with the root path unit that performs
    the one restart it may ask for; the request file is writable by that user alone."""
    for host in cluster.group("zookeeper"):
        props = dict(line.split("=", 1) for line in host.run(
            "systemctl show histo-zk-renew -p ActiveState -p User -p NoNewPrivileges -p ProtectSystem"
        ).stdout.splitlines() if "=" in line)
        assert props == {"ActiveState": "active", "User": "zookeeper", "NoNewPrivileges": "yes",
                         "ProtectSystem": "strict"}, (host.name, props)
        assert host.run("systemctl is-active histo-zookeeper-restart.path").stdout.strip() == "active", host.name
        denied = host.run("runuser -u nobody -- sh -c 'date > /var/lib/histo-zk/restart-request'", check=False)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr, (host.name, denied.stderr)


def test_the_collector_and_the_shippers(cluster: DeployedCluster):
    """Every machine runs rsyslog with the logship configuration and its certificate renewal timer;
    its key and AppRole credentials are root's alone. The collector (secops) listens for RELP on its
    cluster address only, besides sshd and loopback, and hands every message to `histo audit collect`."""
    port = cluster.ports["secops"]
    for host in cluster.machines.values():
        out = host.run("systemctl is-active rsyslog histo-logship-cert.timer; "
                       "stat -c '%a %U' /etc/histo/logship/key.pem /etc/histo/logship/creds/secret_id; "
                       "test -s /etc/rsyslog.d/60-histo-logship.conf && echo conf", check=False).stdout.split("\n")
        assert out[:5] == ["active", "active", "600 root", "600 root", "conf"], (host.name, out)
    for collector in cluster.group("secops"):
        listening = [line.split()[3] for line in collector.run("ss -Hltn").stdout.splitlines() if line.strip()]
        stray = [a for a in listening if not (a.endswith(":22") or a.startswith(("127.", "[::1]"))
                                              or a == f"{collector.address}:{port}")]
        assert not stray and f"{collector.address}:{port}" in listening, (collector.name, listening)
        args = collector.run("ps -eo user,args", check=False).stdout
        assert any(line.split()[0] == "root" and "histo audit collect" in line for line in args.splitlines()), args


@pytest.mark.drill
def test_a_vault_refusal_reaches_the_record_attributed_to_the_machine_refused(cluster: DeployedCluster):
    """worker1 reads a secret with no token: Vault refuses it, its audit device records it on the active
    node, that node's shipper sends the denial (errors only) to secops1, and the record attributes it to
    worker1 and its SPIFFE id. The seconds it took are printed (issue 17 asks for 2)."""
    worker, collector, vault = cluster.group("workers")[0], cluster.group("secops")[0], cluster.group("vault")[0]
    marker = f"histo-deploy-denied-{secrets.token_hex(6)}"
    t0 = time.monotonic()
    assert vault_read_without_token(cluster, worker, vault, marker) == "403"
    found, waited = None, 0.0
    while found is None and (waited := time.monotonic() - t0) < 60:
        lines = collector.run(f"grep -F {marker} /var/lib/histo/secops/secops.log || true").stdout.splitlines()
        for line in lines:
            event = json.loads(line)["event"]
            if isinstance(event, dict) and "secops" in event:
                found = event["secops"]
        if found is None:
            time.sleep(0.5)
    print(f"a Vault refusal on {worker.name} reached the record on {collector.name} after {waited:.1f} s")
    assert found is not None, f"no attributed record of {marker} after 60 s"
    assert (found["layer"], found["host"], found["spiffe"]) == (
        "vault", worker.name, f"spiffe://histo.internal/worker/{worker.name}"), found
    # detected (issue 18): the refusal is evidence of an incident of that machine, in the same record — a
    # new one, or one already open for it (incident_evidence); the collector's default response is alert
    incident = None
    while incident is None and time.monotonic() - t0 < 60:
        for line in collector.run(f"grep -F {marker} /var/lib/histo/secops/secops.log || true").stdout.splitlines():
            event = json.loads(line)["event"]
            if isinstance(event, dict) and str(event.get("kind", "")).startswith("incident_"):
                incident = event
        if incident is None:
            time.sleep(0.5)
    print(f"... and was evidence of incident {incident and incident.get('incident')} after "
          f"{time.monotonic() - t0:.1f} s")
    assert incident is not None, f"no incident names {marker}"
    assert (incident["host"], incident["spiffe"]) == (worker.name, f"spiffe://histo.internal/worker/{worker.name}")


def test_sshd_is_hardened(cluster: DeployedCluster):
    for host in cluster.machines.values():
        conf = host.run("sshd -T 2>/dev/null").stdout.lower()
        for line in ("permitrootlogin no", "passwordauthentication no", "kbdinteractiveauthentication no",
                     "pubkeyauthentication yes"):
            assert line in conf, f"{host.name}: {line}"
