"""The histo znode tree and its ACLs. Nothing is world-readable or world-writable; masters
administer the tree; workers read.

ZooKeeper's own nodes are part of the tree: `/zookeeper` and `/zookeeper/quota` come with
`world:anyone:cdrwa` (any client with a certificate of our CA could create nodes there: memory
exhaustion, and on 3.8.0 a `zookeeper_limits` child under `/zookeeper/quota` is reported to crash the
server). Masters own them (their digest only, as for `/histo/election`); the server's quota
bookkeeping does not go through ACLs. `/zookeeper/config` is the one exception: ZooKeeper recreates
it with `world:anyone:r` at every quorum start (`DataTree.addConfigNode`), so it stays read-only for
everyone (it holds the ensemble list, no secret) and nobody can write or create under it.

A worker's membership is bound to its certificate: /histo/workers/<name> is a slot that a master
creates for the identity that asked over mTLS (never for a name a caller chooses), and only that
certificate's x509 identity may create and delete the ephemeral member node inside it. The shared
worker digest cannot create anything under /histo/workers: no ghost members, no squatting."""
from __future__ import annotations

from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError
from kazoo.security import ACL, Id, Permissions

ROOT = "/histo"
ZK_SYSTEM, ZK_QUOTA, ZK_CONFIG = "/zookeeper", "/zookeeper/quota", "/zookeeper/config"
SYSTEM_NODES = ("/", ZK_SYSTEM, ZK_QUOTA)  # exist in every ZooKeeper: ACLs set, never created
ELECTION, MASTERS, WORKERS, JOBS, REVOKED = (f"{ROOT}/{p}" for p in ("election", "masters", "workers", "jobs",
                                                                  "revoked"))
# the per-owner index of jobs (/histo/owners/<owner key>/<job id>) and the jobs not finished yet
OWNERS, ACTIVE = f"{ROOT}/owners", f"{ROOT}/active"


def _acl(perms: int, scheme: str, ident: str) -> ACL:
    return ACL(perms, Id(scheme, ident))


def master_all(ids: dict[str, str]) -> ACL:
    return _acl(Permissions.ALL, "digest", ids["master"])


def worker(ids: dict[str, str], perms: int) -> ACL:
    return _acl(perms, "digest", ids["worker"])


def tree_acls(ids: dict[str, str]) -> dict[str, list[ACL]]:
    r = Permissions.READ
    return {
        "/": [master_all(ids), worker(ids, r)],
        ZK_SYSTEM: [master_all(ids)],                # ZooKeeper's own nodes: masters only
        ZK_QUOTA: [master_all(ids)],
        ROOT: [master_all(ids), worker(ids, r)],
        ELECTION: [master_all(ids)],                 # workers cannot even see who contends
        MASTERS: [master_all(ids), worker(ids, r)],
        WORKERS: [master_all(ids), worker(ids, r)],  # slots are created by masters (worker_slot)
        JOBS: [master_all(ids), worker(ids, r)],
        REVOKED: [master_all(ids), worker(ids, r)],
        OWNERS: [master_all(ids)],                   # job indexes: masters only
        ACTIVE: [master_all(ids)],
    }


def default_acl(ids: dict[str, str], role: str, x509_id: str | None = None) -> list[ACL]:
    """ACL for nodes a client creates: masters administer, workers read; a worker's own node is
    also writable by its own certificate identity."""
    acl = [master_all(ids), worker(ids, Permissions.READ)]
    if role == "worker" and x509_id:
        acl.append(_acl(Permissions.READ | Permissions.WRITE, "x509", x509_id))
    return acl


def x509_id(name: str, trust_domain: str) -> str:
    """ZooKeeper's x509 identity of a host's certificate (its subject)."""
    return f"CN={name}.{trust_domain}"


def worker_slot(name: str) -> str:
    return f"{WORKERS}/{name}"


def worker_slot_acl(ids: dict[str, str], name: str, trust_domain: str) -> list[ACL]:
    own = Permissions.READ | Permissions.CREATE | Permissions.DELETE  # its own member node, nothing else
    return [master_all(ids), worker(ids, Permissions.READ), _acl(own, "x509", x509_id(name, trust_domain))]


def ensure_worker_slot(client: KazooClient, ids: dict[str, str], name: str, trust_domain: str) -> bool:
    """Create (or repair the ACL of) the slot of worker `name`; True if it was created. Masters
    call this for the identity of an mTLS caller, never for a name from a request body."""
    acl = worker_slot_acl(ids, name, trust_domain)
    try:
        client.create(worker_slot(name), b"", acl=acl)
        return True
    except NodeExistsError:
        current, stat = client.get_acls(worker_slot(name))
        if stat.ephemeralOwner:  # a member node of the flat layout before slots: it cannot hold a child
            client.delete(worker_slot(name), version=stat.version)
            return ensure_worker_slot(client, ids, name, trust_domain)
        if sorted(map(str, current)) != sorted(map(str, acl)):
            client.set_acls(worker_slot(name), acl)
        return False


def bootstrap_tree(client: KazooClient, ids: dict[str, str]) -> None:
    """Create the tree (idempotent) and (re)set the ACLs of its fixed nodes, ZooKeeper's own
    `/zookeeper` and `/zookeeper/quota` included (ACL changes are transactions: they persist)."""
    for path, acl in tree_acls(ids).items():
        if path not in SYSTEM_NODES:
            try:
                client.create(path, b"", acl=acl)
            except NodeExistsError:
                pass
        current, _ = client.get_acls(path)
        if sorted(map(str, current)) != sorted(map(str, acl)):
            client.set_acls(path, acl)
