#!/usr/bin/env python3
"""`make attack` against the deployed cluster (`make up`): the drills of issue 7, each printing what it
tried, what happened and whether the control held, and each posted as a `drill` SecOps event.

Where the attacker stands: on the controller's bridge (histo-br0) for the capture; inside worker1 (a
compromised worker: root there, so it holds the service's files: certificate, key, role_id, secret_id)
for the lateral-movement drills, run through lxc-attach (the same network namespace an SSH session
would have); inside worker2 or master2 for credentials copied from worker1; and in a network namespace
of its own on histo-br0 (two fresh addresses in 192.168.56.200-249, no cluster machine) for the flood.

How it runs: on the controller with the project's virtualenv (.venv: histo, hvac, kazoo, Pillow). The
code that runs inside a machine is sent on stdin to the machine's own /opt/histo/bin/python (the histo
wheel the role installed), with its inputs as a JSON line before it, so no secret is ever on a command
line; secrets that come back (to search a capture for them, to copy them to another machine) stay in
this process's memory and are never printed. Only the project's machines (192.168.56.0/24), loopback
and the namespace this script makes are addressed.

Disruptive drill: `Vault sealed` seals Vault and always unseals it again (finally), with the unseal keys
under .histo/vagrant, as the vault role does. Usage: cluster_drills.py [--list] [--only NAME]... [--json F]
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from attack.outcome import Outcome, run_drills, summary  # noqa: E402

STATE = ROOT / ".histo" / "vagrant"
CLUSTER_NET = ipaddress.ip_network("192.168.56.0/24")
BRIDGE = "histo-br0"
NETNS, VETH = "histo-drill", "histo-drl0"
# The flood comes from addresses that are no cluster machine's (.99 is the segmentation test's outsider), fresh
# on every run: a throttled address stays blocked for auth_block_seconds (60 s).
FLOOD_RANGE = range(200, 250)
MACHINE_PYTHON = "/opt/histo/bin/python"  # roles/histo_app: histo_app_venv
TOKEN_TTL = 1800

DRILLS = ("eavesdrop", "stolen certificate", "compromised worker", "forged / replayed result", "used secret_id",
          "copied secret_id", "expired certificate", "revoked token", "flood", "Vault sealed")


# -- the deployed cluster, as the controller sees it -----------------------------------------------
@dataclass(frozen=True)
class Machine:
    name: str
    group: str
    address: str
    container: str


def _read_env() -> dict[str, str]:
    path = STATE / "env"
    if not path.exists():
        return {}
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def _inventory(profile: str) -> dict:
    """The inventory as JSON (PyYAML lives in .venv-deploy, the deployment's virtualenv)."""
    out = subprocess.run([str(ROOT / ".venv-deploy" / "bin" / "python"), "-c",
                          "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
                          str(ROOT / "inventory" / profile / "hosts.yml")],
                         capture_output=True, text=True, timeout=30, check=True)
    return json.loads(out.stdout)


def _container(name: str) -> str | None:
    id_file = ROOT / ".vagrant" / "machines" / name / "lxc" / "id"
    if not id_file.exists():
        return None
    cid = id_file.read_text().strip()
    info = subprocess.run(["lxc-info", "-n", cid, "-s"], capture_output=True, text=True)
    return cid if "RUNNING" in info.stdout else None


def cluster_is_up() -> tuple[bool, str]:
    env = _read_env()
    if not env:
        return False, f"no {STATE / 'env'} (make up)"
    if os.geteuid() != 0 or shutil.which("lxc-attach") is None:
        return False, "not root on the controller, or no lxc-attach"
    try:
        inv = _inventory(env.get("HISTO_PROFILE", "default"))
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return False, f"inventory unreadable: {type(exc).__name__}"
    for body in inv["all"]["children"].values():
        for name in body["hosts"]:
            if _container(name) is None:
                return False, f"machine {name} is not running"
    return True, "up"


class Deployed:
    def __init__(self) -> None:
        import hvac

        from histo.edge.tokens import issue_token
        from tests.integration.cluster_fixture import Cluster
        env = _read_env()
        self.profile = env.get("HISTO_PROFILE", "default")
        inv = _inventory(self.profile)
        self.ports = inv["all"]["vars"]["histo_ports"]
        self.controller = inv["all"]["vars"]["histo_controller_address"]
        self.machines: dict[str, Machine] = {}
        for group, body in inv["all"]["children"].items():
            for name, hv in body["hosts"].items():
                address = hv["histo_address"]
                assert ipaddress.ip_address(address) in CLUSTER_NET, f"refusing a machine outside {CLUSTER_NET}"
                cid = _container(name)
                if cid is None:
                    raise RuntimeError(f"machine {name} is not running (make up)")
                self.machines[name] = Machine(name, group, address, cid)
        vault = self.group("vault")[0]
        self.vault_url = f"https://{vault.address}:{self.ports['vault']}"
        self.vault_ca = str(STATE / "vault-tls" / "ca.pem")
        issuer = hvac.Client(url=self.vault_url, verify=self.vault_ca,
                             token=(STATE / "issuer-token").read_text().strip())
        # The drills' own principals (not the operator's tokens: a drill must never throttle them).
        tokens = {f"HISTO_TOKEN_{role.upper()}": issue_token(issuer, role=role, subject=f"drill-{role}",
                                                               ttl_seconds=TOKEN_TTL)
                  for role in ("admin", "uploader", "viewer")}
        urls = [f"https://{m.address}" for m in self.group("masters")]
        self.api = Cluster(root=STATE, env={"HISTO_URL": env.get("HISTO_URL", urls[0]),
                                            "HISTO_URLS": ",".join(urls), "HISTO_CA": env["HISTO_CA"], **tokens})
        self._issuer = issuer
        self._issue_token = issue_token

    def group(self, name: str) -> list[Machine]:
        return [m for m in self.machines.values() if m.group == name]

    def token(self, role: str, subject: str, ttl: int = 600) -> str:
        return self._issue_token(self._issuer, role=role, subject=subject, ttl_seconds=ttl)

    def root_vault(self):
        import hvac
        return hvac.Client(url=self.vault_url, verify=self.vault_ca, token=(STATE / "root-token").read_text().strip())

    def leader(self) -> Machine:
        name = self.api.leader()
        if name not in self.machines:
            raise RuntimeError("no leader master known")
        return self.machines[name]

    def inside(self, name: str, script: str, payload: dict | None = None, timeout: float = 120) -> dict:
        """Runs `script` in machine `name` with its histo Python; `P` is the payload, `R` the answer."""
        boot = ("import sys, json; P = json.loads(sys.stdin.readline()); "
                "exec(compile(sys.stdin.read(), 'drill', 'exec'))")
        stdin = json.dumps(payload or {}) + "\n" + MACHINE_LIB + "\n" + script + "\nprint('@@R@@' + json.dumps(R))\n"
        proc = subprocess.run(["lxc-attach", "-n", self.machines[name].container, "--clear-env", "--",
                               MACHINE_PYTHON, "-c", boot], input=stdin, capture_output=True, text=True,
                              timeout=timeout)
        for line in reversed(proc.stdout.splitlines()):
            if line.startswith("@@R@@"):
                return json.loads(line[5:])
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"in {name}: exit {proc.returncode}: {last[:300]}")


# What every in-machine script starts with: the service's own configuration, files and clients.
MACHINE_LIB = r'''
import http.client, os, socket, ssl, tempfile, time
from pathlib import Path
os.umask(0o077)
CFG = json.loads(next(p for p in Path("/etc/histo").iterdir() if p.name in ("master.json", "worker.json")).read_text())
TLS = Path(CFG["state_dir"]) / "tls"
CREDS = Path(CFG["creds_dir"])
R = {}

def service_vault(creds=CREDS, host=None, role=None):
    from histo.vault.client import ServiceVault
    return ServiceVault(CFG["vault_url"], CFG["vault_ca"], host=host or CFG["name"], role=role or CFG["role"],
                        creds_dir=Path(creds), source_address=CFG["address"], trust_domain=CFG["trust_domain"])

def drop(v):
    try:
        v.client.auth.token.revoke_self()
    except Exception:
        pass

def private_dir():
    return Path(tempfile.mkdtemp(prefix="histo-drill-"))

def write_tls(d, cert, key, ca):
    for name, text in (("cert.pem", cert), ("key.pem", key), ("ca.pem", ca)):
        (Path(d) / name).write_text(text)

def https(addr, port, path, method="GET", body=b"", headers=None, tls=TLS, timeout=6):
    """(status, error code) of one HTTPS call with the client certificate in `tls`; or (None, why)."""
    ctx = ssl.create_default_context(cafile=str(Path(tls) / "ca.pem"))
    ctx.load_cert_chain(str(Path(tls) / "cert.pem"), str(Path(tls) / "key.pem"))
    conn = http.client.HTTPSConnection(addr, port, context=ctx, timeout=timeout)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        try:
            doc = json.loads(raw)
            why = (doc.get("error") or "") + (": " + doc["message"] if doc.get("message") else "")
        except ValueError:
            why = ""
        return resp.status, why[:160]
    except ssl.SSLError as exc:
        return None, "TLS refused: " + (exc.reason or type(exc).__name__)
    except (socket.timeout, TimeoutError):
        return None, "timeout (dropped)"
    except ConnectionRefusedError:
        return None, "connection refused"
    except OSError as exc:
        return None, "closed by peer: " + type(exc).__name__
    finally:
        conn.close()

def tcp(addr, port, timeout=2.0):
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect((addr, port))
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except (socket.timeout, TimeoutError):
        return "timeout"
    except OSError as exc:
        return "error:" + type(exc).__name__
    finally:
        s.close()

def zk_session(user, password, tls=TLS):
    from kazoo.client import KazooClient
    c = KazooClient(hosts=CFG["zk_hosts"], use_ssl=True, verify_certs=True, check_hostname=True,
                    ca=str(Path(tls) / "ca.pem"), certfile=str(Path(tls) / "cert.pem"),
                    keyfile=str(Path(tls) / "key.pem"), auth_data=[("digest", user + ":" + password)],
                    timeout=6, connection_retry={"max_tries": 3, "delay": 0.3})
    c.start(timeout=20)
    return c

RESULT_HEADERS = {"X-Histo-Job": "0" * 24, "X-Histo-Task": "0", "X-Histo-Attempt": "0" * 16,
                  "X-Histo-Phase": "hist", "X-Histo-Image-Mode": "L", "X-Histo-Width": "1", "X-Histo-Rows": "1",
                  "X-Histo-Reply-To": "https://127.0.0.1:1"}
'''


def _gray_noise(width: int = 160, height: int = 120) -> tuple[bytes, bytes]:
    """A PNG of random gray pixels (incompressible: its bytes cross the wire as they are) and the pixels."""
    import io

    from PIL import Image
    pixels = secrets.token_bytes(width * height)
    buf = io.BytesIO()
    Image.frombytes("L", (width, height), pixels).save(buf, "PNG")
    return buf.getvalue(), pixels


def _upload(d: Deployed, image: bytes, mode: str = "gray", token: str | None = None) -> dict:
    status, doc = d.api.upload(image, mode=mode, token=token, filename="drill.png", content_type="image/png")
    if status != 202:
        raise RuntimeError(f"upload answered {status}: {doc}")
    return d.api.wait_job(doc["id"], token=token, timeout=120, poll=0.3)


def _tcp(address: str, port: int, timeout: float = 2.0) -> str:
    assert ipaddress.ip_address(address) in CLUSTER_NET
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except (socket.timeout, TimeoutError):
        return "timeout"
    except OSError as exc:
        return f"error:{type(exc).__name__}"


def _summ(values: list) -> str:
    counts: dict = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return ", ".join(f"{n}x{v}" for v, n in counts.items()) or "nothing"


# -- 1. eavesdropping on the bridge ------------------------------------------------------------------
TLS_PORTS = ("443", "8443", "2281", "2888", "3888", "8200")


def _ensure_tshark() -> str:
    path = shutil.which("tshark")
    if path:
        return path
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-q", "tshark"], env=env, capture_output=True, timeout=900, check=True)
    return shutil.which("tshark") or "tshark"


def _tls_header(data: bytes, i: int) -> int:
    """The length of the TLS record whose header starts at `i`, or -1 when none does."""
    if i + 5 > len(data):
        return -1
    kind, major, length = data[i], data[i + 1], int.from_bytes(data[i + 3:i + 5], "big")
    return length if kind in (20, 21, 22, 23) and major == 3 and length <= 18432 + 256 else -1


def _tls_coverage(data: bytes) -> float:
    """The share of a one-way TCP byte stream made of TLS records (header + body). Where the capture lost
    a segment, or the connection began before the capture, the walk resyncs on the next position where
    two records follow each other. Plaintext (HTTP, ZooKeeper's jute) covers next to nothing."""
    def chained(i: int) -> bool:
        n = _tls_header(data, i)
        return n >= 0 and (i + 5 + n >= len(data) or _tls_header(data, i + 5 + n) >= 0)
    i, covered, synced = 0, 0, False
    while i < len(data):
        n = _tls_header(data, i)
        if n >= 0 and (synced or chained(i)):
            covered += min(5 + n, len(data) - i)
            i += 5 + n
            synced = True
        else:
            synced = False
            i += 1
    return covered / len(data) if data else 1.0


def _streams(tshark: str, pcap: Path) -> dict[tuple, bytearray]:
    fields = subprocess.run(
        [tshark, "-r", str(pcap), "-n", "-Y", "tcp.len > 0 && !tcp.analysis.retransmission", "-T", "fields",
         "-E", "separator=/t", "-e", "tcp.stream", "-e", "ip.src", "-e", "tcp.srcport", "-e", "ip.dst",
         "-e", "tcp.dstport", "-e", "tcp.payload"], capture_output=True, text=True, timeout=300, check=True)
    flows: dict[tuple, bytearray] = {}
    for line in fields.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) < 6 or not parts[5]:
            continue
        key = (parts[0], parts[1], parts[2], parts[3], parts[4])
        flows.setdefault(key, bytearray()).extend(bytes.fromhex(parts[5].replace(":", "")))
    return flows


EAVESDROP_WORKER = r'''
from kazoo.client import KazooClient
v = service_vault()
v.login()  # role_id + secret_id cross the wire (inside TLS, we hope)
user, password = v.zk_credentials()
zk = zk_session(user, password)  # a fresh ZooKeeper session: the digest credentials cross the wire
zk.get_children("/histo/jobs")
zk.stop(); zk.close()
R["needles"] = {"worker secret_id": (CREDS / "secret_id").read_text().strip(),
                "worker role_id": (CREDS / "role_id").read_text().strip(),
                "worker Vault token": v.client.token, "worker ZooKeeper password": password}
drop(v)
'''
EAVESDROP_MASTER = r'''
v = service_vault()
v.login()
R["needles"] = {"master ZooKeeper password": v.zk_credentials()[1], "master Vault token": v.client.token}
drop(v)
'''


def eavesdrop(d: Deployed) -> Outcome:
    tshark = _ensure_tshark()
    tmp = Path(tempfile.mkdtemp(prefix="histo-capture-"))
    pcap = tmp / "bridge.pcap"
    cap = subprocess.Popen([tshark, "-i", BRIDGE, "-n", "-q", "-f", f"net {CLUSTER_NET}", "-w", str(pcap)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 20
        while time.time() < deadline and not (pcap.exists() and pcap.stat().st_size > 0):
            if cap.poll() is not None:
                raise RuntimeError(f"tshark stopped: {cap.stderr.read()[-200:]}")
            time.sleep(0.2)
        time.sleep(1.0)
        image, pixels = _gray_noise()
        job = _upload(d, image, mode="gray")
        status, _h, result = d.api.request("GET", f"/api/v1/jobs/{job['id']}/result", token=d.api.token("uploader"))
        needles = {"uploader token": d.api.token("uploader").encode(), "Authorization header": b"Authorization: Bearer",
                   "Vault token header": b"X-Vault-Token", "HTTP request line": b"HTTP/1.1\r\n",
                   "ZooKeeper digest scheme": b"digest"}
        for k in (0, len(image) // 2, len(image) - 200):
            needles[f"uploaded PNG bytes @{k}"] = image[k:k + 48]
        width = 160
        for row in (5, 60, 110):
            needles[f"image pixels row {row}"] = pixels[row * width:row * width + 48]
        if status == 200:
            needles["result bytes"] = result[len(result) // 2:len(result) // 2 + 48]
        worker = d.group("workers")[0].name
        master = d.group("masters")[0].name
        for name, script in ((worker, EAVESDROP_WORKER), (master, EAVESDROP_MASTER)):
            for label, value in d.inside(name, script)["needles"].items():
                if value:
                    needles[label] = value.encode()
        time.sleep(6)  # the services' own Vault token checks (every 5 s) and ZooKeeper pings
    finally:
        cap.terminate()
        try:
            cap.wait(10)
        except subprocess.TimeoutExpired:
            cap.kill()
            cap.wait()
    try:
        flows = _streams(tshark, pcap)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the capture holds ciphertext only, but it goes at once
    leaks = sorted({label for label, n in needles.items() for data in flows.values() if n and n in data})
    ports_seen = sorted({k[4] for k in flows} & set(TLS_PORTS) | {k[2] for k in flows} & set(TLS_PORTS), key=int)
    not_tls = []
    for key, data in flows.items():
        if len(data) >= 64 and _tls_coverage(bytes(data)) < 0.9:
            not_tls.append(f"{key[1]}:{key[2]}->{key[3]}:{key[4]}")
    total = sum(len(v) for v in flows.values())
    expected = {"443", "8443", "2281", "8200"}
    held = not leaks and not not_tls and expected <= set(ports_seen) and status == 200
    return Outcome("eavesdrop", f"tshark on {BRIDGE} during an upload, a job, a Vault login and a ZooKeeper "
                   f"session: searched {len(flows)} directed TCP flows ({total} bytes) for {len(needles)} secrets "
                   "and plaintext markers (image bytes, tokens, secret_id, ZooKeeper passwords)",
                   f"ports seen {','.join(ports_seen)}; plaintext found: {', '.join(leaks) or 'none'}; "
                   f"flows not TLS: {', '.join(sorted(set(not_tls))[:6]) or 'none'}", held)


# -- 2. a worker's certificate and key used from another machine --------------------------------------
READ_TLS = r'''
R["tls"] = {n: (TLS / n).read_text() for n in ("cert.pem", "key.pem", "ca.pem")}
'''
USE_TLS = r'''
d = private_dir()
try:
    write_tls(d, P["tls"]["cert.pem"], P["tls"]["key.pem"], P["tls"]["ca.pem"])
    R["calls"] = [list(https(addr, port, path, "POST", b"[]", RESULT_HEADERS, tls=d))
                  for addr, port, path in P["targets"]]
finally:
    for f in d.iterdir():
        f.unlink()
    d.rmdir()
'''
OWN_TLS = r'''
R["calls"] = [list(https(addr, port, path, "POST", b"[]", RESULT_HEADERS)) for addr, port, path in P["targets"]]
'''


def stolen_certificate(d: Deployed) -> Outcome:
    w1, w2 = d.group("workers")[:2]
    masters = d.group("masters")
    port = d.ports["internal"]
    stolen = d.inside(w1.name, READ_TLS)["tls"]
    targets = [[m.address, port, "/internal/v1/results"] for m in masters]
    from_worker2 = d.inside(w2.name, USE_TLS, {"tls": stolen, "targets": targets})["calls"]
    peer = masters[-1]
    to_first = [[masters[0].address, port, "/internal/v1/results"]]
    from_master = d.inside(peer.name, USE_TLS, {"tls": stolen, "targets": to_first})["calls"]
    del stolen
    # From the controller (or any non-cluster host) the stolen pair never gets as far as a handshake.
    firewall = _tcp(masters[0].address, port)
    legit = d.inside(w1.name, OWN_TLS, {"targets": targets})["calls"]
    status, _h, raw = d.api.request("GET", "/api/v1/cluster", token=d.api.token("viewer"))
    listed = status == 200 and w1.name in [n["name"] for n in json.loads(raw)["workers"]]
    refused = all(s == 403 for s, _ in from_worker2 + from_master) and firewall == "timeout"
    legit_ok = all(s in (400, 409) for s, _ in legit)
    return Outcome("stolen certificate",
                   f"{w1.name}'s certificate and key, copied to {w2.name}, {peer.name} and the controller, "
                   f"presented to the masters' internal port {port} as a result report",
                   f"from {w2.name}: {_summ([str(s) for s, _ in from_worker2])}; from {peer.name}: "
                   f"{_summ([str(s) for s, _ in from_master])} ({from_master[0][1]}); from the controller: "
                   f"{masters[0].name}:{port} {firewall} (firewall); the real {w1.name}: "
                   f"{_summ([str(s) for s, _ in legit])} (identity accepted, bogus result refused); "
                   f"{w1.name} still in the cluster: {listed}", refused and legit_ok and listed)


# -- 3. a compromised worker ---------------------------------------------------------------------------
COMPROMISED = r'''
import hvac
from kazoo.exceptions import NoAuthError
v = service_vault()
v.login()
vault_refused, vault_allowed = [], []
def attempt(what, fn, bucket_ok, bucket_no):
    try:
        fn()
        bucket_ok.append(what)
    except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest, hvac.exceptions.Unauthorized):
        bucket_no.append(what)
kv = lambda p: v.client.secrets.kv.v2.read_secret_version(p, mount_point="secret", raise_on_deleted_version=True)
for what, fn in (("read the masters' ZooKeeper credentials", lambda: kv("histo/zk/master")),
                 ("read the ZooKeeper super digest", lambda: kv("histo/zk/super")),
                 ("issue a master certificate", lambda: v.client.write_data(
                     "pki_int/issue/host-" + P["master"], data={"common_name": P["master"] + ".histo.internal",
                                                                "ttl": "60s"})),
                 ("issue another worker's certificate", lambda: v.client.write_data(
                     "pki_int/issue/host-" + P["other_worker"],
                     data={"common_name": P["other_worker"] + ".histo.internal", "ttl": "60s"})),
                 ("sign an API token", lambda: v.client.secrets.transit.sign_data(
                     "histo-tokens", "aGk=", mount_point="transit")),
                 ("read Vault's policies", lambda: v.client.sys.read_policy("histo-" + P["master"]))):
    attempt(what, fn, vault_allowed, vault_refused)
legit = []
try:
    v.issue_cert("60s"); legit.append("issue its own certificate")
except Exception as exc:
    pass
user, password = v.zk_credentials(); legit.append("read its own ZooKeeper credentials")
zk = zk_session(user, password)
zk_refused, zk_allowed = [], []
try:
    jobs = zk.get_children("/histo/jobs"); legit.append("list jobs in ZooKeeper")
    target = P["job"] if P["job"] in jobs else None
    w2, _ = zk.get("/histo/workers/" + P["other_worker"])
    def try_zk(what, fn, undo=None):
        try:
            fn()
            zk_allowed.append(what)
            if undo:
                undo()
        except NoAuthError:
            zk_refused.append(what)
    try_zk("delete a job", lambda: zk.delete("/histo/jobs/" + target, recursive=True) if target
           else zk.delete("/histo/jobs"))
    try_zk("join the leader election",
           lambda: R.__setitem__("created", zk.create("/histo/election/x-", b"w", ephemeral=True, sequence=True)),
           lambda: zk.delete(R.pop("created")))
    try_zk("rewrite another worker's membership", lambda: zk.set("/histo/workers/" + P["other_worker"], w2))
    try_zk("add to the token revocation list", lambda: zk.create("/histo/revoked/drill-" + os.urandom(4).hex(), b""))
finally:
    zk.stop(); zk.close()
drop(v)
R.update(vault_refused=vault_refused, vault_allowed=vault_allowed, zk_refused=zk_refused, zk_allowed=zk_allowed,
         legit=legit, reach={f"{a}:{p}": tcp(a, p) for a, p in P["reach"]})
'''


def compromised_worker(d: Deployed) -> Outcome:
    w1, w2 = d.group("workers")[:2]
    masters = d.group("masters")
    job = _upload(d, _gray_noise(48, 32)[0])
    reach = ([[w2.address, d.ports["internal"]]] + [[m.address, d.ports["public"]] for m in masters]
             + [[m.address, d.ports["internal"]] for m in masters])
    r = d.inside(w1.name, COMPROMISED, {"master": masters[0].name, "other_worker": w2.name, "job": job["id"],
                                        "reach": reach})
    forbidden_reach = {f"{a}:{p}" for a, p in reach[:1 + len(masters)]}
    dropped = [k for k in forbidden_reach if r["reach"][k] == "timeout"]
    internal_ok = all(r["reach"][f"{m.address}:{d.ports['internal']}"] == "open" for m in masters)
    held = (not r["vault_allowed"] and not r["zk_allowed"] and len(dropped) == len(forbidden_reach)
            and len(r["legit"]) == 3 and internal_ok)
    return Outcome("compromised worker",
                   f"as root in {w1.name} with its own files and Vault login: "
                   f"{len(r['vault_refused']) + len(r['vault_allowed'])} privileged Vault calls, "
                   f"{len(r['zk_refused']) + len(r['zk_allowed'])} ZooKeeper writes, "
                   f"connections to {w2.name}:{d.ports['internal']} and the masters' port {d.ports['public']}",
                   f"Vault refused {len(r['vault_refused'])} ({'; '.join(r['vault_refused'])}), allowed "
                   f"{r['vault_allowed'] or 'none'}; ZooKeeper refused {len(r['zk_refused'])} "
                   f"({'; '.join(r['zk_refused'])}), allowed {r['zk_allowed'] or 'none'}; dropped by the firewall: "
                   f"{len(dropped)}/{len(forbidden_reach)}; still allowed: {'; '.join(r['legit'])}; masters' "
                   f"internal port open: {internal_ok}", held)


# -- 4. forged and replayed task results -----------------------------------------------------------------
REPLAY = r'''
v = service_vault()
v.login()
user, password = v.zk_credentials()
drop(v)
zk = zk_session(user, password)
try:
    base = "/histo/jobs/" + P["job"] + "/tasks"
    tasks = {n: json.loads(zk.get(base + "/" + n)[0]) for n in zk.get_children(base)}
finally:
    zk.stop(); zk.close()
calls = []
for n, t in sorted(tasks.items()):
    hdr = dict(RESULT_HEADERS, **{"X-Histo-Job": P["job"], "X-Histo-Task": str(n), "X-Histo-Attempt": t["attempt"],
                                  "X-Histo-Phase": t["phase"], "X-Histo-Width": str(P["width"])})
    whose = "own" if t.get("worker") == CFG["name"] else "other's"
    calls.append(["replay " + whose, *https(P["leader"], P["port"], "/internal/v1/results", "POST", b"[]", hdr)])
forged = dict(RESULT_HEADERS, **{"X-Histo-Job": P["job"], "X-Histo-Attempt": os.urandom(8).hex()})
calls.append(["forged attempt", *https(P["leader"], P["port"], "/internal/v1/results", "POST", b"[]", forged)])
R["calls"] = calls
'''


def forged_result(d: Deployed) -> Outcome:
    job = _upload(d, _gray_noise(64, 48)[0])
    leader = d.leader()
    calls = []
    for w in d.group("workers"):
        calls += d.inside(w.name, REPLAY, {"job": job["id"], "leader": leader.address, "port": d.ports["internal"],
                                           "width": 64})["calls"]
    statuses = [c[1] for c in calls]
    reasons = sorted({c[2].split(":", 1)[-1].strip()[:60] for c in calls})
    held = bool(calls) and set(statuses) == {409} and any(c[0] == "forged attempt" for c in calls)
    return Outcome("forged / replayed result",
                   f"each worker re-reports every finished task attempt of job {job['id'][:8]}… (read from "
                   f"ZooKeeper) and one forged attempt to the leader {leader.name}",
                   f"{_summ([str(s) for s in statuses])} ({'; '.join(reasons)})", held)


# -- 5. credentials: used and copied secret_id, expired certificate, revoked token ----------------------
UNWRAP_TWICE = r'''
from histo.vault.client import VaultAuthError
d = private_dir()
try:
    (d / "role_id").write_text(P["role_id"] + "\n")
    (d / "secret_id.wrap").write_text(P["wrap"] + "\n")
    first = service_vault(creds=d)
    first.login()
    R["first"] = "logged in"
    R["secret_id"] = (d / "secret_id").read_text().strip()
    drop(first)
    (d / "secret_id").unlink()
    (d / "secret_id.wrap").write_text(P["wrap"] + "\n")
    try:
        service_vault(creds=d).login()
        R["second"] = "logged in"
    except VaultAuthError as exc:
        R["second"] = str(exc)[:160]
finally:
    for f in d.iterdir():
        f.unlink()
    d.rmdir()
'''


def used_secret_id(d: Deployed) -> Outcome:
    from histo.vault.provision import wrapped_secret_id
    w2 = d.group("workers")[-1]
    root = d.root_vault()  # what the provisioner holds (histo provision, roles/histo_app)
    role_id = root.auth.approle.read_role_id(f"histo-{w2.name}")["data"]["role_id"]
    wrap = wrapped_secret_id(root, w2.name, w2.address, wrap_ttl="60s")
    try:
        r = d.inside(w2.name, UNWRAP_TWICE, {"role_id": role_id, "wrap": wrap})
    finally:
        del wrap
    if r.get("secret_id"):  # the drill's extra secret_id must not outlive it
        root.write_data(f"auth/approle/role/histo-{w2.name}/secret-id/destroy", data={"secret_id": r["secret_id"]})
    held = r.get("first") == "logged in" and r.get("second", "logged in") != "logged in"
    return Outcome("used secret_id", f"a wrapped secret_id delivered to {w2.name}, unwrapped there, then unwrapped "
                   "a second time (as an interceptor would)",
                   f"first: {r.get('first')}; second: {r.get('second')}", held)


READ_CREDS = r'''
R["role_id"] = (CREDS / "role_id").read_text().strip()
R["secret_id"] = (CREDS / "secret_id").read_text().strip()
v = service_vault()
v.login()
R["own"] = "logged in"
drop(v)
'''
LOGIN_WITH = r'''
from histo.vault.client import VaultAuthError
d = private_dir()
try:
    (d / "role_id").write_text(P["role_id"] + "\n")
    (d / "secret_id").write_text(P["secret_id"] + "\n")
    try:
        v = service_vault(creds=d, host=P["host"], role="worker")
        v.login()
        R["login"] = "logged in"
        drop(v)
    except VaultAuthError as exc:
        R["login"] = str(exc)[:160]
finally:
    for f in d.iterdir():
        f.unlink()
    d.rmdir()
'''


def copied_secret_id(d: Deployed) -> Outcome:
    from histo.vault.client import ServiceVault, VaultAuthError
    w1, w2 = d.group("workers")[:2]
    creds = d.inside(w1.name, READ_CREDS)
    there = d.inside(w2.name, LOGIN_WITH, {"host": w1.name, **{k: creds[k] for k in ("role_id", "secret_id")}})["login"]
    tmp = Path(tempfile.mkdtemp(prefix="histo-drill-"))
    try:
        (tmp / "role_id").write_text(creds["role_id"] + "\n")
        (tmp / "secret_id").write_text(creds["secret_id"] + "\n")
        try:
            v = ServiceVault(d.vault_url, d.vault_ca, host=w1.name, role="worker", creds_dir=tmp,
                             source_address=d.controller)
            v.login()
            here = "logged in"
            v.client.auth.token.revoke_self()
        except VaultAuthError as exc:
            here = str(exc)[:160]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        own = creds.get("own", "failed")
        creds.clear()
    held = there != "logged in" and here != "logged in" and own == "logged in"
    return Outcome("copied secret_id", f"{w1.name}'s role_id and secret_id copied to {w2.name} and to the controller, "
                   "used there to log in to Vault",
                   f"on {w2.name}: {there}; on the controller: {here}; on {w1.name} itself: {own}", held)


EXPIRED = r'''
v = service_vault()
v.login()
b = v.issue_cert(P["ttl"])
ca = v.ca_chain_pem()
fresh = v.issue_cert("60s")
drop(v)
d, f = private_dir(), private_dir()
try:
    write_tls(d, b.cert_pem + b.chain_pem, b.key_pem, ca)
    write_tls(f, fresh.cert_pem + fresh.chain_pem, fresh.key_pem, ca)
    time.sleep(max(0.0, b.not_after.timestamp() - time.time()) + 1.5)
    R["expired"] = list(https(P["master"], P["port"], "/internal/v1/results", "POST", b"[]", RESULT_HEADERS, tls=d))
    R["fresh"] = list(https(P["master"], P["port"], "/internal/v1/results", "POST", b"[]", RESULT_HEADERS, tls=f))
    R["lived"] = round(b.not_after.timestamp() - b.not_before.timestamp())
finally:
    for x in (d, f):
        for p in x.iterdir():
            p.unlink()
        x.rmdir()
'''


def expired_certificate(d: Deployed) -> Outcome:
    w1 = d.group("workers")[0]
    m = d.group("masters")[0]
    r = d.inside(w1.name, EXPIRED, {"ttl": "3s", "master": m.address, "port": d.ports["internal"]})
    held = r["expired"][0] is None and r["fresh"][0] in (400, 409)
    return Outcome("expired certificate", f"{w1.name} presents its own certificate to {m.name}:{d.ports['internal']} "
                   "once it has expired (issued with a 3 s TTL), then a fresh one",
                   f"expired: {r['expired'][1] or r['expired'][0]}; fresh: {r['fresh'][0]} (identity accepted)", held)


def revoked_token(d: Deployed) -> Outcome:
    tok = d.token("uploader", "drill-stolen", ttl=600)
    claims = json.loads(base64.urlsafe_b64decode(tok.split(".")[1] + "==="))
    before = [d.api.request("GET", "/api/v1/jobs", token=tok, url=u)[0] for u in d.api.urls]
    status, _h, _b = d.api.request("POST", "/api/v1/tokens/revoke", token=d.api.token("admin"),
                                   body=json.dumps({"jti": claims["jti"], "exp": claims["exp"]}).encode(),
                                   headers={"Content-Type": "application/json"})
    t0 = time.time()
    pending, seen = set(d.api.urls), {}
    while pending and time.time() - t0 < 5:  # one 401 per master at most: never throttles the controller
        for u in list(pending):
            if d.api.request("GET", "/api/v1/jobs", token=tok, url=u)[0] == 401:
                seen[u] = round(time.time() - t0, 2)
                pending.discard(u)
        time.sleep(0.2)
    held = before == [200] * len(before) and status == 200 and not pending
    return Outcome("revoked token", f"an uploader token accepted by every master ({before}), then revoked by an "
                   f"admin (answered {status}) and used again",
                   f"401 on {', '.join(f'{u} after {s}s' for u, s in seen.items()) or 'no master'}"
                   f"{f'; still accepted after 5 s by {sorted(pending)}' if pending else ''}", held)


# -- 6. a flood on the upload endpoint ------------------------------------------------------------------
FLOOD = r'''
import json, socket, ssl, sys, http.client
P = json.loads(sys.stdin.readline())
ctx = ssl.create_default_context(cafile=P["ca"])
host = P["url"].split("//")[1]
def post(src, token, body, ctype):
    c = http.client.HTTPSConnection(host, 443, context=ctx, source_address=(src, 0), timeout=15)
    try:
        c.request("POST", "/api/v1/jobs", body=body,
                  headers={"Authorization": "Bearer " + token, "Content-Type": ctype})
        r = c.getresponse(); r.read(); return r.status
    except OSError as e:
        return type(e).__name__
    finally:
        c.close()
b = "drillflood"
body = ("--%s\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\nContent-Type: image/png\r\n\r\n"
        "not an image\r\n--%s--\r\n" % (b, b)).encode()
ctype = "multipart/form-data; boundary=" + b
out = {"forged": [post(P["a"], "flood.of.garbage", body, ctype) for _ in range(P["n"])],
       "principal": [post(P["b"], P["token"], body, ctype) for _ in range(P["m"])]}
print(json.dumps(out))
'''


@contextlib.contextmanager
def _outsider(addresses: tuple[str, ...]):
    """A client on histo-br0 that is not a cluster machine: a network namespace of our own."""
    def sh(*a: str) -> None:
        subprocess.run(a, check=True, capture_output=True)
    subprocess.run(["ip", "link", "del", VETH], capture_output=True)
    subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)
    sh("ip", "netns", "add", NETNS)
    try:
        sh("ip", "link", "add", VETH, "type", "veth", "peer", "name", "eth0", "netns", NETNS)
        sh("ip", "link", "set", VETH, "master", BRIDGE, "up")
        for a in addresses:
            sh("ip", "-n", NETNS, "addr", "add", f"{a}/24", "dev", "eth0")
        sh("ip", "-n", NETNS, "link", "set", "eth0", "up")
        sh("ip", "-n", NETNS, "link", "set", "lo", "up")
        yield NETNS
    finally:
        subprocess.run(["ip", "link", "del", VETH], capture_output=True)
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)


def flood(d: Deployed) -> Outcome:
    a, b = (f"192.168.56.{n}" for n in secrets.SystemRandom().sample(FLOOD_RANGE, 2))
    flooder = d.token("uploader", f"drill-flooder-{uuid.uuid4().hex[:6]}", ttl=300)
    url = d.api.url
    with _outsider((a, b)) as ns:
        errors = tempfile.TemporaryFile(mode="w+")
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", FLOOD], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=errors, text=True)
        proc.stdin.write(json.dumps({"url": url, "ca": d.api.ca, "a": a, "b": b,
                                     "token": flooder, "n": 40, "m": 60}) + "\n")
        proc.stdin.close()
        time.sleep(0.5)
        legit_list = d.api.request("GET", "/api/v1/jobs", token=d.api.token("uploader"))[0]
        legit_job = _upload(d, _gray_noise(40, 30)[0])["state"]
        out = proc.stdout.read()
        proc.wait(timeout=180)
    if proc.returncode != 0:
        errors.seek(0)
        raise RuntimeError(f"flood client failed: {errors.read().strip()[-200:]}")
    errors.close()
    r = json.loads(out)
    forged, principal = r["forged"], r["principal"]
    first_429 = principal.index(429) if 429 in principal else len(principal)
    content_refused = [x for x in principal[:first_429] if isinstance(x, int)]
    held = (401 in forged and 429 in forged and set(forged) <= {401, 429} and 429 in principal
            and len(content_refused) >= 10 and all(400 <= x < 500 and x != 429 for x in content_refused)
            and legit_list == 200 and legit_job == "done")
    return Outcome("flood", f"from {a} (not a cluster machine): {len(forged)} uploads with forged tokens; from {b}: "
                   f"{len(principal)} uploads of garbage with one valid uploader token; meanwhile a legitimate user "
                   "lists and uploads from the controller",
                   f"forged: {_summ(forged)}; valid token: {_summ(principal)} (throttled from request "
                   f"{first_429 + 1}); the legitimate user: list {legit_list}, job {legit_job}", held)


# -- 7. Vault sealed ---------------------------------------------------------------------------------------
def _readyz(d: Deployed) -> dict[str, dict]:
    out = {}
    for u in d.api.urls:
        try:
            _s, _h, raw = d.api.request("GET", "/readyz", url=u, timeout=5)
            out[u] = json.loads(raw)
        except (OSError, ValueError):
            out[u] = {"status": "unreachable", "checks": {}}
    return out


def _unseal(root) -> bool:
    init = json.loads((STATE / "vault-init.json").read_text())
    for key in init["keys"]:
        if not root.sys.read_seal_status()["sealed"]:
            break
        root.sys.submit_unseal_key(key)
    return not root.sys.read_seal_status()["sealed"]


SEALED_AT_LEAST = 7.0


def vault_sealed(d: Deployed) -> Outcome:
    root = d.root_vault()
    if root.sys.read_seal_status()["sealed"]:
        raise RuntimeError("Vault is already sealed: not touching it")
    degraded, served, unsealed = False, "not tried", False
    root.sys.seal()
    sealed_at = time.time()
    try:
        deadline = time.time() + 30
        while time.time() < deadline and not degraded:
            ready = _readyz(d)
            degraded = all(r.get("status") == "degraded" and not r["checks"].get("vault", {}).get("ok", True)
                           for r in ready.values())
            if not degraded:
                time.sleep(0.5)
        # Long enough for every service's token check (every 5 s) to have met the sealed Vault.
        time.sleep(max(0.0, sealed_at + SEALED_AT_LEAST - time.time()))
        served = _upload(d, _gray_noise(64, 48)[0])["state"]
    finally:
        unsealed = _unseal(root)
    sealed_for = time.time() - sealed_at
    t0 = time.time()
    recovered = False
    while unsealed and time.time() - t0 < 60 and not recovered:
        ready = _readyz(d)
        recovered = all(r.get("status") == "ok" for r in ready.values())
        if not recovered:
            time.sleep(0.5)
    held = degraded and served == "done" and unsealed and recovered
    return Outcome("Vault sealed", f"sealing Vault for {sealed_for:.1f}s while the cluster serves",
                   f"every master's /readyz degraded (vault): {degraded}; a job meanwhile: {served}; unsealed again: "
                   f"{unsealed}; every master ready again: {recovered} after {time.time() - t0:.0f}s", held)


# -- running them --------------------------------------------------------------------------------------------
FUNCTIONS = {"eavesdrop": eavesdrop, "stolen certificate": stolen_certificate, "compromised worker": compromised_worker,
             "forged / replayed result": forged_result, "used secret_id": used_secret_id,
             "copied secret_id": copied_secret_id, "expired certificate": expired_certificate,
             "revoked token": revoked_token, "flood": flood, "Vault sealed": vault_sealed}
assert tuple(FUNCTIONS) == DRILLS


def post_event(d: Deployed, result: Outcome) -> str:
    """One `drill` SecOps event per drill, on every master (each serves its own dashboard)."""
    answers = {}
    for u in d.api.urls:
        try:
            answers[u] = d.api.request("POST", "/api/v1/events", token=d.api.token("admin"), body=result.event_body(),
                                       headers={"Content-Type": "application/json"}, url=u, timeout=10)[0]
        except OSError as exc:
            answers[u] = type(exc).__name__
    ok = [u for u, s in answers.items() if s == 201]
    if len(ok) == len(answers):
        return "drill event recorded on " + ", ".join(ok)
    hint = " (this master's histo predates POST /api/v1/events: redeploy)" if 405 in answers.values() else ""
    return f"drill event: {answers}{hint}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--list", action="store_true", help="print the drills' names")
    ap.add_argument("--check-up", action="store_true", help="exit 0 when the deployed cluster is up")
    ap.add_argument("--only", action="append", choices=DRILLS, help="run only this drill (repeatable)")
    ap.add_argument("--json", help="also write the outcomes to this file")
    a = ap.parse_args()
    if a.list:
        print("\n".join(DRILLS))
        return
    up, why = cluster_is_up()
    if a.check_up:
        sys.exit(0 if up else 1)
    if not up:
        print(f"attack: the deployed cluster is not up: {why}", file=sys.stderr)
        sys.exit(2)
    d = Deployed()
    names = a.only or list(DRILLS)
    print(f"attack: {len(names)} drill(s) against the deployed cluster ({d.profile} profile, {len(d.machines)} "
          f"machines); answers via {d.api.url}", flush=True)
    t0 = time.monotonic()
    results = run_drills([(n, lambda n=n: FUNCTIONS[n](d)) for n in names], post=lambda r: post_event(d, r),
                         out=lambda line: print(line, flush=True))
    print(f"{summary(results)} (wall clock {time.monotonic() - t0:.0f}s)")
    if a.json:
        Path(a.json).write_text(json.dumps([r.as_dict() for r in results], indent=1))
    sys.exit(0 if all(r.held for r in results) else 1)


if __name__ == "__main__":
    main()
