"""The deployed cluster as the drills hold it from the controller: the machines (attack/deployed.py), the
drills' own API tokens, an API client, Vault clients, and `inside()` — a task of attack/remote/inside.py
run in a machine with the machine's own histo Python.

How a task reaches a machine: the file is sent on stdin after a JSON line {"task", "payload"}, so no
secret is ever on a command line; secrets that come back (to search a capture for them, to copy them to
another machine) stay in this process's memory and are never printed."""
from __future__ import annotations

import ipaddress
import json
import secrets
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .deployed import CLUSTER_NET, DeployedCluster, Machine
from .remote import inside as remote

if TYPE_CHECKING:
    import hvac

MACHINE_PYTHON = "/opt/histo/bin/python"  # roles/histo_app: histo_app_venv
INSIDE = Path(remote.__file__)
# Runs the program that follows the request line on stdin, with that line as the program's own stdin.
BOOT = ("import io, sys; request = sys.stdin.readline(); source = sys.stdin.read(); sys.stdin = io.StringIO(request); "
        "exec(compile(source, 'inside.py', 'exec'), {'__name__': '__main__'})")
TOKEN_TTL = 1800


class Target:
    def __init__(self, cluster: DeployedCluster) -> None:
        from histo.edge.tokens import issue_token
        from histo.testing.cluster import Cluster
        from histo.vault.failover import failover_client
        self.cluster = cluster
        self.profile = cluster.profile
        self.ports = cluster.ports
        self.controller = cluster.controller
        self.machines = cluster.machines
        # every Vault node, as the services have them: a drill fails over like they do (a standby
        # forwards, a killed or restarting node is skipped)
        self.vault_url = ",".join(f"https://{v.address}:{self.ports['vault']}" for v in self.group("vault"))
        self.vault_ca = str(cluster.state / "vault-tls" / "ca.pem")
        issuer = failover_client(self.vault_url, verify=self.vault_ca,
                                 token=(cluster.state / "issuer-token").read_text().strip())
        # The drills' own principals (not the operator's tokens: a drill must never throttle them).
        tokens = {f"HISTO_TOKEN_{role.upper()}": issue_token(issuer, role=role, subject=f"drill-{role}",
                                                               ttl_seconds=TOKEN_TTL)
                  for role in ("admin", "uploader", "viewer")}
        urls = [f"https://{m.address}" for m in self.group("masters")]
        env = cluster.env
        self.api = Cluster(root=cluster.state, env={"HISTO_URL": env.get("HISTO_URL", urls[0]),
                                                    "HISTO_URLS": ",".join(urls), "HISTO_CA": env["HISTO_CA"],
                                                    **tokens})
        self._issuer = issuer
        self._issue_token = issue_token

    def group(self, name: str) -> list[Machine]:
        return self.cluster.group(name)

    def token(self, role: str, subject: str, ttl: int = 600) -> str:
        return self._issue_token(self._issuer, role=role, subject=subject, ttl_seconds=ttl)

    def provisioner_vault(self) -> hvac.Client:
        """What `make provision` holds once the root token is retired (policy histo-provisioner)."""
        from histo.vault.failover import failover_client
        return failover_client(self.vault_url, verify=self.vault_ca,
                               token=(self.cluster.state / "provisioner-token").read_text().strip())

    def vault(self) -> hvac.Client:
        """No token: seal status and unsealing, as the unseal key holders reach Vault (the first node)."""
        import hvac
        return hvac.Client(url=self.vault_url.split(",")[0], verify=self.vault_ca)

    def leader(self) -> Machine:
        name = self.api.leader()
        if name not in self.machines:
            raise RuntimeError("no leader master known")
        return self.machines[name]

    def inside(self, name: str, task: str, payload: dict[str, Any] | None = None,
               timeout: float = 120) -> dict[str, Any]:
        """Runs `task` of attack/remote/inside.py in machine `name` with its histo Python; its answer."""
        proc = self.machines[name].attach([MACHINE_PYTHON, "-c", BOOT], input=_request(task, payload), timeout=timeout)
        return _answer(name, proc.returncode, proc.stdout, proc.stderr)

    def start_inside(self, name: str, task: str, payload: dict[str, Any] | None = None) -> subprocess.Popen[str]:
        """The same, left running: the caller reads up to the task's READY line (ready()), acts, and
        collects the answer with finish()."""
        m = self.machines[name]
        proc = subprocess.Popen(["lxc-attach", "-n", m.container, "--clear-env", "--", MACHINE_PYTHON, "-c", BOOT],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdin is not None
        proc.stdin.write(_request(task, payload))
        proc.stdin.close()
        return proc

    @staticmethod
    def ready(proc: subprocess.Popen[str]) -> dict[str, Any] | None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(remote.READY):
                doc: dict[str, Any] = json.loads(line[len(remote.READY):])
                return doc
        return None

    @staticmethod
    def finish(name: str, proc: subprocess.Popen[str], timeout: float = 120) -> dict[str, Any]:
        proc.stdin = None  # written and closed by start_inside: communicate() must not flush it again
        out, err = proc.communicate(timeout=timeout)
        return _answer(name, proc.returncode, out, err)

    def upload(self, image: bytes, mode: str = "gray", token: str | None = None) -> dict[str, Any]:
        """An upload that must be accepted, and its finished job."""
        status, doc = self.api.upload(image, mode=mode, token=token, filename="drill.png", content_type="image/png")
        if status != 202:
            raise RuntimeError(f"upload answered {status}: {doc}")
        return self.api.wait_job(doc["id"], token=token, timeout=120, poll=0.3)


def _request(task: str, payload: dict[str, Any] | None) -> str:
    return json.dumps({"task": task, "payload": payload or {}}) + "\n" + INSIDE.read_text()


def _answer(name: str, returncode: int | None, stdout: str, stderr: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith(remote.ANSWER):
            answer: dict[str, Any] = json.loads(line[len(remote.ANSWER):])
            return answer
    last = (stderr.strip().splitlines() or ["no output"])[-1]
    raise RuntimeError(f"in {name}: exit {returncode}: {last[:300]}")


def gray_noise(width: int = 160, height: int = 120) -> tuple[bytes, bytes]:
    """A PNG of random gray pixels (incompressible: its bytes cross the wire as they are) and the pixels."""
    import io

    from PIL import Image
    pixels = secrets.token_bytes(width * height)
    buf = io.BytesIO()
    Image.frombytes("L", (width, height), pixels).save(buf, "PNG")
    return buf.getvalue(), pixels


def tcp(address: str, port: int, timeout: float = 2.0) -> str:
    """A TCP connect from the controller to a cluster machine: open, refused, timeout (dropped) or error."""
    assert ipaddress.ip_address(address) in CLUSTER_NET
    return remote.tcp(address, port, timeout)


def summ(values: list[Any]) -> str:
    """`2x403, 1x409`: how often each value came back, in order of first appearance."""
    counts: dict[Any, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return ", ".join(f"{n}x{v}" for v, n in counts.items()) or "nothing"
