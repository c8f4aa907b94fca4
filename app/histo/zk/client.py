"""A histo service's ZooKeeper session: TLS only (server verified against our CA and its address,
client certificate presented), digest credentials re-sent on every reconnect, default ACLs, from the
service's own address."""
from __future__ import annotations

import logging
import socket
from typing import Any, Callable

from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss, OperationTimeoutError, SessionExpiredError
from kazoo.handlers import utils as kazoo_utils
from kazoo.handlers.threading import KazooTimeoutError, SequentialThreadingHandler
from kazoo.retry import KazooRetry, RetryFailedError

from .acl import default_acl

log = logging.getLogger("histo.zk")


class ZkUnavailable(RuntimeError):
    pass


# What a ZooKeeper call raises once the session's retries are spent (zk/jobs.py): the coordination
# service is away, which says nothing about the request or the job that met it.
COORDINATION_LOST = (ConnectionLoss, SessionExpiredError, OperationTimeoutError, RetryFailedError, KazooTimeoutError)


class _BoundSocket:
    """The socket module as kazoo uses it, every socket bound to one source address first."""

    def __init__(self, source: str) -> None:
        self.source = source

    def socket(self, family: int = socket.AF_INET, *args: Any) -> socket.socket:
        s = socket.socket(family, *args)
        try:
            s.bind((self.source, 0))
        except OSError:
            s.close()
            raise
        return s

    def __getattr__(self, name: str) -> Any:
        return getattr(socket, name)


class SourceBoundHandler(SequentialThreadingHandler):  # type: ignore[misc]
    """kazoo's threading handler, connecting from `source`. ZooKeeper names a client by the address it
    connects from (its audit lines' ip, which the SecOps filter binds a certificate's name to:
    secops/sources.py); on a machine that is the service's own address anyway, and in local mode, where
    every service shares the loopback, it is what tells them apart."""

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source

    def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        return kazoo_utils.create_tcp_connection(_BoundSocket(self.source), *args, **kwargs)


def call(zk: KazooClient, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """One ZooKeeper round trip, retried through a connection loss or a server restart for as long as
    the session survives (command_retry below), then RetryFailedError. kazoo would queue a call made
    while disconnected until the connection is back, however long that takes (a request thread held
    for the whole outage): such a call fails at once instead, and the retry's deadline bounds the wait."""
    def attempt() -> Any:
        if not zk.connected:
            raise ConnectionLoss("no ZooKeeper connection")
        return fn(*args, **kwargs)
    return zk.retry(attempt)


def connect(hosts: str, ca_path: str, cert_path: str, key_path: str, username: str, password: str, role: str,
            acl_ids: dict[str, str] | None = None, timeout: float = 15.0, session_timeout: float = 6.0,
            x509_id: str | None = None, source_address: str | None = None) -> KazooClient:
    client = KazooClient(
        hosts=hosts, timeout=session_timeout,
        handler=SourceBoundHandler(source_address) if source_address else None,
        use_ssl=True, verify_certs=True, check_hostname=True,  # the ZooKeeper cert carries its IP SAN
        ca=ca_path, certfile=cert_path, keyfile=key_path,
        auth_data=[("digest", f"{username}:{password}")],
        default_acl=default_acl(acl_ids, role, x509_id) if acl_ids else None,
        connection_retry=KazooRetry(max_tries=-1, delay=0.2, max_delay=2, ignore_expire=True),
        # client.retry(op): retried through a reconnection or an election (a ZooKeeper server restarted
        # to renew its certificate, zk/renew.py) for as long as the session itself would survive
        command_retry=KazooRetry(max_tries=-1, delay=0.1, max_delay=1, deadline=session_timeout),
    )
    try:
        client.start(timeout=timeout)
    except KazooTimeoutError:
        client.stop()
        client.close()
        raise ZkUnavailable(f"no ZooKeeper session with {hosts} within {timeout:.0f}s") from None
    return client
