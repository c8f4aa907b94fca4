"""vault/setup.py's KV reads right after a KV v2 mount: OpenBao answers 400 "Upgrading from
non-versioned to versioned data" for a moment; the apply waits for it instead of failing, and
still fails on any other error. (The fake stands in for hvac's KV v2 client only: pure logic.)"""
from __future__ import annotations

import pytest
from hvac.exceptions import InvalidPath, InvalidRequest

from histo.vault import setup

UPGRADING = ("Upgrading from non-versioned to versioned data. This backend will be unavailable for a brief "
             "period and will resume service shortly.")


class _KV:
    def __init__(self, answers: list) -> None:
        self.answers, self.calls = answers, 0

    def read_secret_version(self, path, mount_point, raise_on_deleted_version):
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, Exception):
            raise answer
        return {"data": {"data": answer}}


class _Client:
    url = "https://127.0.0.1:8200"

    def __init__(self, kv: _KV) -> None:
        self.secrets = type("S", (), {"kv": type("K", (), {"v2": kv})()})()


def _applier(answers: list) -> tuple[setup._Applier, _KV]:
    kv = _KV(answers)
    return setup._Applier(_Client(kv), {"hosts": []}), kv  # type: ignore[arg-type]  # a stand-in hvac.Client


def test_read_waits_while_the_new_mount_upgrades(monkeypatch):
    monkeypatch.setattr(setup.time, "sleep", lambda _s: None)
    applier, kv = _applier([InvalidRequest(UPGRADING), InvalidRequest(UPGRADING), {"username": "histo-master"}])
    assert applier._kv_read("histo/zk/master") == {"username": "histo-master"}
    assert kv.calls == 3


def test_absent_secret_is_none_even_after_the_upgrade(monkeypatch):
    monkeypatch.setattr(setup.time, "sleep", lambda _s: None)
    applier, _kv = _applier([InvalidRequest(UPGRADING), InvalidPath("no such secret")])
    assert applier._kv_read("histo/zk/master") is None


def test_another_bad_request_is_not_retried():
    applier, kv = _applier([InvalidRequest("permission denied"), {"never": "reached"}])
    with pytest.raises(InvalidRequest, match="permission denied"):
        applier._kv_read("histo/zk/master")
    assert kv.calls == 1


def test_the_wait_is_bounded(monkeypatch):
    clock = iter(range(0, 10_000, 5))  # every look at the clock: 5 s later
    monkeypatch.setattr(setup.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(setup.time, "sleep", lambda _s: None)
    applier, kv = _applier([InvalidRequest(UPGRADING)])
    with pytest.raises(InvalidRequest, match="Upgrading"):
        applier._kv_read("histo/zk/master")
    assert 2 <= kv.calls <= setup.KV_UPGRADE_WAIT / 5 + 2
