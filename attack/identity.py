"""Where the attacker stands with stolen identity material: a worker's certificate and key, its role_id
and secret_id, a wrapped secret_id, an expired certificate or a revoked API token, used from another
machine (worker2, master2 — through lxc-attach, the same network namespace an SSH session would have)
or from the controller. Each must be refused while the rightful holder keeps working."""
from __future__ import annotations

import base64
import json
import shutil
import tempfile
import time
from pathlib import Path

from .outcome import Outcome
from .target import Target, summ, tcp


# -- a worker's certificate and key used from another machine --------------------------------------
def stolen_certificate(d: Target) -> Outcome:
    w1, w2 = d.group("workers")[:2]
    masters = d.group("masters")
    port = d.ports["internal"]
    stolen = d.inside(w1.name, "read_tls")["tls"]
    targets = [[m.address, port, "/internal/v1/results"] for m in masters]
    from_worker2 = d.inside(w2.name, "use_tls", {"tls": stolen, "targets": targets})["calls"]
    peer = masters[-1]
    to_first = [[masters[0].address, port, "/internal/v1/results"]]
    from_master = d.inside(peer.name, "use_tls", {"tls": stolen, "targets": to_first})["calls"]
    del stolen
    # From the controller (or any non-cluster host) the stolen pair never gets as far as a handshake.
    firewall = tcp(masters[0].address, port)
    legit = d.inside(w1.name, "own_tls", {"targets": targets})["calls"]
    status, _h, raw = d.api.request("GET", "/api/v1/cluster", token=d.api.token("viewer"))
    listed = status == 200 and w1.name in [n["name"] for n in json.loads(raw)["workers"]]
    refused = all(s == 403 for s, _ in from_worker2 + from_master) and firewall == "timeout"
    legit_ok = all(s in (400, 409) for s, _ in legit)
    return Outcome("stolen certificate",
                   f"{w1.name}'s certificate and key, copied to {w2.name}, {peer.name} and the controller, "
                   f"presented to the masters' internal port {port} as a result report",
                   f"from {w2.name}: {summ([str(s) for s, _ in from_worker2])}; from {peer.name}: "
                   f"{summ([str(s) for s, _ in from_master])} ({from_master[0][1]}); from the controller: "
                   f"{masters[0].name}:{port} {firewall} (firewall); the real {w1.name}: "
                   f"{summ([str(s) for s, _ in legit])} (identity accepted, bogus result refused); "
                   f"{w1.name} still in the cluster: {listed}", refused and legit_ok and listed)


# -- used and copied secret_id, expired certificate, revoked token ----------------------------------
def used_secret_id(d: Target) -> Outcome:
    from histo.vault.provision import wrapped_secret_id
    w2 = d.group("workers")[-1]
    prov = d.provisioner_vault()  # what `make provision` holds (histo provision, roles/histo_app)
    role_id = prov.auth.approle.read_role_id(f"histo-{w2.name}")["data"]["role_id"]
    wrap = wrapped_secret_id(prov, w2.name, w2.address, wrap_ttl="60s")
    try:
        r = d.inside(w2.name, "unwrap_twice", {"role_id": role_id, "wrap": wrap})
    finally:
        del wrap
    if r.get("secret_id"):  # the drill's extra secret_id must not outlive it
        prov.write_data(f"auth/approle/role/histo-{w2.name}/secret-id/destroy", data={"secret_id": r["secret_id"]})
    held = r.get("first") == "logged in" and r.get("second", "logged in") != "logged in"
    return Outcome("used secret_id", f"a wrapped secret_id delivered to {w2.name}, unwrapped there, then unwrapped "
                   "a second time (as an interceptor would)",
                   f"first: {r.get('first')}; second: {r.get('second')}", held)


def copied_secret_id(d: Target) -> Outcome:
    from histo.vault.client import ServiceVault, VaultAuthError
    w1, w2 = d.group("workers")[:2]
    creds = d.inside(w1.name, "read_creds")
    copied = {k: creds[k] for k in ("role_id", "secret_id")}
    there = d.inside(w2.name, "login_with", {"host": w1.name, **copied})["login"]
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


def expired_certificate(d: Target) -> Outcome:
    w1 = d.group("workers")[0]
    m = d.group("masters")[0]
    r = d.inside(w1.name, "expired", {"ttl": "3s", "master": m.address, "port": d.ports["internal"]})
    held = r["expired"][0] is None and r["fresh"][0] in (400, 409)
    return Outcome("expired certificate", f"{w1.name} presents its own certificate to {m.name}:{d.ports['internal']} "
                   "once it has expired (issued with a 3 s TTL), then a fresh one",
                   f"expired: {r['expired'][1] or r['expired'][0]}; fresh: {r['fresh'][0]} (identity accepted)", held)


def revoked_token(d: Target) -> Outcome:
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


# -- address binding and revocation (issue 13, item 4) ----------------------------------------------------
def addressless_issuance(d: Target) -> Outcome:
    w1, w2 = d.group("workers")[:2]
    r = d.inside(w1.name, "issue_variants", {"other": w2.address})
    wrong = {k: v for k, v in r.items() if k != "its own address"}
    held = all(v.startswith("refused") for v in wrong.values()) and r.get("its own address") == "issued"
    return Outcome("certificate without its address", f"{w1.name}'s own Vault token asks for its certificate with no "
                   f"IP SAN, an empty one, {w2.name}'s address, then its own",
                   "; ".join(f"{k}: {v}" for k, v in r.items()), held)


def revoked_certificate(d: Target) -> Outcome:
    """`histo identity revoke --serial` (the provisioner token) against a certificate of worker1 that
    holds keep-alive connections to every master."""
    import uuid

    from histo.vault.revoke import revoke
    w1 = d.group("workers")[0]
    masters = [m.address for m in d.group("masters")]
    go = f"/run/histo-drill-go-{uuid.uuid4().hex}"
    proc = d.start_inside(w1.name, "revocable", {"masters": masters, "port": d.ports["internal"], "go": go})
    try:
        ready = d.ready(proc)
        if ready is None:
            raise RuntimeError(f"in {w1.name}: the drill's certificate never held its connections")
        revoke(d.provisioner_vault(), serial=ready["serial"])
        w1.run(f"touch {go}")
        r = d.finish(w1.name, proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        w1.run(f"rm -f {go}", check=False)
    held = (all(s == 200 for s in r["before"].values()) and all(t < 10 for t in r["refused_after"].values())
            and all(s == 403 for s, _ in r["refused_with"].values()) and r["held_closed"] == len(masters)
            and all(s not in (None, 401, 403) for s, _ in r["own"].values()))
    return Outcome("revoked certificate", f"a certificate of {w1.name}'s own identity revoked by serial (provisioner "
                   "token) while it holds keep-alive connections to every master",
                   f"joined before: {r['before']}; refused after {r['refused_after']} s "
                   f"({summ([w for _s, w in r['refused_with'].values()])}); "
                   f"held connections closed: {r['held_closed']}/{len(masters)}; {w1.name}'s own certificate: "
                   f"{summ([str(s) for s, _ in r['own'].values()])}", held)


def provisioner_token(d: Target) -> Outcome:
    from .revocation import provisioner_bounds_with
    return provisioner_bounds_with(d.provisioner_vault(), d.group("workers")[-1].name, d.group("workers")[-1].address)
