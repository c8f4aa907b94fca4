"""The root rotation's steps (histo.vault.pki root_finish, rotate's guard) against a fake of the few
Vault PKI paths they touch: the wait, idempotency, and a re-run after a failure half-way."""
from __future__ import annotations

from typing import Any

import pytest

from histo.vault import pki

DAY = 24 * 3600


class FakePki:
    """pki (two roots: the current one, one staged at `stamp`) and pki_int (the current intermediate,
    one retired long ago, the staged one); roles allow 24 h."""

    def __init__(self, stamp: int, fail_on: str = "") -> None:
        self.mounts: dict[str, dict[str, Any]] = {
            "pki": {"default": "r1", "issuers": {
                "r1": {"issuer_name": "root", "key_id": "k-r1"},
                "r2": {"issuer_name": f"root-{stamp}", "key_id": "k-r2"}}},
            "pki_int": {"default": "i1", "issuers": {
                "i0": {"issuer_name": "retired-5", "key_id": "k-i0", "usage": pki.RETIRED_USAGE},
                "i1": {"issuer_name": "intermediate", "key_id": "k-i1"},
                "i2": {"issuer_name": f"staged-{stamp}", "key_id": "k-i2", "usage": pki.RETIRED_USAGE},
                "c1": {"issuer_name": "", "key_id": ""}}}}  # set-signed's copy of a root: no key
        self.writes: list[str] = []
        self.fail_on = fail_on

    def list(self, path: str) -> dict[str, Any]:
        mount, what = path.split("/", 1)
        if what == "roles":
            return {"data": {"keys": ["host-worker1"]}}
        return {"data": {"key_info": {k: dict(v) for k, v in self.mounts[mount]["issuers"].items()}}}

    def read(self, path: str) -> dict[str, Any]:
        if path.startswith("sys/mounts/"):
            return {"data": {"max_lease_ttl": 0}}
        mount, what = path.split("/", 1)
        if what == "config/issuers":
            return {"data": {"default": self.mounts[mount]["default"]}}
        if what.startswith("roles/"):
            return {"data": {"max_ttl": DAY}}
        raise AssertionError(f"unexpected read {path}")

    def write_data(self, path: str, data: dict[str, Any]) -> dict[str, Any]:
        if self.fail_on and self.fail_on in f"{path} {data}":
            self.fail_on = ""
            raise ConnectionError("Vault went away")
        self.writes.append(path)
        mount, what = path.split("/", 1)
        if what == "config/issuers":
            self.mounts[mount]["default"] = data["default"]
        elif what.startswith("issuer/"):
            self.mounts[mount]["issuers"][what.split("/")[1]].update(data)
        else:
            raise AssertionError(f"unexpected write {path}")
        return {}


def test_retired_and_staged_names() -> None:
    assert pki.retired_at({"issuer_name": "retired-1700000000"}) == 1700000000
    assert pki.staged_at({"issuer_name": "staged-1700000000"}) == 1700000000
    for name in ("intermediate", "root-17", "staged-", "staged-1x", None):
        assert pki.staged_at({"issuer_name": name}) is None


def test_finish_waits_the_longest_leaf_life_then_swaps_both_mounts_once() -> None:
    t0 = 1_700_000_000
    v = FakePki(t0)
    with pytest.raises(pki.PkiError, match=r"again in 82800s"):
        pki.root_finish(v, now=t0 + 3600)  # type: ignore[arg-type]
    assert v.writes == []
    with pytest.raises(pki.PkiError, match="again in"):
        pki.root_finish(v, wait=7200, now=t0 + 3600)  # type: ignore[arg-type]
    out = pki.root_finish(v, now=t0 + DAY)  # type: ignore[arg-type]
    assert out["changed"] and out["root"] == "r2" and out["intermediate"] == "i2"
    assert out["retired_roots"] == ["r1"] and out["retired"] == ["i1"]  # not i0 again, not the keyless copy
    assert (out["previous_root"], out["previous_default"]) == ("r1", "i1")
    root, inter = v.mounts["pki"], v.mounts["pki_int"]
    assert root["default"] == "r2" and inter["default"] == "i2"
    assert root["issuers"]["r1"] == {"issuer_name": f"retired-{t0 + DAY}", "key_id": "k-r1",
                                      "usage": pki.RETIRED_USAGE}
    assert inter["issuers"]["i2"]["issuer_name"] == f"intermediate-{t0}"
    assert inter["issuers"]["i2"]["usage"] == pki.ISSUING_USAGE
    assert inter["issuers"]["i0"]["issuer_name"] == "retired-5"
    n = len(v.writes)
    assert pki.root_finish(v, now=t0 + 2 * DAY)["changed"] is False  # type: ignore[arg-type]
    assert len(v.writes) == n


@pytest.mark.parametrize("fail_on", ["pki/config/issuers", "pki_int/config/issuers", "retired-",
                                     "intermediate-"])
def test_a_finish_that_failed_half_way_is_completed_by_a_rerun(fail_on: str) -> None:
    t0 = 1_700_000_000
    v = FakePki(t0, fail_on=fail_on)
    with pytest.raises(ConnectionError):
        pki.root_finish(v, now=t0 + DAY)  # type: ignore[arg-type]
    assert pki.staged(v) is not None  # type: ignore[arg-type]  # the marker goes last
    pki.root_finish(v, now=t0 + DAY + 60)  # type: ignore[arg-type]
    root, inter = v.mounts["pki"], v.mounts["pki_int"]
    assert root["default"] == "r2" and inter["default"] == "i2" and pki.staged(v) is None  # type: ignore[arg-type]
    assert pki.retired_at(root["issuers"]["r1"]) and pki.retired_at(inter["issuers"]["i1"])
    assert inter["issuers"]["i2"]["usage"] == pki.ISSUING_USAGE


def test_an_intermediate_rotation_is_refused_while_a_root_rotation_is_staged() -> None:
    v = FakePki(1_700_000_000)
    with pytest.raises(pki.PkiError, match="root-finish"):
        pki.rotate(v)  # type: ignore[arg-type]
    assert v.writes == []
