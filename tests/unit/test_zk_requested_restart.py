"""zk/renew.requested_restart: the unprivileged renewer asks a root path unit for the restart by
rewriting a flag file, and counts it done only once the server serves a newer certificate."""
from __future__ import annotations

from pathlib import Path

import time

import pytest

from histo.zk import renew
from histo.zk.config import ZkConfig


def _zk(tmp_path: Path) -> ZkConfig:
    return ZkConfig(tmp_path / "zk", "127.0.0.1", 2281, server_id=1)


def test_request_rewrites_the_flag_and_waits_for_a_newer_certificate(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = renew.Window(100.0, 200.0), renew.Window(150.0, 250.0)
    answers = iter([old, None, old, new])  # before; restarting; still the old one; the new one
    monkeypatch.setattr(renew, "probe", lambda zk, a, p: next(answers))
    monkeypatch.setattr(time, "sleep", lambda s: None)
    flag = tmp_path / "restart-request"
    renew.requested_restart(flag, _zk(tmp_path), timeout=60)()
    assert flag.read_text().strip()  # one complete write (a rename), never a half-written file
    assert not flag.with_name(flag.name + ".tmp").exists()
    with pytest.raises(StopIteration):
        next(answers)  # every answer was asked for: it did not return before the new certificate


def test_no_restart_within_the_timeout_is_an_error_the_loop_logs(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    same = renew.Window(100.0, 200.0)
    monkeypatch.setattr(renew, "probe", lambda zk, a, p: same)
    clock = iter(float(t) for t in range(0, 1000, 5))
    monkeypatch.setattr(time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(time, "sleep", lambda s: None)
    with pytest.raises(OSError, match="not restarted within 20s"):
        renew.requested_restart(tmp_path / "flag", _zk(tmp_path), timeout=20)()
