"""Audit lines: JSON, private, rotated, append-only, and never a token or a secret."""
import json
import os
import stat
import string

import pytest

from histo.edge.audit import AuditLog, redact

JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
# Token-shaped fixtures, made here rather than written out: no credential, only the shapes redaction must catch
# (a Vault service token "hvs." and a legacy one "s.", each followed by 20+ token characters).
FAKE_VAULT_TOKENS = ["hvs." + string.ascii_letters[:30], "s." + string.ascii_lowercase[:24]]


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_json_line_per_decision_with_every_field(tmp_path):
    log = AuditLog(tmp_path / "audit.log")
    log.record(who="alice", role="uploader", what="POST /api/v1/jobs", where="192.0.2.7", decision="allow",
               why="job 1")
    log.record(who=None, role=None, what="internal:result", where="spiffe://histo.internal/worker/w1",
               decision="deny", why="not a worker")
    a, b = lines(tmp_path / "audit.log")
    assert set(a) == {"ts", "who", "role", "what", "where", "decision", "why"}
    assert a["ts"].endswith("Z") and "T" in a["ts"]
    assert (a["who"], a["decision"]) == ("alice", "allow")
    assert (b["who"], b["role"], b["where"]) == ("-", "-", "spiffe://histo.internal/worker/w1")
    log.close()


def test_file_is_private_even_with_a_loose_umask_and_after_rotation(tmp_path):
    old = os.umask(0o022)
    try:
        log = AuditLog(tmp_path / "a" / "audit.log", max_bytes=300, backups=2)
        for i in range(40):
            log.record(who="u", role="viewer", what=f"GET /api/v1/cluster {i}", where="-", decision="allow", why="")
        log.close()
    finally:
        os.umask(old)
    files = sorted((tmp_path / "a").iterdir())
    assert [f.name for f in files] == ["audit.log", "audit.log.1", "audit.log.2"]  # rotated, bounded
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        assert all(line["decision"] == "allow" for line in lines(f))
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700


def test_existing_file_is_appended_to_and_tightened(tmp_path):
    path = tmp_path / "audit.log"
    path.write_text('{"earlier":1}\n')
    path.chmod(0o644)
    log = AuditLog(path)
    log.record(who="x", role="admin", what="revoke token", where="-", decision="allow", why="jti j")
    log.close()
    assert path.read_text().startswith('{"earlier":1}\n') and len(path.read_text().splitlines()) == 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("secret", [JWT, "Bearer " + JWT, "bearer abcdefghijklmnop",
                                    *FAKE_VAULT_TOKENS])
def test_tokens_never_reach_the_file(tmp_path, secret):
    log = AuditLog(tmp_path / "audit.log")
    log.record(who="-", role="-", what=f"GET /api/v1/jobs?t={secret}", where="-", decision="deny",
               why=f"bad token {secret}")
    log.close()
    text = (tmp_path / "audit.log").read_text()
    core = secret.split()[-1]
    assert core not in text and "[redacted]" in text
    assert json.loads(text)["decision"] == "deny"  # still valid JSON


def test_redact_keeps_ordinary_text_and_the_names_of_secrets():
    assert redact("plain words") == "plain words"
    assert redact("authentication failed: bad_signature") == "authentication failed: bad_signature"
    assert redact("invalid token: expired") == "invalid token: expired"
    assert redact("spiffe://histo.internal/master/master1") == "spiffe://histo.internal/master/master1"
    assert redact("password=hunter2&x=1") == "password=[redacted]&x=1"
    assert redact('{"secret_id": "abc-123"}') == '{"secret_id": "[redacted]"}'
    assert redact("Authorization: Bearer abc.def.ghi-jkl") == "Authorization: [redacted]"


def test_unknown_decision_refused_and_fields_capped(tmp_path):
    log = AuditLog(tmp_path / "audit.log")
    with pytest.raises(ValueError):
        log.record(who="a", role="b", what="c", where="d", decision="maybe", why="")
    log.deny(who="a", role="b", what="GET /" + "x" * 5000, where="d", why="too long")
    log.close()
    assert len(lines(tmp_path / "audit.log")[0]["what"]) == 1000


def test_two_logs_never_share_a_file(tmp_path):
    a, b = AuditLog(tmp_path / "a.log"), AuditLog(tmp_path / "b.log")
    a.allow(who="a", role="admin", what="x", where="-", why="")
    b.allow(who="b", role="admin", what="x", where="-", why="")
    a.close(), b.close()
    assert [e["who"] for e in lines(tmp_path / "a.log")] == ["a"]
    assert [e["who"] for e in lines(tmp_path / "b.log")] == ["b"]
