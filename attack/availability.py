"""Where the attacker goes for availability: a flood on the upload endpoint from a network namespace of
its own on histo-br0 (two fresh addresses, no cluster machine), and Vault sealed while the cluster
serves. Disruptive: `Vault sealed` seals Vault and always unseals it again (finally), with the unseal
keys under .histo/vagrant, as the vault role does."""
from __future__ import annotations

import json
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .deployed import outsider
from .outcome import Outcome
from .target import Target, gray_noise, summ

if TYPE_CHECKING:
    import hvac

NETNS, VETH = "histo-drill", "histo-drl0"
# The flood comes from addresses that are no cluster machine's (.99 is the segmentation test's outsider), fresh
# on every run: a throttled address stays blocked for auth_block_seconds (60 s).
FLOOD_RANGE = range(200, 250)
FLOOD_CLIENT = Path(__file__).resolve().parent / "remote" / "flood.py"


# -- a flood on the upload endpoint ------------------------------------------------------------------
def flood(d: Target) -> Outcome:
    a, b = (f"192.168.56.{n}" for n in secrets.SystemRandom().sample(FLOOD_RANGE, 2))
    flooder = d.token("uploader", f"drill-flooder-{uuid.uuid4().hex[:6]}", ttl=300)
    url = d.api.url
    with outsider(NETNS, VETH, (a, b)) as ns:
        errors = tempfile.TemporaryFile(mode="w+")
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(FLOOD_CLIENT)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True)
        assert proc.stdin is not None and proc.stdout is not None  # both PIPE
        proc.stdin.write(json.dumps({"url": url, "ca": d.api.ca, "a": a, "b": b,
                                     "token": flooder, "n": 40, "m": 60}) + "\n")
        proc.stdin.close()
        time.sleep(0.5)
        legit_list = d.api.request("GET", "/api/v1/jobs", token=d.api.token("uploader"))[0]
        legit_job = d.upload(gray_noise(40, 30)[0])["state"]
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
                   f"forged: {summ(forged)}; valid token: {summ(principal)} (throttled from request "
                   f"{first_429 + 1}); the legitimate user: list {legit_list}, job {legit_job}", held)


# -- sockets held without credentials -------------------------------------------------------------------
CONNFLOOD_CLIENT = Path(__file__).resolve().parent / "remote" / "connflood.py"
CONN_PER_ADDRESS = 64  # roles/histo defaults: histo_limits.conn_per_address
HANDSHAKE_TIMEOUT = 10.0  # histo_limits.tls_handshake_timeout


def connection_flood(d: Target) -> Outcome:
    """An outsider opens twice the per-address cap of plain TCP sockets to the leader's public port and
    never starts TLS; meanwhile a legitimate user lists and uploads from the controller."""
    (a,) = (f"192.168.56.{n}" for n in secrets.SystemRandom().sample(FLOOD_RANGE, 1))
    leader = d.leader()
    with outsider(NETNS, VETH, (a,)) as ns:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(CONNFLOOD_CLIENT)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"host": leader.address, "port": 443, "a": a, "n": 2 * CONN_PER_ADDRESS,
                                     "wait": HANDSHAKE_TIMEOUT + 2}) + "\n")
        proc.stdin.close()
        proc.stdin = None  # written and closed: communicate() must not flush it again
        time.sleep(1.0)
        legit_list = d.api.request("GET", "/api/v1/jobs", token=d.api.token("uploader"),
                                   url=f"https://{leader.address}")[0]
        legit_job = d.upload(gray_noise(40, 30)[0])["state"]
        out, err = proc.communicate(timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"connection flood client failed: {err.strip()[-200:]}")
    r = json.loads(out)
    kept = r["opened"] - r["closed_at_once"]
    held = (kept <= CONN_PER_ADDRESS and r["open_after"] == 0 and legit_list == 200 and legit_job == "done")
    return Outcome("connection flood", f"from {a} (not a cluster machine): {r['opened']} plain TCP sockets to "
                   f"{leader.name}:443, never starting TLS; meanwhile a legitimate user lists and uploads",
                   f"{kept} kept (cap {CONN_PER_ADDRESS}), {r['closed_at_once']} closed at once, {r['open_after']} "
                   f"still open after the handshake timeout; the legitimate user: list {legit_list}, job {legit_job}",
                   held)


# -- Vault sealed ---------------------------------------------------------------------------------------
def _readyz(d: Target) -> dict[str, dict[str, Any]]:
    out = {}
    for u in d.api.urls:
        try:
            _s, _h, raw = d.api.request("GET", "/readyz", url=u, timeout=5)
            out[u] = json.loads(raw)
        except (OSError, ValueError):
            out[u] = {"status": "unreachable", "checks": {}}
    return out


def _sealed(vault: hvac.Client) -> bool | None:
    import requests
    from hvac.exceptions import VaultError
    try:
        return bool(vault.sys.read_seal_status()["sealed"])
    except (OSError, VaultError, requests.RequestException):
        return None  # restarting: not listening yet


def _unseal(vault: hvac.Client, state: Path) -> bool:
    """With the unseal keys alone (no token), as `make provision` (roles/vault) would."""
    deadline = time.time() + 30
    while _sealed(vault) is None and time.time() < deadline:
        time.sleep(0.5)
    from histo.vault.secretzero import unseal
    try:
        unseal(vault, state / "vault-init.json")
    except RuntimeError:
        pass  # reported below: still sealed
    return _sealed(vault) is False


SEALED_AT_LEAST = 7.0


def vault_sealed(d: Target) -> Outcome:
    """Every Vault node's service is stopped (the whole raft cluster away, as after a power cut) and
    started again: with the static seal each node unseals itself (a restart alone no longer leaves a
    sealed Vault), with the Shamir seal the keys unseal it; no token exists that could seal it on
    purpose (the root token is retired after setup)."""
    import hvac
    nodes = d.group("vault")
    clients = [hvac.Client(url=f"https://{n.address}:{d.ports['vault']}", verify=d.vault_ca) for n in nodes]
    if any(_sealed(c) is not False for c in clients):
        raise RuntimeError("Vault is not unsealed and serving on every node: not touching it")
    # Every worker live first: a worker still coming back from an earlier drill needs Vault for its
    # certificate, so stopping Vault now would measure that drill, not this one (a 503 no_workers).
    workers = len(d.group("workers"))
    deadline = time.time() + 120
    while not all(r.get("checks", {}).get("workers", {}).get("count") == workers for r in _readyz(d).values()):
        if time.time() > deadline:
            raise RuntimeError("not every worker is live on every master: not touching Vault")
        time.sleep(1)
    # A result stored before: reading it from every master has each unwrap its data key (kept in memory).
    job = d.upload(gray_noise(64, 48)[0])
    result, tok = f"/api/v1/jobs/{job['id']}/result", d.api.token("uploader")
    before = [d.api.request("GET", result, token=tok, url=u)[2] for u in d.api.urls]
    degraded, served, told, unsealed = False, False, "not tried", False
    for n in nodes:
        n.run("systemctl stop openbao", timeout=60)
    sealed_at = time.time()
    try:
        deadline = time.time() + 30
        while time.time() < deadline and not degraded:
            ready = _readyz(d)
            degraded = all(r.get("status") == "degraded" and not r["checks"].get("vault", {}).get("ok", True)
                           for r in ready.values())
            if not degraded:
                time.sleep(0.5)
        # Long enough for every service's token check (every 5 s) to have met the absent Vault.
        time.sleep(max(0.0, sealed_at + SEALED_AT_LEAST - time.time()))
        # Stored results are still served; a new upload is still accepted: its data key was made ahead
        # (master/datakeys.py) — the job completes once a leader can unwrap that key again.
        served = [d.api.request("GET", result, token=tok, url=u)[2] for u in d.api.urls] == before
        status, during = d.api.upload(gray_noise(64, 48)[0], mode="gray", filename="drill.png",
                                      content_type="image/png")
        told = f"{status} {during.get('error') or 'accepted'}"
    finally:
        for n in nodes:
            n.run("systemctl start openbao", timeout=60)
        deadline = time.time() + 30  # static seal: each node unseals itself
        while time.time() < deadline and not all(_sealed(c) is False for c in clients):
            time.sleep(0.5)
        unsealed = all([_sealed(c) is False or _unseal(c, d.cluster.state) for c in clients])
    sealed_for = time.time() - sealed_at
    t0 = time.time()
    recovered = False
    while unsealed and time.time() - t0 < 60 and not recovered:
        ready = _readyz(d)
        recovered = all(r.get("status") == "ok" for r in ready.values())
        if not recovered:
            time.sleep(0.5)
    finished = "not accepted"
    if status == 202 and recovered:
        try:
            finished = d.api.wait_job(during["id"], timeout=90)["state"]
        except AssertionError:
            finished = "not done within 90 s"
    held = degraded and served and told == "202 accepted" and finished == "done" and unsealed and recovered
    return Outcome("Vault sealed", f"stopping Vault on {', '.join(n.name for n in nodes)} for {sealed_for:.1f}s "
                   "while the cluster serves, then starting it (it unseals itself with the static seal)",
                   f"every master's /readyz degraded (vault): {degraded}; a stored result served by every master: "
                   f"{served}; a new upload: {told}; every node unsealed again: "
                   f"{unsealed}; every master ready again: {recovered} after {time.time() - t0:.0f}s; "
                   f"the upload made while Vault was away: {finished}", held)
