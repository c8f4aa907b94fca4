"""The hash-chained SecOps log and its verifier: each kind of tampering is named at the right entry,
and the untouched log verifies. Checkpoints are signed here with a local P-256 key in the very JWS
format Vault transit produces (the integration test signs with a real OpenBao)."""
from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from histo.edge import receipts
from histo.secops import checkpoint
from histo.secops.chain import ChainLog, Head, walk
from histo.secops.collector import Collector, checkpoints_path, event_of
from histo.secops.verify import Report, audit

WHO = "spiffe://histo.internal/secops/secops1"


class LocalSigner:
    """Signs like transit/sign (ES256, r||s base64url), with a key of its own."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        pem = self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        self.keys = {f"{checkpoint.key_name('secops1')}:1": pem}

    def _sig(self, data: bytes, version: int) -> str:
        r, s = decode_dss_signature(self.key.sign(data, ec.ECDSA(hashes.SHA256())))
        return receipts.b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def sign_head(self, head: Head) -> str:
        return receipts.encode(checkpoint.claims_for(head, WHO), 1, self._sig, key=checkpoint.key_name("secops1"),
                               typ=checkpoint.TYP)


class ListAnchor:
    def __init__(self) -> None:
        self.items: list[str] = []

    def put(self, jws: str) -> None:
        self.items.append(jws)


Logged = tuple[Path, LocalSigner, ListAnchor]


@pytest.fixture
def logged(tmp_path: Path) -> Logged:
    """A log of 12 events, checkpointed after 4, 8 and 12."""
    signer, anchor = LocalSigner(), ListAnchor()
    c = Collector(tmp_path / "secops.log", signer, anchor, interval=3600)
    for i in range(1, 13):
        c.ingest(json.dumps({"kind": "auth_failure", "n": i}))
        if i % 4 == 0:
            assert c.checkpoint() is not None
    assert c.checkpoint() is None  # nothing new: no checkpoint
    c.close()
    return tmp_path / "secops.log", signer, anchor


def _check(path: Path, signer: LocalSigner, anchor: ListAnchor, lines: list[str] | None = None) -> Report:
    lines = path.read_text().splitlines() if lines is None else lines
    return audit(lines, checkpoints_path(path).read_text().splitlines(), anchor.items, signer.keys, collector=WHO)


def test_untouched_log_verifies_and_files_are_private(logged: Logged) -> None:
    path, signer, anchor = logged
    r = _check(path, signer, anchor)
    assert r.ok and r.head.seq == 12 and r.covered == 12, r.summary()
    assert "12 entries" in r.summary()
    for p in (path, checkpoints_path(path)):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600


def _rewrite(entry: dict[str, Any]) -> str:
    from histo.secops.chain import canonical, entry_hash
    entry["hash"] = entry_hash(entry["seq"], entry["prev"], entry["ts"], entry["event"])
    return canonical(entry).decode()


def test_changed_entry_is_named(logged: Logged) -> None:
    path, signer, anchor = logged
    lines = path.read_text().splitlines()
    e = json.loads(lines[5])
    e["event"]["n"] = 99
    edited = lines[:5] + [json.dumps(e)] + lines[6:]
    f = _check(path, signer, anchor, edited).finding
    assert f and (f.kind, f.seq, f.line) == ("changed", 6, 6)
    # the same edit with the entry's own hash recomputed: the next entry's link names it
    f = _check(path, signer, anchor, lines[:5] + [_rewrite(e)] + lines[6:]).finding
    assert f and (f.kind, f.seq) == ("changed", 6)


def test_inserted_reordered_removed_are_named(logged: Logged) -> None:
    path, signer, anchor = logged
    lines = path.read_text().splitlines()
    f = _check(path, signer, anchor, lines[:7] + [lines[2]] + lines[7:]).finding
    assert f and (f.kind, f.seq, f.line) == ("inserted", 3, 8)
    f = _check(path, signer, anchor, lines[:4] + [lines[5], lines[4]] + lines[6:]).finding
    assert f and (f.kind, f.seq) == ("reordered", 5)
    f = _check(path, signer, anchor, lines[:9] + lines[10:]).finding
    assert f and (f.kind, f.seq) == ("removed", 10)


def test_removed_tail_is_caught_by_the_anchor_even_without_local_checkpoints(logged: Logged) -> None:
    path, signer, anchor = logged
    lines = path.read_text().splitlines()
    cut = lines[:10]
    r = audit(cut, [], anchor.items, signer.keys, collector=WHO)  # local checkpoints deleted too
    assert r.finding and (r.finding.kind, r.finding.seq) == ("removed", 11)
    # without the anchor, the same cut goes unseen: that is why the anchor lives off the collector
    r = audit(cut, [], [], signer.keys, collector=WHO)
    assert r.ok and r.notes


def test_consistently_rewritten_chain_is_caught_by_a_checkpoint(logged: Logged, tmp_path: Path) -> None:
    path, signer, anchor = logged
    lines = path.read_text().splitlines()
    entries = [json.loads(x) for x in lines]
    entries.insert(5, {"event": {"kind": "forged"}, "ts": entries[4]["ts"]})
    forged = ChainLog(tmp_path / "forged.log")
    for e in entries:  # same times, chain recomputed: every link holds, only a checkpoint tells
        forged.append(e["event"], ts=e["ts"])
    forged.close()
    f = _check(path, signer, anchor, (tmp_path / "forged.log").read_text().splitlines()).finding
    assert f and f.kind == "changed" and f.seq == 5  # between checkpoints 4 and 8


def test_forged_or_rolled_back_checkpoints_are_refused(logged: Logged) -> None:
    path, signer, anchor = logged
    lines = path.read_text().splitlines()
    other = LocalSigner()  # a key that is not the collector's
    forged = other.sign_head(Head(12, "f" * 64))
    r = audit(lines, [forged], anchor.items, signer.keys, collector=WHO)
    assert r.finding and r.finding.kind == "bad_checkpoint"
    r = audit(lines, [], anchor.items + [anchor.items[0]], signer.keys, collector=WHO)
    assert r.finding and r.finding.kind == "bad_checkpoint" and "rolled back" in r.finding.message
    h, c, s = anchor.items[-1].split(".")
    r = audit(lines, [f"{h}.{c}.{s[:-4]}AAAA"], [], signer.keys, collector=WHO)
    assert r.finding and r.finding.kind == "bad_checkpoint"


def test_garbage_line_and_log_not_starting_the_chain(logged: Logged) -> None:
    path, signer, anchor = logged
    lines = path.read_text().splitlines()
    f = _check(path, signer, anchor, lines[:3] + ["not json"] + lines[3:]).finding
    assert f and (f.kind, f.line) == ("changed", 4)
    head, f = walk(lines[1:], {})
    assert f and f.kind == "removed" and f.seq == 1


def test_reopened_log_resumes_and_a_broken_one_is_not_extended(logged: Logged) -> None:
    path, signer, anchor = logged
    log = ChainLog(path)
    assert log.append({"kind": "after_restart"}).seq == 13
    log.close()
    assert walk(path.read_text().splitlines(), {})[1] is None
    text = path.read_text().replace('"n":3', '"n":4', 1)
    path.write_text(text)
    with pytest.raises(ValueError, match="entry 3"):
        ChainLog(path)


def test_events_are_redacted_and_omprog_confirmations(tmp_path: Path) -> None:
    fake_token = "hvs." + "A" * 25  # token-shaped, made here: no credential
    ev = event_of(json.dumps({"kind": "login", "detail": f"secret_id=abcdefgh1234 token={fake_token}"}))
    assert "abcdefgh1234" not in json.dumps(ev) and "hvs.AAAA" not in json.dumps(ev)
    assert event_of("sshd[12]: Failed password for root from 10.0.0.1") == {
        "msg": "sshd[12]: Failed password for root from 10.0.0.1"}
    signer, out = LocalSigner(), io.StringIO()
    c = Collector(tmp_path / "l.log", signer, None, interval=3600)
    assert c.run(io.StringIO('{"a": 1}\n\n{"b": 2}\n'), out) == 2
    assert out.getvalue() == "OK\nOK\nOK\n"  # ready, then one per stored line
    r = audit((tmp_path / "l.log").read_text().splitlines(),
              checkpoints_path(tmp_path / "l.log").read_text().splitlines(), [], signer.keys)
    assert r.ok and r.covered == 2  # closing signs the last head


def test_one_writer_at_a_time_and_the_second_resumes_from_the_firsts_last_entry(tmp_path: Path) -> None:
    """Two collectors on one record (rsyslog started a new one before the old exited) once forked it:
    the second waits for the first, then resumes its chain; if the first does not exit, RecordBusy."""
    import threading

    from histo.secops.chain import ChainLog, RecordBusy, walk
    path = tmp_path / "record.log"
    first = ChainLog(path)
    first.append({"n": 1})
    with pytest.raises(RecordBusy):
        ChainLog(path, wait=0.3)
    got: list[ChainLog] = []
    second = threading.Thread(target=lambda: got.append(ChainLog(path, wait=10)))
    second.start()
    first.append({"n": 2})  # still the only writer: the second waits
    first.close()
    second.join(10)
    (log,) = got
    assert log.head.seq == 2
    log.append({"n": 3})
    log.close()
    with path.open(encoding="utf-8") as f:
        head, finding = walk(f, {})
    assert finding is None and head.seq == 3
