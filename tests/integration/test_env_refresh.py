"""`histo env refresh` against a real OpenBao (issue 16 item 1): the env file's API tokens and the
operator's issuer and receipt-verifier tokens are replaced at 2/3 of their life with the provisioner
token, never earlier; the new tokens verify with the transit key, every other line of the file stays, files stay 0600; a
refresher without a provisioner token and with a dead issuer token says so in one line."""
from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from histo.edge.tokens import TokenVerifier, vault_public_keys
from histo.envfile import write_env
from histo.envrefresh import Refresher, read_env
from histo.vault.secretzero import operator_token, retire_root, token_valid
from histo.vault.setup import ISSUER_TOKEN_ROLE, VERIFIER_TOKEN_ROLE

from .vaultfix import NET, configure, running_bao


def test_env_tokens_and_issuer_token_renew_at_two_thirds(tmp_path: Path) -> None:
    with running_bao(tmp_path / "vault", f"{NET}.91") as bao:
        configure(bao)
        retire_root(bao.client(), bao.init_path, tmp_path / "provisioner-token")
        prov = bao.client((tmp_path / "provisioner-token").read_text().strip())
        issuer = operator_token(prov, ISSUER_TOKEN_ROLE, "9s", "test-issuer")
        (tmp_path / "issuer-token").write_text(issuer + "\n")
        verifier_token = operator_token(prov, VERIFIER_TOKEN_ROLE, "9s", "test-verifier")
        (tmp_path / "receipt-verifier-token").write_text(verifier_token + "\n")
        env_path = tmp_path / "env"
        write_env(env_path, ["https://127.0.0.1:1"], tmp_path / "ca.pem", bao.client(issuer), 12,
                  {"HISTO_PROFILE": "test"})
        before = read_env(env_path)
        cfg = tmp_path / "refresh.json"
        cfg.write_text(json.dumps({"env": str(env_path), "issuer_token_file": str(tmp_path / "issuer-token"),
                                   "provisioner_token_file": str(tmp_path / "provisioner-token"),
                                   "verifier_token_file": str(tmp_path / "receipt-verifier-token"),
                                   "vault_url": bao.url, "vault_ca": str(bao.ca_path)}))
        r = Refresher.from_config(cfg)
        # fresh: nothing to do (a renewal costs a Vault round trip and a file replace)
        assert r.once() == {"issuer_renewed": False, "verifier_renewed": False, "env_renewed": False}
        assert read_env(env_path) == before

        time.sleep(6.5)  # past 2/3 of the issuer token's 9 s and of the env tokens' 12 s... for the issuer
        out = r.once(now=time.time() + 2.0)  # ...and the env tokens at 8.5 s of 12
        assert out == {"issuer_renewed": True, "verifier_renewed": True, "env_renewed": True}
        new_verifier = (tmp_path / "receipt-verifier-token").read_text().strip()
        assert new_verifier != verifier_token and not token_valid(bao.client(verifier_token))
        # the replacement holds the receipt-verifier policy, and only it (not the issuer's)
        assert bao.client(new_verifier).auth.token.lookup_self()["data"]["policies"] == \
            ["default", "histo-receipt-verifier"]
        new_issuer = (tmp_path / "issuer-token").read_text().strip()
        assert new_issuer != issuer and token_valid(bao.client(new_issuer))
        assert not token_valid(bao.client(issuer))  # the old one revoked, not left to lapse
        after = read_env(env_path)
        assert {k: v for k, v in after.items() if not k.startswith("HISTO_TOKEN_")} == \
               {k: v for k, v in before.items() if not k.startswith("HISTO_TOKEN_")}
        verifier = TokenVerifier(lambda: vault_public_keys(prov))
        for role in ("admin", "uploader", "viewer"):
            token = after[f"HISTO_TOKEN_{role.upper()}"]
            assert token != before[f"HISTO_TOKEN_{role.upper()}"]
            assert verifier.verify(token).role == role
        for f in (env_path, tmp_path / "issuer-token", tmp_path / "receipt-verifier-token"):
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f

        # no provisioner and a dead issuer token: one readable line, exit 1, the env file untouched
        (tmp_path / "issuer-token").write_text(issuer + "\n")
        lonely = tmp_path / "lonely.json"
        lonely.write_text(json.dumps({**json.loads(cfg.read_text()), "provisioner_token_file": None}))
        proc = subprocess.run([sys.executable, "-m", "histo.cli", "env", "refresh", "--config", str(lonely)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
        assert "no longer valid" in proc.stderr and "Traceback" not in proc.stderr
        assert read_env(env_path) == after


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    for text in ("{", json.dumps({"env": "x"})):
        (tmp_path / "c.json").write_text(text)
        proc = subprocess.run([sys.executable, "-m", "histo.cli", "env", "refresh",
                               "--config", str(tmp_path / "c.json")], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1 and proc.stderr.startswith("histo: env refresh:"), proc.stderr
        assert proc.stderr.count("\n") == 1


@pytest.fixture(autouse=True)
def _no_vault_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """hvac falls back to VAULT_TOKEN: every client here must use only the token file it was given."""
    monkeypatch.delenv("VAULT_TOKEN", raising=False)


def test_background_refresher_starts_once_and_stops(tmp_path: Path) -> None:
    """What make up / make down do on the controller: one process per state folder, its config 0600
    beside it, gone after --stop (the teardown test then finds no process of the cluster)."""
    from histo import envrefresh, procs
    state = tmp_path / "state"
    state.mkdir()
    assert envrefresh.start(state, "https://127.0.0.1:9", str(tmp_path / "ca.pem"), interval=60) is True
    sdir = state / "env-refresh"
    marker = f"--config {sdir / 'config.json'}"
    pid = procs.alive(sdir / "pid", marker)
    assert pid and stat.S_IMODE((sdir / "config.json").stat().st_mode) == 0o600
    assert envrefresh.start(state, "https://127.0.0.1:9", str(tmp_path / "ca.pem")) is False  # already running
    assert procs.alive(sdir / "pid", marker) == pid
    proc = subprocess.run([sys.executable, "-m", "histo.cli", "env", "refresh", "--stop", str(state)],
                          capture_output=True, text=True, timeout=60)
    assert json.loads(proc.stdout) == {"stopped": True}
    assert procs.alive(sdir / "pid", marker) is None
