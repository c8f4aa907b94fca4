"""`make local`: the whole cluster as processes on loopback, against a real OpenBao server and a
real ZooKeeper. Each service gets its own 127.0.10.x address so Vault's address bindings are real.

State (secret zero, credentials, certificates, logs) lives under .histo/local, folders 0700 and
secret files 0600; `down` stops exactly the processes whose pid files `up` wrote."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import hvac

from .. import TRUST_DOMAIN, envfile, envrefresh
from ..lifetimes import Lifetimes, profile, seconds
from ..files import private_dir, write_private
from ..readiness import wait_ready
from ..vault.pki import roots_pem as pki_roots
from ..vault.provision import wrapped_secret_id, write_credentials
from .bao import BaoServer
from .raft import BaoCluster
from ..vault.secretzero import operator_token, provisioner_token, token_valid
from ..vault.setup import ISSUER_TOKEN_ROLE, VERIFIER_TOKEN_ROLE, apply as vault_apply
from ..zk.prepare import prepare as zk_prepare
from .zkserver import ZkServer
from .. import procs

NET = "127.0.10"
VAULT_PORT, ZK_PORT, PUBLIC_PORT, INTERNAL_PORT = 8200, 2281, 4443, 8443


def public_address(net: str = NET) -> str:
    """The floating public address every serving master also listens on (master/floating.py)."""
    return f"{net}.20"


# Sign-in accounts of local mode (passwords generated into .histo/local/people/<name>.password, 0600):
# one per histo role, and dave, who is in no histo group (sign-in refuses him, saying why).
PEOPLE: list[dict[str, Any]] = [{"name": "alice", "groups": ["admin"]}, {"name": "bob", "groups": ["uploader"]},
          {"name": "carol", "groups": ["viewer"]}, {"name": "dave", "groups": []}]
MACHINE_CLIENTS: list[dict[str, Any]] = [{"name": "ci", "roles": ["uploader", "viewer"]}]
CLI_REDIRECT = "http://127.0.0.1/callback"  # `histo login`: loopback, any port (RFC 8252)


def oidc_spec(root: Path, urls: list[str]) -> dict:
    return {"redirect_uris": [u + "/" for u in urls] + [CLI_REDIRECT], "secrets_dir": str(root / "people"),
            "people": PEOPLE, "machine_clients": MACHINE_CLIENTS}


VAULT_HOSTS = (10, 16, 17)  # last octets of vault1..3, as in DESIGN.md's topology


def topology(masters: int, workers: int, net: str = NET) -> list[dict]:
    hosts = [{"name": "zk1", "role": "zookeeper", "address": f"{net}.11"}]
    hosts += [{"name": f"master{i}", "role": "master", "address": f"{net}.{20 + i}",
               "public_address": public_address(net)} for i in range(1, masters + 1)]
    hosts += [{"name": f"worker{i}", "role": "worker", "address": f"{net}.{30 + i}"} for i in range(1, workers + 1)]
    return hosts


def _say(msg: str) -> None:
    print(f"histo local: {msg}", flush=True)


def vault_server(root: Path, net: str, nodes: int) -> BaoServer | BaoCluster:
    """One OpenBao node (Shamir seal, as make local has always run), or a raft cluster of `nodes` at
    the default profile's vault1..3 addresses (.10, .16, .17) with the static seal the vault role uses."""
    if nodes <= 1:
        return BaoServer(root / "vault", f"{net}.10", VAULT_PORT)
    return BaoCluster(root / "vault", [f"{net}.{i}" for i in VAULT_HOSTS[:nodes]], VAULT_PORT)


def up(root: Path, masters: int = 2, workers: int = 2, cert_ttl: str | None = None, zk_session_timeout: float = 6.0,
       extra: dict | None = None, net: str = NET, ready_timeout: float = 90.0,
       lifetimes: Lifetimes | None = None, vault_nodes: int = 1, wait: bool = True, readmit: str = "") -> dict:
    """`lifetimes`: the profile of every credential's life (lifetimes.py, default standard);
    `cert_ttl` overrides the services' certificate life alone. `wait` False: provision and start what is
    not running, without waiting for every service to be ready (a host kept out, as a quarantined one).
    `readmit`: the quarantined host whose policy and PKI role setup restores (vault/setup.py: every
    other quarantined host stays contained), as `make readmit` does on the machines."""
    t_start = time.perf_counter()
    life = lifetimes or profile("standard")
    cert_ttl = cert_ttl or life.cert_ttl
    root = private_dir(root.resolve())
    hosts = topology(masters, workers, net)
    (root / "topology.json").write_text(json.dumps({"net": net, "hosts": hosts, "vault_nodes": vault_nodes},
                                                   indent=1))
    (root / "lifetimes.json").write_text(json.dumps({**life.as_dict(), "cert_ttl": cert_ttl}, indent=1))
    zk_addr = hosts[0]["address"]

    private_dir(root / "vault")
    bao = vault_server(root, net, vault_nodes)
    bao.start()  # a raft cluster initializes through vault1; the others join and unseal from the seal key
    if isinstance(bao, BaoServer):
        bao.init_and_unseal()
    # Local mode keeps the root token (.histo/local/vault/init.json, 0600) for setup and for the tests'
    # attack scenarios: a developer tool (docs/SECURITY.md). Provisioning uses the provisioner token,
    # as on the deployed cluster, so its policy is exercised by every local run.
    admin = bao.root_client()
    urls = [f"https://{h['address']}:{PUBLIC_PORT}" for h in hosts if h["role"] == "master"]
    public = f"https://{public_address(net)}:{PUBLIC_PORT}"
    # vault_url: every node in the PKI URLs, not only the active one root_client() talks to;
    # listener_ca_dir: pki_vault's intermediate signed here with the bootstrap CA, as on the controller
    nodes = vault_nodes_of(bao)
    vault_apply(admin, {"trust_domain": TRUST_DOMAIN, "hosts": hosts + [n for n, _ in nodes], **life.spec(),
                        "vault_url": bao.url, "listener_ca_dir": str(bao.ca_path.parent),
                        "audit_log": str(root / "vault" / "audit.log"), "oidc": oidc_spec(root, [public, *urls]),
                        "readmit": readmit})
    prov = _provisioner(root, admin)

    def creds_for(host: dict) -> Path:
        creds = private_dir(root / host["name"] / "creds")
        if not (creds / "secret_id").exists() and not (creds / "secret_id.wrap").exists():
            role_id = prov.auth.approle.read_role_id(f"histo-{host['name']}")["data"]["role_id"]
            write_credentials(creds, role_id, wrapped_secret_id(prov, host["name"], host["address"]))
        return creds

    # every root: during a root rotation (vault/pki.py) clients of either chain's masters are served
    ca_pem = "\n".join(pki_roots(prov))
    write_private(root / "ca.pem", ca_pem.strip() + "\n", mode=0o644)  # a CA certificate is public
    _say(f"OpenBao ready at {bao.url}")
    for host, node in nodes:  # each node's listener certificate from pki_vault, renewed at 2/3 (SIGHUP)
        start_listener_renewer(root, host, node, bao.url, creds_for(host), life.vault_listener_ttl)

    # zk1 is prepared from the same zk.json as a machine's, and its renewer (`histo zk-renew`, a timer
    # on machines) runs beside it: the host's secret_id, and new certificates by a restart.
    zk_cfg = {"name": "zk1", "address": zk_addr, "secure_port": ZK_PORT, "state_dir": str(private_dir(root / "zk1")),
              "vault_url": bao.url, "vault_ca": str(bao.ca_path), "creds_dir": str(creds_for(hosts[0])),
              "cert_ttl": life.zk_cert_ttl, "renew_slot": 5}
    renew_dir = private_dir(root / "zk-renew")
    zk_json = renew_dir / "config.json"
    zk_json.write_text(json.dumps(zk_cfg, indent=1))
    zk = ZkServer.from_json(zk_cfg)
    if not zk.running():
        zk_prepare(zk_json)
        zk.start()
    if not procs.alive(renew_dir / "pid", f"--config {zk_json}"):
        procs.spawn([sys.executable, "-m", "histo.cli", "zk-renew", "--config", str(zk_json), "--restart", "process",
                     "--loop", "5"], renew_dir / "service.log", renew_dir / "pid")
    _say(f"ZooKeeper ready at {zk_addr}:{ZK_PORT} (TLS only)")

    zk_hosts = f"{zk_addr}:{ZK_PORT}"
    started = []
    for host in hosts[1:]:
        name, role = host["name"], host["role"]
        sdir = private_dir(root / name)
        cfg = {"role": role, "name": name, "address": host["address"], "vault_url": bao.url,
               "vault_ca": str(bao.ca_path), "creds_dir": str(creds_for(host)), "state_dir": str(sdir),
               "zk_hosts": zk_hosts, "internal_port": INTERNAL_PORT, "public_port": PUBLIC_PORT,
               "cert_ttl": cert_ttl, "zk_session_timeout": zk_session_timeout, **(extra or {})}
        if host.get("public_address"):
            cfg.update(public_address=host["public_address"], public_address_mode="shared")
        (sdir / "config.json").write_text(json.dumps(cfg, indent=1))
        marker = f"--config {sdir / 'config.json'}"
        if procs.alive(sdir / "pid", marker):
            continue
        procs.spawn([sys.executable, "-m", "histo.cli", role, "--config", str(sdir / "config.json")],
                    sdir / "service.log", sdir / "pid")
        started.append(name)
    if started:
        _say(f"started {', '.join(started)}")
    if not wait:
        return {"urls": urls, "env": root / "env", "seconds": time.perf_counter() - t_start}

    wait_ready(urls, root / "ca.pem", workers, masters, timeout=ready_timeout, diagnose=lambda: diagnose(root))
    env = write_env(root, prov, urls, life, public)
    total = time.perf_counter() - t_start
    _say(f"ready in {total:.1f}s — {public}  (env: {root / 'env'})")
    _say(f"sign in at {public}/ as {PEOPLE[0]['name']} (OpenBao's page; password in "
         f"{root / 'people' / (PEOPLE[0]['name'] + '.password')}; OpenBao's CA: {bao.ca_path})")
    return {"urls": urls, "env": env, "seconds": total}


def vault_nodes_of(bao: BaoServer | BaoCluster) -> list[tuple[dict, BaoServer]]:
    """Each OpenBao node as a Vault host of the spec (role vault: its listener certificate only)."""
    nodes = bao.nodes if isinstance(bao, BaoCluster) else [bao]
    return [({"name": n.node_id, "role": "vault", "address": n.address}, n) for n in nodes]


def start_listener_renewer(root: Path, host: dict, node: BaoServer, vault_url: str, creds: Path, ttl: str,
                           interval: float = 5.0) -> bool:
    """`histo vault-listener-renew --loop` beside one node (a service+timer on machines); its folder
    <root>/<node>-listener holds config.json, so `down` stops it as it stops every service."""
    sdir = private_dir(root / f"{host['name']}-listener")
    config = sdir / "config.json"
    write_private(config, json.dumps({
        "host": host["name"], "address": node.address, "port": node.port, "hostnames": node.hostnames,
        "vault_url": vault_url, "vault_ca": str(node.ca_path), "creds_dir": str(creds),
        "cert": str(node.dir / "tls" / "cert.pem"), "key": str(node.dir / "tls" / "key.pem"), "ttl": ttl,
        "server_pid_file": str(node.pid_path), "server_marker": str(node.config_path)}, indent=1) + "\n")
    if procs.alive(sdir / "pid", f"--config {config}"):
        return False
    procs.spawn([sys.executable, "-m", "histo.cli", "vault-listener-renew", "--config", str(config),
                 "--loop", f"{interval:g}"], sdir / "service.log", sdir / "pid")
    return True


def _provisioner(root: Path, admin: hvac.Client) -> hvac.Client:
    """The provisioner token (policy histo-provisioner), kept 0600 beside, never inside, init.json."""
    path = root / "provisioner-token"
    client = hvac.Client(url=admin.url, verify=admin.session.verify)
    token = path.read_text().strip() if path.exists() else ""
    client.token = token
    if not token or not token_valid(client):
        token = provisioner_token(admin)
        client.token = token
        write_private(path, token + "\n")
    return client


def write_env(root: Path, prov, urls: list[str], life: Lifetimes | None = None,
              public_url: str | None = None) -> dict:
    life = life or profile("standard")
    issuer = operator_token(prov, ISSUER_TOKEN_ROLE, life.issuer_max_ttl, "histo-local-issuer")
    write_private(root / "issuer-token", issuer + "\n")
    # `histo receipt verify --token-file .histo/local/receipt-verifier-token`: reads the receipt public keys only
    verifier = operator_token(prov, VERIFIER_TOKEN_ROLE, life.issuer_max_ttl, "histo-local-receipt-verifier")
    write_private(root / "receipt-verifier-token", verifier + "\n")
    signer = hvac.Client(url=prov.url, verify=prov.session.verify)
    signer.token = issuer
    tokens = envfile.write_env(root / "env", urls, root / "ca.pem", signer, seconds(life.api_token_ttl),
                               public_url=public_url)
    # the tokens above and the issuer token renewed at 2/3 of their life; `down` stops it (its --config)
    envrefresh.start(root, prov.url, str(prov.session.verify))
    return {"HISTO_URL": public_url or urls[0], "HISTO_URLS": ",".join(urls), "HISTO_CA": str(root / "ca.pem"),
            **{f"HISTO_TOKEN_{role.upper()}": tok for role, tok in tokens.items()}}


def diagnose(root: Path) -> str:
    """The first service that is not running or logs trouble, with the last such line of its log."""
    for sdir in sorted(root.iterdir()):
        log_path = sdir / "service.log"
        if not (sdir / "config.json").exists() or sdir.name == envrefresh.DIRNAME:
            continue  # the token refresher starts once the cluster is ready: it is no reason for not being ready
        if not procs.alive(sdir / "pid", f"--config {sdir / 'config.json'}"):
            return f"{sdir.name} is not running ({_last_trouble(log_path, last_resort=True) or 'no log'}); "
    for sdir in sorted(root.iterdir()):
        if sdir.name == envrefresh.DIRNAME:
            continue
        line = _last_trouble(sdir / "service.log")
        if line:
            return f"{sdir.name}: {line}; "
    return ""


def _last_trouble(log_path: Path, last_resort: bool = False) -> str:
    """The last warning or error line of a log (or its last line, for a process that exited)."""
    try:
        lines = [ln for ln in log_path.read_text(errors="replace").splitlines()[-200:] if ln.strip()]
    except OSError:
        return ""
    bad = [ln for ln in lines if any(w in ln for w in (" WARNING ", " ERROR ", "Error", "error:", "histo: "))]
    line = bad[-1] if bad else (lines[-1] if lines and last_resort else "")
    return line.strip()[-240:]


def down(root: Path) -> None:
    root = root.resolve()
    if not root.exists():
        _say("nothing to stop")
        return
    stopped = []
    for sdir in sorted(root.iterdir()):
        if (sdir / "config.json").exists() and procs.stop(sdir / "pid", f"--config {sdir / 'config.json'}"):
            stopped.append(sdir.name)
    topo = json.loads((root / "topology.json").read_text()) if (root / "topology.json").exists() else {}
    net = topo.get("net", NET)
    zk = ZkServer(root / "zk1", f"{net}.11", ZK_PORT)
    if zk.stop():
        stopped.append("zk1")
    bao = vault_server(root, net, int(topo.get("vault_nodes", 1)))
    if bao.stop():
        stopped.append("vault")
    _say(f"stopped {', '.join(stopped) or 'nothing (already down)'}")


def status(root: Path) -> dict:
    root = root.resolve()
    out = {}
    if root.exists():
        for sdir in sorted(root.iterdir()):
            if (sdir / "config.json").exists():
                out[sdir.name] = bool(procs.alive(sdir / "pid", f"--config {sdir / 'config.json'}"))
    return out
