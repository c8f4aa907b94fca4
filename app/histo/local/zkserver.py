"""A ZooKeeper server process for local mode and the integration tests (machines run it under
systemd): started from a ZkConfig, tracked by its pid file, ready once its TLS port answers."""
from __future__ import annotations

import socket
import time

from .. import procs
from ..zk.config import ZkConfig, ZkServerError


class ZkServer(ZkConfig):
    def running(self) -> int | None:
        return procs.alive(self.pid_path, str(self.cfg_path))

    def start(self, timeout: float = 60.0) -> None:
        if not self.cfg_path.exists():
            raise ZkServerError("write_config() first")
        if not self.running():
            procs.spawn(self.command(), self.dir / "stdout.log", self.pid_path)
        self.wait_listening(timeout)

    def wait_listening(self, timeout: float) -> None:
        """Wait until the TLS port completes a handshake (the server asks for our certificate)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with socket.create_connection((self.address, self.port), timeout=1):
                    return
            except OSError:
                if not procs.started(self.pid_path):
                    raise ZkServerError(f"ZooKeeper exited; see {self.dir / 'stdout.log'}") from None
                time.sleep(0.2)
        raise ZkServerError(f"ZooKeeper did not listen on {self.address}:{self.port} within {timeout:.0f}s")

    def stop(self) -> bool:
        return procs.stop(self.pid_path, str(self.cfg_path))


