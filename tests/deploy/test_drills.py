"""The attack drills against the deployed cluster, one test per drill: a control that stops holding
fails `make deploy-test` (and the cluster stage of `make test`). Each drill is also *detected*: the
refusals it provokes must reach the SecOps dashboard's API (GET /api/v1/secops/events, one master's),
from the right layer and attributed to the right identity, within WAIT seconds; the seconds each took
are printed and kept in test-artifacts/detection.json (bench/detection.py: p50/p99 per layer). The
`drill` event a drill posts about itself is only a label of what was attempted: nothing here relies on it.

Why a subprocess: this suite runs under .venv-deploy (Ansible, PyYAML, pytest), which has none of the
app's packages; the drills need hvac, kazoo, Pillow and histo on the controller, so each one runs as
`.venv/bin/python -m attack --only NAME --json FILE` from the repository root, and the code that plays
the compromised machines runs inside them with their own /opt/histo/bin/python (through lxc-attach).
The drills print no secret, so their output is safe in a failure report."""
from __future__ import annotations

import json
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

import pytest

from attack.availability import FLOOD_RANGE
from attack.deployed import CLUSTER_NET, DeployedCluster, Machine

from .api import png, request, secops_head, secops_since, wait_ready
from .detection import Arrivals, Refusal, append_rows, names_from_inventory

# The drills, in the order `make attack` runs them (the disruptive one last); checked against --list.
DRILLS = ["eavesdrop", "stolen certificate", "compromised worker", "forged / replayed result", "ssh lateral",
          "used secret_id", "copied secret_id", "expired certificate", "revoked token",
          "certificate without its address", "revoked certificate", "provisioner token", "flood", "connection flood",
          "Vault sealed"]

# What each drill must leave on the SecOps API: the layer that records the refusal, the identity it is
# attributed to ({workers[0]} is the inventory's first worker, worker1; `outside` an address the inventory
# does not know), its kind, and a piece of `what` / the machine that refused / the address it came from
# where that tells it apart. Where a drill makes a layer refuse many things, the entry is the one that
# layer surely records. A drill that leaves no refusal any layer records has a string instead: why.
DETECTED: dict[str, tuple[Refusal, ...] | str] = {
    "eavesdrop": "a passive capture on the bridge: nothing is refused, so no layer records anything",
    "stolen certificate": (
        Refusal("service", "{workers[1]}", "mtls_rejected",
                "worker1's certificate presented from worker2: the masters' peer check refuses it (its IP SAN)"),
        Refusal("service", "{masters[-1]}", "mtls_rejected",
                "the same from the last master's address, to the first master's internal port"),
        Refusal("firewall", "outside", "firewall_drop",
                "the same from the controller: the first master's internal port drops it before any handshake",
                what="port {ports[internal]}/TCP", where="{masters[0]}", address="controller")),
    "compromised worker": (
        Refusal("vault", "{workers[0]}", "vault_denied",
                "worker1's own AppRole token reads the masters' ZooKeeper credentials: outside its policy",
                what="secret/data/histo/zk/master"),
        Refusal("zookeeper", "{workers[0]}", "zk_acl_denied",
                "writes outside its ACL (a job, the election, another's slot) in a session its certificate names"),
        Refusal("firewall", "{workers[0]}", "firewall_drop",
                "worker1 -> worker2's internal port: only masters may, worker2 drops and logs it",
                what="port {ports[internal]}/TCP", where="{workers[1]}")),
    "forged / replayed result": (
        Refusal("service", "{workers[0]}", "result_refused",
                "worker1 re-reports finished attempts and a forged one: the leader refuses them (409), naming it"),
        Refusal("service", "{workers[1]}", "result_refused", "the same from worker2")),
    "ssh lateral": (
        Refusal("firewall", "{workers[0]}", "firewall_drop",
                "root in worker1 connects to SSH on the other machines' cluster addresses: each drops and logs it "
                "(its probes of their management addresses come from an address the inventory does not know)",
                what="port 22/TCP"),),
    "used secret_id": (
        Refusal("vault", "{workers[-1]}", "vault_wrapping_refused",
                "the last worker presents its delivery again after unwrapping it: the service's lookup before the "
                "unwrap is refused, and OpenBao audits only that request, with the error and the worker's address",
                what="sys/wrapping/lookup"),),
    "copied secret_id": (
        Refusal("vault", "{workers[1]}", "vault_denied",
                "worker1's role_id and secret_id used on worker2: the secret_id's CIDR binding refuses the login, "
                "whose reason (response.data.error, in clear since vault-setup tunes the approle mount) names "
                "worker2's address", what="auth/approle/login"),
        Refusal("vault", "outside", "vault_denied", "the same from the controller",
                what="auth/approle/login", address="controller")),
    "expired certificate": (
        Refusal("service", "{workers[0]}", "tls_handshake_refused",
                "worker1's own certificate, expired, presented from worker1 to the first master's internal port: "
                "the handshake is refused and that master reports it (edge/conncap.py)", where="{masters[0]}"),),
    "revoked token": (
        Refusal("service", "outside", "auth_failure",
                "the revoked token used again from the controller: every master answers 401", address="controller"),),
    "certificate without its address": (
        Refusal("vault", "{workers[0]}", "vault_denied",
                "worker1's token asks for its certificate without its address: its policy requires ip_sans",
                what="issue/host-{workers[0]}"),),
    "revoked certificate": (
        Refusal("service", "{workers[0]}", "mtls_rejected",
                "the revoked serial presented again from worker1: every master's peer check refuses it"),),
    "provisioner token": (
        Refusal("vault", "outside", "vault_denied",
                "the provisioner token (no AppRole: known by the controller's address) reads the ZooKeeper super "
                "digest", what="secret/data/histo/zk/super", address="controller"),),
    "flood": (
        Refusal("service", "outside", "auth_failure",
                "uploads with forged tokens from an outsider address: 401 from the master at HISTO_URL",
                address="flood"),),
    "connection flood": (
        Refusal("service", "outside", "connection_refused",
                "twice the per-address cap of plain sockets: the leader closes the excess and reports the address",
                address="flood"),),
    "Vault sealed": "availability: Vault stopped and started, nothing is refused (the services' vault_unavailable "
                    "warnings refuse no one)",
}
# attack/availability.py's outsiders: the addresses the flood and the connection flood come from
FLOOD_ADDRESSES = [str(CLUSTER_NET.network_address + n) for n in FLOOD_RANGE]
WAIT = 90.0  # seconds after the drill ends: shippers, collector, relay and master, end to end
POLL = 0.5
ARTIFACT = Path(__file__).resolve().parents[2] / "test-artifacts" / "detection.json"


@pytest.fixture(scope="module")
def attack(cluster: DeployedCluster):
    """The command line of `python -m attack` with the app's virtualenv, and where to run it."""
    app_python = cluster.root / ".venv" / "bin" / "python"
    if not app_python.exists():
        pytest.skip("no .venv (make bootstrap): the drills need the app's packages on the controller")
    return [str(app_python), "-m", "attack"], cluster.root


def test_the_list_of_drills_is_complete(attack):
    argv, cwd = attack
    out = subprocess.run([*argv, "--list"], capture_output=True, text=True, timeout=60, check=True, cwd=cwd)
    assert out.stdout.split("\n")[:-1] == DRILLS
    assert list(DETECTED) == DRILLS


@pytest.mark.parametrize("drill", DRILLS)
@pytest.mark.drill
def test_drill_holds(attack, cluster: DeployedCluster, drill: str, tmp_path):
    """The drill holds, and every refusal DETECTED names reaches the first master's SecOps API. The API
    is read while the drill runs, so the seconds are from the drill's start to the poll that first saw
    the event (to 0.5 s): an upper bound of detection, the drill's own steps before that refusal included."""
    argv, cwd = attack
    expected = DETECTED[drill]
    url = cluster.env["HISTO_URLS"].split(",")[0]
    names = names_from_inventory(cluster.inventory, FLOOD_ADDRESSES)
    wanted = [r.at(names) for r in expected] if not isinstance(expected, str) else []
    cursor = secops_head(cluster, url) if wanted else 0
    report = tmp_path / "outcome.json"
    started_at, started = time.time(), time.monotonic()
    arrivals = Arrivals(wanted, started)
    last_error = ""

    def look() -> None:
        nonlocal cursor, last_error
        try:
            events, cursor = secops_since(cluster, url, cursor)
        except (OSError, ValueError, AssertionError) as exc:  # a master that did not answer: asked again
            last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
            return
        arrivals.feed(events, time.monotonic())

    with open(tmp_path / "stdout", "w") as out, open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen([*argv, "--only", drill, "--json", str(report)], stdout=out, stderr=err, cwd=cwd)
    try:
        while proc.poll() is None:
            if time.monotonic() - started > 600:
                pytest.fail(f"the drill {drill!r} ran for more than 600 s")
            if wanted and not arrivals.done():
                look()
            time.sleep(POLL)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    ran = time.monotonic() - started
    stdout, stderr = (tmp_path / "stdout").read_text(), (tmp_path / "stderr").read_text()
    printed = stdout.strip() + ("\n" + stderr.strip()[-1500:] if proc.returncode else "")
    assert report.exists(), printed
    (outcome,) = json.loads(report.read_text())
    assert outcome["drill"] == drill, printed
    assert outcome["held"], printed

    if isinstance(expected, str):
        print(f"{drill}: no refusal to detect: {expected}")
        return
    deadline = time.monotonic() + WAIT
    while not arrivals.done() and time.monotonic() < deadline:
        look()
        if not arrivals.done():
            time.sleep(POLL)
    rows = []
    for w, ev, seconds in arrivals.arrived():
        print(f"{drill}: the {w.layer} refusal of {w.host} ({ev['kind']}, what {ev.get('what')!r}, where "
              f"{ev.get('where')}, record entry {ev['record_seq']}) reached {url}'s SecOps API {seconds:.1f} s "
              f"after the drill started (the drill ran {ran:.1f} s)")
        rows.append({"drill": drill, "layer": w.layer, "host": w.host, "seconds": seconds,
                     "drill_seconds": round(ran, 1), "at": round(started_at, 1)})
    append_rows(ARTIFACT, rows)
    missing = "\n".join(f"  {w.describe()}" for w in arrivals.missing)
    assert not missing, (f"{drill}: not on {url}'s SecOps API {WAIT:.0f} s after the drill ended "
                         f"({arrivals.seen} events looked at{'; last error ' + last_error if last_error else ''}):\n"
                         f"{missing}\n{printed}")


# -- OpenBao raft: the active node killed during uploads (issue 16 item 6) ----------------------------

def _vault_health(cluster: DeployedCluster, node: Machine, standbyok: bool = False) -> int | None:
    """sys/health's status code from the controller: 200 active, 429 standby, 503 sealed; None: no answer.
    With `standbyok`, an unsealed standby answers 200 too (perfstandbyok likewise)."""
    ctx = ssl.create_default_context(cafile=str(cluster.state / "vault-tls" / "ca.pem"))
    query = "?standbyok=true&perfstandbyok=true" if standbyok else ""
    url = f"https://{node.address}:{cluster.ports['vault']}/v1/sys/health{query}"
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=3) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


def _until(pred: Callable[[], bool], timeout: float, what: str, report: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out ({timeout:.0f} s) waiting for {what}\n{report()}")


# The drill's uploads stay inside the per-principal limits of the deployed masters (roles/histo: 5
# uploads/s with a burst of 30, each charged once per live master; half of max_running_jobs=16 running
# per principal): one upload at a time, at most this many unfinished, this far apart. A 429 is the
# admission doing its job, not Vault failing: waited out (Retry-After) and the upload repeated.
_DRILL_UNFINISHED = 3
_DRILL_SPACING = 0.7  # seconds: 1.4 uploads/s, under 5/s shared by up to 3 masters


def test_active_vault_node_killed_during_uploads(cluster: DeployedCluster) -> None:
    """The active OpenBao node is killed (SIGKILL) while uploads run: no upload is refused for want of Vault
    (every one is accepted, 202, once the admission lets it in) and every job completes, the masters are
    ready again; systemd starts the node again and it rejoins raft and unseals itself (static seal),
    without a key typed. On failure the message is the timeline: each upload's time from the kill, its
    status and error code, and every node's sys/health at the moments that matter."""
    nodes = cluster.group("vault")
    if len(nodes) < 3:
        pytest.skip(f"profile {cluster.profile} has {len(nodes)} Vault node(s); the drill needs a raft cluster")
    wait_ready(cluster)
    # the drill before (Vault sealed) restarts every node: they may still be electing (all 429)
    _until(lambda: sum(_vault_health(cluster, n) == 200 for n in nodes) == 1, 120, "one active Vault node",
           lambda: ", ".join(f"{n.name}={_vault_health(cluster, n)}" for n in nodes))
    health_before = {n.name: _vault_health(cluster, n) for n in nodes}
    active = [n for n in nodes if health_before[n.name] == 200]
    assert len(active) == 1, health_before
    victim = active[0]
    token = cluster.env["HISTO_TOKEN_UPLOADER"]
    accepted: list[str] = []  # job ids
    timeline: list[str] = []  # "t=+1.2s 202 <job id>" lines, t from the kill ("t=before": before it)
    refused: list[str] = []
    killed_at: list[float] = []
    stop = threading.Event()

    def t() -> str:
        return f"t={time.monotonic() - killed_at[0]:+.1f}s" if killed_at else "t=before"

    def health() -> str:
        return ", ".join(f"{n.name}={_vault_health(cluster, n)}" for n in nodes)

    def report() -> str:
        return (f"victim {victim.name}; health before {health_before}, now {health()}; "
                f"{len(accepted)} accepted, refused {refused}\n" + "\n".join(timeline[-120:]))

    def state(job_id: str) -> str:
        try:
            status, raw, _h = request(cluster, "GET", f"/api/v1/jobs/{job_id}", token)
            return str(json.loads(raw).get("state")) if status == 200 else f"http {status}"
        except (OSError, ValueError) as exc:  # unknown for now: asked again
            return f"no answer ({type(exc).__name__})"

    def uploads() -> None:
        pending: list[str] = []
        while not stop.is_set() and len(accepted) < 80:
            pending = [j for j in pending if state(j) not in ("done", "failed")]
            if len(pending) >= _DRILL_UNFINISHED:
                time.sleep(0.3)
                continue
            try:
                status, raw, headers = request(cluster, "POST", "/api/v1/jobs", token, *_upload_body())
            except OSError as exc:  # the public address itself failing is a finding too
                timeline.append(f"{t()} no answer: {exc}")
                refused.append(f"{t()} {type(exc).__name__}")
                time.sleep(_DRILL_SPACING)
                continue
            try:
                doc = json.loads(raw)
            except ValueError:
                doc = {}
            code = doc.get("error")  # the API's error body: {"error": code, "message": ...}
            timeline.append(f"{t()} {status} {doc.get('id') or code or raw[:80]!r}")
            if status == 202:
                accepted.append(doc["id"])
                pending.append(doc["id"])
            elif status == 429:  # a per-principal limit: wait as told, then the same upload again
                time.sleep(min(float(headers.get("Retry-After") or 1), 10))
                continue
            else:
                refused.append(f"{t()} {status} {code or raw[:120]!r}")
            time.sleep(_DRILL_SPACING)

    loader = threading.Thread(target=uploads, daemon=True)
    loader.start()
    try:
        _until(lambda: len(accepted) >= 3, 120, "the first uploads", report)
        restarts = victim.run("systemctl show -p NRestarts --value openbao").stdout.strip()
        killed_at.append(time.monotonic())
        victim.run("systemctl kill --signal=SIGKILL openbao")  # Restart=on-failure brings it back
        timeline.append(f"{t()} SIGKILL {victim.name}")
        after_kill = len(accepted)
        # A node is active again: usually another one; the victim itself if systemd restarted it (2 s)
        # before the others had elected one, which is just as good for the services.
        _until(lambda: any(_vault_health(cluster, n) == 200 for n in nodes), 60, "an active Vault node", report)
        timeline.append(f"{t()} active again: {health()}")
        _until(lambda: len(accepted) >= after_kill + 5, 180, "5 uploads accepted after the kill", report)
    finally:
        stop.set()
        loader.join(120)
    assert not refused, report()
    for job_id in accepted:
        _until(lambda j=job_id: state(j) in ("done", "failed"), 120, f"job {job_id}", report)  # type: ignore[misc]
        assert state(job_id) == "done", f"job {job_id}: {state(job_id)}\n{report()}"
    wait_ready(cluster, timeout=60)
    # the killed node is back: restarted by systemd, unsealed by itself, serving (active or a standby)
    _until(lambda: _vault_health(cluster, victim, standbyok=True) == 200, 90,
           f"{victim.name} back unsealed", report)
    assert victim.run("systemctl show -p NRestarts --value openbao").stdout.strip() != restarts, report()


def _upload_body() -> tuple[bytes, dict[str, str]]:
    """The multipart body and headers of one small PNG upload (api.upload's, with the answer's headers kept)."""
    import uuid

    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"t.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + png() + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
