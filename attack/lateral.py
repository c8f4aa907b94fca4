"""Where the attacker stands inside a compromised worker (root in worker1: the service's certificate,
key, role_id and secret_id, and its own Vault login), trying to move on: privileged Vault calls,
ZooKeeper writes outside the worker's ACL, connections the segmentation forbids, and forged or replayed
task results sent to the leader."""
from __future__ import annotations

from .outcome import Outcome
from .target import Target, gray_noise, summ


# -- a compromised worker ---------------------------------------------------------------------------
def compromised_worker(d: Target) -> Outcome:
    w1, w2 = d.group("workers")[:2]
    masters = d.group("masters")
    job = d.upload(gray_noise(48, 32)[0])
    reach = ([[w2.address, d.ports["internal"]]] + [[m.address, d.ports["public"]] for m in masters]
             + [[m.address, d.ports["internal"]] for m in masters])
    r = d.inside(w1.name, "compromised", {"master": masters[0].name, "other_worker": w2.name, "job": job["id"],
                                          "worker": w1.name, "reach": reach})
    forbidden_reach = {f"{a}:{p}" for a, p in reach[:1 + len(masters)]}
    dropped = [k for k in forbidden_reach if r["reach"][k] == "timeout"]
    internal_ok = all(r["reach"][f"{m.address}:{d.ports['internal']}"] == "open" for m in masters)
    held = (not r["vault_allowed"] and not r["zk_allowed"] and len(dropped) == len(forbidden_reach)
            and len(r["legit"]) == 4 and internal_ok)
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


# -- forged and replayed task results -----------------------------------------------------------------


def forged_result(d: Target) -> Outcome:
    job = d.upload(gray_noise(64, 48)[0])
    leader = d.leader()
    calls = []
    for w in d.group("workers"):
        calls += d.inside(w.name, "replay", {"job": job["id"], "leader": leader.address,
                                             "port": d.ports["internal"], "width": 64})["calls"]
    statuses = [c[1] for c in calls]
    reasons = sorted({c[2].split(":", 1)[-1].strip()[:60] for c in calls})
    held = bool(calls) and set(statuses) == {409} and any(c[0] == "forged attempt" for c in calls)
    return Outcome("forged / replayed result",
                   f"each worker re-reports every finished task attempt of job {job['id'][:8]}… (read from "
                   f"ZooKeeper) and one forged attempt to the leader {leader.name}",
                   f"{summ([str(s) for s in statuses])} ({'; '.join(reasons)})", held)


# -- SSH and the management network from a compromised worker ------------------------------------------
def ssh_lateral(d: Target) -> Outcome:
    """Root in worker1 tries to reach every other machine's SSH (cluster, management and IPv6 link-local
    addresses) and every known port on their management addresses; a key root plants in worker1, and
    Vagrant's public insecure key, are tried from the controller (the one place SSH is accepted from)
    against every machine, as vagrant and as root; the controller's cluster key must log in everywhere."""
    from . import sshcheck
    c = d.cluster
    w1 = d.group("workers")[0]
    addrs = sshcheck.all_addresses(c)
    targets = sshcheck.reach_targets(c, w1.name, addrs)
    got = sshcheck.probe_from(w1, [t for _m, _w, t in targets])
    reached = [f"{m} {what}: {g}" for (m, what, _t), g in zip(targets, got) if g == "open"]
    answered = [f"{m} {what}: {g}" for (m, what, _t), g in zip(targets, got) if g == "refused"]
    others = [n for n in c.machines if n != w1.name]
    insecure = sshcheck.insecure_key()
    with sshcheck.planted_key(w1) as (planted, planted_inside):
        on_worker1 = sshcheck.login_result(sshcheck.ssh(addrs[w1.name].management, planted))
        planted_elsewhere = {n: sshcheck.login_result(sshcheck.ssh(addrs[n].management, planted)) for n in others}
        self_login = sshcheck.self_login(w1, planted_inside, addrs[w1.name].management)
    insecure_logins = {f"{user}@{n}": sshcheck.login_result(sshcheck.ssh(a.management, insecure, user))
                       for n, a in addrs.items() for user in ("vagrant", "root")}
    cluster_logins = {n: sshcheck.login_result(sshcheck.ssh(a.management, sshcheck.cluster_key(c),
                                                            command="sudo -n true"))
                      for n, a in addrs.items()}
    denied = "Permission denied"
    held = (not reached and not answered
            and all(denied in r for r in planted_elsewhere.values()) and denied in self_login
            and all(denied in r for r in insecure_logins.values())
            and all(r == "logged in" for r in cluster_logins.values()))
    return Outcome(
        "ssh lateral",
        f"as root in {w1.name}: {len(targets)} connects to the {len(others)} other machines (SSH on every address, "
        f"every known port on their management addresses); a key planted in {w1.name} tried on every machine from "
        f"the controller and from {w1.name} itself; Vagrant's insecure key as vagrant and root on every machine",
        f"dropped {summ(got)}; reached {reached or 'nothing'}; refused by a listener {answered or 'none'}; "
        f"planted key: {w1.name} from the controller {on_worker1!r} (root there owns its own machine), elsewhere "
        f"{summ(list(planted_elsewhere.values()))}, from {w1.name} to itself {self_login!r}; insecure key: "
        f"{summ(list(insecure_logins.values()))}; the cluster key from the controller (with sudo): "
        f"{summ(list(cluster_logins.values()))}", held)
