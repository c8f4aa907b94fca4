"""The operator's credentials on the controller, kept alive without a human (`histo env refresh`).

Four credentials there have a lifetime: the API tokens in the env file (1 h), the issuer token that
signs them and the receipt-verifier token (72 h each, not renewable by design: token roles with a
fixed life) and the provisioner token (periodic, 768 h). One pass of `Refresher.once` renews what is at 2/3 of its life:

- the provisioner token renews itself (renew-self resets its period);
- the issuer and receipt-verifier tokens are replaced through their token roles with the provisioner
  token (the new one is written 0600 before the old one is revoked, so a reader never meets a
  missing file);
- the env file's tokens are all issued again, with the life they had, and the file is replaced
  atomically (0600), every other line kept.

Vault away: the pass fails with one logged line and the next pass tries again; the margin is the last
third of each life (20 min of the env file's hour). In a loop (`--loop S`) nothing is fatal."""
from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac

from .edge.tokens import issue_token
from .envfile import ACCOUNTS
from .files import write_private

log = logging.getLogger("histo.envrefresh")
FRACTION = 2 / 3
PREFIX = "HISTO_TOKEN_"
DIRNAME = "env-refresh"  # <state>/env-refresh: the background refresher's config, pid and log


def _claims(token: str) -> dict[str, Any]:
    """The claims of one of our own tokens, unverified (we only read its times to plan a renewal)."""
    try:
        part = token.split(".")[1]
        doc = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def read_env(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            out[key] = value
    return out


def _times(token: str) -> tuple[float, float] | None:
    """(iat, exp) of one of our tokens, None when they cannot be read."""
    c = _claims(token)
    iat, exp = c.get("iat"), c.get("exp")
    if not isinstance(iat, (int, float)) or not isinstance(exp, (int, float)) or exp <= iat:
        return None
    return float(iat), float(exp)


def env_due(env: dict[str, str], now: float, fraction: float = FRACTION) -> bool:
    """Any token of the file at `fraction` of its life, or one that cannot be read."""
    for key, token in env.items():
        if key.startswith(PREFIX):
            t = _times(token)
            if t is None or now >= t[0] + fraction * (t[1] - t[0]):
                return True
    return False


def token_ttl(env: dict[str, str], default: int = 3600) -> int:
    lives = [int(t[1] - t[0]) for k, v in env.items() if k.startswith(PREFIX) and (t := _times(v)) is not None]
    return max(lives) if lives else default


@dataclass
class Refresher:
    env_path: Path
    issuer_file: Path
    vault_url: str
    vault_ca: str
    provisioner_file: Path | None = None
    verifier_file: Path | None = None
    fraction: float = FRACTION

    def _client(self, token: str) -> hvac.Client:
        from .vault.failover import failover_client
        return failover_client(self.vault_url, verify=self.vault_ca, token=token, timeout=10)

    def _remaining(self, client: hvac.Client) -> tuple[int, int] | None:
        """(ttl left, creation ttl) of the client's token, None when it is no longer valid."""
        from hvac.exceptions import Forbidden, InvalidRequest
        try:
            data = client.auth.token.lookup_self()["data"]
        except (Forbidden, InvalidRequest):
            return None
        return int(data.get("ttl") or 0), int(data.get("creation_ttl") or 0)

    def provisioner(self) -> hvac.Client | None:
        if self.provisioner_file is None or not self.provisioner_file.exists():
            return None
        prov = self._client(self.provisioner_file.read_text().strip())
        left = self._remaining(prov)
        if left is None:
            log.warning("the provisioner token is no longer valid: `make provision` with a root token makes a new one")
            return None
        ttl, life = left
        if life and ttl <= (1 - self.fraction) * life:
            prov.auth.token.renew_self()
        return prov

    def issuer(self, prov: hvac.Client | None, now: float) -> tuple[hvac.Client, bool]:
        from .vault.setup import ISSUER_TOKEN_ROLE
        return self._replace(prov, self.issuer_file, ISSUER_TOKEN_ROLE, "histo-issuer")

    def verifier(self, prov: hvac.Client | None) -> bool:
        """The receipt-verifier token (the same kind of operator token: a token role, a fixed life)."""
        from .vault.setup import VERIFIER_TOKEN_ROLE
        if self.verifier_file is None or not self.verifier_file.exists():
            return False
        return self._replace(prov, self.verifier_file, VERIFIER_TOKEN_ROLE, "histo-receipt-verifier")[1]

    def _replace(self, prov: hvac.Client | None, path: Path, role: str, display: str) -> tuple[hvac.Client, bool]:
        """The operator token in `path` replaced through its token role at 2/3 of its life: (a client
        with the current one, whether it was replaced now)."""
        from .vault.secretzero import operator_token
        old = path.read_text().strip()
        current = self._client(old)
        left = self._remaining(current)
        if left is not None and (not left[1] or left[0] > (1 - self.fraction) * left[1]):
            return current, False
        if prov is None:
            if left is None:
                raise RuntimeError(f"the {display} token in {path} is no longer valid and no provisioner "
                                   "token is at hand to replace it")
            return current, False  # still valid: the env file can be refreshed meanwhile
        life = left[1] if left else 72 * 3600
        new = operator_token(prov, role, f"{life}s", display)
        write_private(path, new + "\n")
        if left is not None:
            try:
                current.auth.token.revoke_self()
            except Exception:  # noqa: BLE001 - the old one expires by itself anyway
                log.info("the previous %s token could not be revoked now; it expires by itself", display)
        log.info("%s token replaced (it was at 2/3 of its life)", display)
        return self._client(new), True

    def env(self, signer: hvac.Client, now: float) -> bool:
        env = read_env(self.env_path)
        if not env_due(env, now, self.fraction):
            return False
        ttl = token_ttl(env)
        for role, subject in ACCOUNTS.items():
            env[f"{PREFIX}{role.upper()}"] = issue_token(signer, role=role, subject=subject, ttl_seconds=ttl)
        write_private(self.env_path, "".join(f"{k}={v}\n" for k, v in env.items()))
        log.info("env file tokens issued again (%d s each)", ttl)
        return True

    def once(self, now: float | None = None) -> dict[str, bool]:
        now = time.time() if now is None else now
        prov = self.provisioner()
        signer, issuer_renewed = self.issuer(prov, now)
        return {"issuer_renewed": issuer_renewed, "verifier_renewed": self.verifier(prov),
                "env_renewed": self.env(signer, now)}

    @classmethod
    def from_config(cls, path: Path) -> Refresher:
        cfg = json.loads(Path(path).read_text())
        prov, verifier = cfg.get("provisioner_token_file"), cfg.get("verifier_token_file")
        return cls(Path(cfg["env"]), Path(cfg["issuer_token_file"]), str(cfg["vault_url"]), str(cfg["vault_ca"]),
                   Path(prov) if prov else None, Path(verifier) if verifier else None)


def start(state: Path, vault_url: str, vault_ca: str, interval: float = 10.0) -> bool:
    """The refresher of a state folder (`.histo/local`, `.histo/vagrant`) as a background process, its
    config, pid and log in `<state>/env-refresh` (0700); started once (True when it started now)."""
    import sys

    from . import procs
    from .files import private_dir
    state = state.resolve()
    sdir = private_dir(state / DIRNAME)
    config = sdir / "config.json"
    write_private(config, json.dumps({"env": str(state / "env"), "issuer_token_file": str(state / "issuer-token"),
                                      "provisioner_token_file": str(state / "provisioner-token"),
                                      "verifier_token_file": str(state / "receipt-verifier-token"),
                                      "vault_url": vault_url, "vault_ca": str(Path(vault_ca).resolve())},
                                     indent=1) + "\n")
    if procs.alive(sdir / "pid", f"--config {config}"):
        return False
    procs.spawn([sys.executable, "-m", "histo.cli", "env", "refresh", "--config", str(config),
                 "--loop", f"{interval:g}"], sdir / "service.log", sdir / "pid")
    return True


def stop(state: Path) -> bool:
    from . import procs
    sdir = state.resolve() / DIRNAME
    return procs.stop(sdir / "pid", f"--config {sdir / 'config.json'}")


def run(config: Path, interval: float | None) -> dict[str, bool] | None:
    r = Refresher.from_config(config)
    if interval is None:
        return r.once()
    while True:
        try:
            r.once()
        except Exception as exc:  # noqa: BLE001 - Vault away, a file being replaced: try again next pass
            # the message says what to do (no provisioner token, Vault away); never a token (none is in one)
            log.warning("env refresh pass failed (retrying in %.0fs): %s: %s", interval, type(exc).__name__,
                        str(exc)[:200])
        time.sleep(interval)
