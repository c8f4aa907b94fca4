"""The `histo` command: readable one-line failures, and the idempotent helpers the roles call."""
import json
import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "histo.cli", *args], capture_output=True, text=True, timeout=60)


def test_vault_tls_is_idempotent_and_private(tmp_path):
    args = ("vault-tls", "--dir", str(tmp_path / "tls"), "--hostname", "vault1", "--address", "192.168.56.10")
    first, second = run(*args), run(*args)
    assert json.loads(first.stdout)["changed"] is True and json.loads(second.stdout)["changed"] is False
    assert oct((tmp_path / "tls" / "key.pem").stat().st_mode & 0o777) == "0o600"


def test_bad_input_is_one_readable_line():
    out = run("master", "--config", "/nonexistent/config.json")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "cannot read config" in out.stderr
