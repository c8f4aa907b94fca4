"""A service's AppRole secret_id, replaced by the service itself before it expires.

Secret zero stays with the provisioner: the first secret_id of a host only ever arrives
response-wrapped. After that the host's own token may mint further secret_ids for its own AppRole
and nobody else's, with no parameter at all (its policy denies every one), so each inherits the
role's address binding (secret_id_bound_cidrs) and TTL: a host can renew, never widen, its identity.
The new secret_id is written (0600, atomically) and proven by a login before the old one is
destroyed, so a crash at any step leaves a usable secret_id on disk."""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..files import write_private
from .client import ServiceVault, VaultAuthError

log = logging.getLogger("histo.vault.secretid")
RENEW_FRACTION = 2 / 3  # renew once this much of the secret_id's life is spent (margin: the last third)


@dataclass(frozen=True)
class SecretIdInfo:
    accessor: str
    ttl: int  # seconds of life at creation; 0 = never expires
    expires: float  # epoch seconds (Vault's clock); 0 when ttl is 0

    def due(self, now: float, fraction: float = RENEW_FRACTION) -> bool:
        return self.ttl > 0 and now >= self.expires - (1 - fraction) * self.ttl


def _epoch(stamp: str) -> float:
    """Vault's RFC 3339 time (nanoseconds, 'Z') as epoch seconds; datetime takes microseconds at most."""
    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", stamp).replace("Z", "+00:00")
    return datetime.fromisoformat(trimmed).timestamp()


def role_path(vault: ServiceVault) -> str:
    return f"auth/approle/role/histo-{vault.host}"


class SecretIdKeeper:
    """Call `renew_if_needed` periodically (the service's Vault upkeep loop). It reads the stored
    secret_id's expiry from Vault once, then only again after a renewal."""

    def __init__(self, vault: ServiceVault, fraction: float = RENEW_FRACTION) -> None:
        self.vault = vault
        self.fraction = fraction
        self.info: SecretIdInfo | None = None
        self.renewals = 0
        self._stale_accessor = ""  # the replaced secret_id, destroyed once Vault answers

    def _stored(self) -> str:
        return (self.vault.creds / "secret_id").read_text().strip()

    def lookup(self, secret_id: str) -> SecretIdInfo:
        resp: Any = self.vault.call(self.vault.client.write_data, f"{role_path(self.vault)}/secret-id/lookup",
                                    data={"secret_id": secret_id})
        if not resp or "data" not in resp:  # Vault answers 204 for a secret_id it does not know
            raise VaultAuthError("the stored secret_id is unknown to Vault (expired or destroyed)")
        data = resp["data"]
        ttl = int(data.get("secret_id_ttl") or 0)
        return SecretIdInfo(accessor=str(data["secret_id_accessor"]), ttl=ttl,
                            expires=_epoch(str(data["expiration_time"])) if ttl else 0.0)

    def renew_if_needed(self, now: float | None = None) -> bool:
        """True when a new secret_id replaced the stored one. Raises VaultUnavailable while Vault is
        away (the caller retries on its next tick: the margin is a third of the secret_id's life)."""
        with self.vault.lock:
            if self._stale_accessor:
                self._destroy(self._stale_accessor)
            if self.info is None:
                self.info = self.lookup(self._stored())
            if not self.info.due(time.time() if now is None else now, self.fraction):
                return False
            return self._renew()

    def _renew(self) -> bool:
        resp: Any = self.vault.call(self.vault.client.write_data, f"{role_path(self.vault)}/secret-id")
        fresh, old = str(resp["data"]["secret_id"]), self.info
        write_private(self.vault.creds / "secret_id", fresh + "\n")
        self.vault.login()  # proves the new one (from this address) before the old one goes
        self.info = self.lookup(fresh)
        self.renewals += 1
        log.info("secret_id renewed (accessor %s, expires in %ds)", self.info.accessor,
                 max(0, int(self.info.expires - time.time())))
        if old is not None:
            self._stale_accessor = old.accessor
            self._destroy(old.accessor)
        return True

    def _destroy(self, accessor: str) -> None:
        try:
            self.vault.call(self.vault.client.write_data, f"{role_path(self.vault)}/secret-id-accessor/destroy",
                            data={"secret_id_accessor": accessor})
        except VaultAuthError:  # already gone (expired meanwhile): nothing left to destroy
            pass
        self._stale_accessor = ""
