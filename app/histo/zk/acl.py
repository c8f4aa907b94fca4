"""The histo znode tree and its ACLs. Nothing is world-readable or world-writable; masters
administer the tree; workers read, create their own membership node, and can write only it
(by their certificate's x509 identity, which no other worker shares)."""
from __future__ import annotations

from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError
from kazoo.security import ACL, Id, Permissions

ROOT = "/histo"
ELECTION, MASTERS, WORKERS, JOBS, REVOKED = (f"{ROOT}/{p}" for p in ("election", "masters", "workers", "jobs",
                                                                  "revoked"))


def _acl(perms: int, scheme: str, ident: str) -> ACL:
    return ACL(perms, Id(scheme, ident))


def master_all(ids: dict[str, str]) -> ACL:
    return _acl(Permissions.ALL, "digest", ids["master"])


def worker(ids: dict[str, str], perms: int) -> ACL:
    return _acl(perms, "digest", ids["worker"])


def tree_acls(ids: dict[str, str]) -> dict[str, list[ACL]]:
    r, c = Permissions.READ, Permissions.CREATE
    return {
        "/": [master_all(ids), worker(ids, r)],
        ROOT: [master_all(ids), worker(ids, r)],
        ELECTION: [master_all(ids)],                 # workers cannot even see who contends
        MASTERS: [master_all(ids), worker(ids, r)],
        WORKERS: [master_all(ids), worker(ids, r | c)],  # create own node; no delete on the parent
        JOBS: [master_all(ids), worker(ids, r)],
        REVOKED: [master_all(ids), worker(ids, r)],
    }


def default_acl(ids: dict[str, str], role: str, x509_id: str | None = None) -> list[ACL]:
    """ACL for nodes a client creates: masters administer, workers read; a worker's own node is
    also writable by its own certificate identity."""
    acl = [master_all(ids), worker(ids, Permissions.READ)]
    if role == "worker" and x509_id:
        acl.append(_acl(Permissions.READ | Permissions.WRITE, "x509", x509_id))
    return acl


def bootstrap_tree(client: KazooClient, ids: dict[str, str]) -> None:
    """Create the tree (idempotent) and (re)set the ACLs of its fixed nodes."""
    for path, acl in tree_acls(ids).items():
        if path != "/":
            try:
                client.create(path, b"", acl=acl)
            except NodeExistsError:
                pass
        current, _ = client.get_acls(path)
        if sorted(map(str, current)) != sorted(map(str, acl)):
            client.set_acls(path, acl)
