"""Every credential lifetime of histo in one place, and the one switch that compresses them all.

`standard` is what a deployment runs; `compressed` puts every lifetime in seconds to minutes so
that `make local LIFETIMES=compressed`, the soak and the tests run the cluster through many
lifetimes in minutes. Each renewer acts at 2/3 of a life, so the margin is always its last third."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .durations import parse_duration


@dataclass(frozen=True)
class Lifetimes:
    cert_ttl: str  # a master's or worker's certificate (renewed in place at 2/3)
    leaf_max_ttl: str  # the PKI roles' ceiling for any host certificate
    zk_cert_ttl: str  # a ZooKeeper server's certificates (renewed by a restart: zk/renew.py)
    token_ttl: str  # a service's Vault token (renewed at 2/3)
    token_max_ttl: str  # ... and its ceiling, after which the service logs in again
    secret_id_ttl: str  # an AppRole secret_id (replaced by the service itself at 2/3)
    issuer_max_ttl: str  # the operator's issuer and receipt-verifier tokens
    api_token_ttl: str  # the env file's API tokens
    signing_key_rotation: str  # Vault's own rotation of every transit key (its floor is 1 h)
    vault_listener_ttl: str  # Vault's own listener certificate (vault/listener.py renews it at 2/3)

    def spec(self) -> dict[str, str]:
        """The keys vault/setup.py's spec takes."""
        return {k: getattr(self, k) for k in ("leaf_max_ttl", "token_ttl", "token_max_ttl", "secret_id_ttl",
                                              "issuer_max_ttl", "signing_key_rotation",
                                              "vault_listener_ttl")}

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


PROFILES = {
    "standard": Lifetimes(cert_ttl="1h", leaf_max_ttl="24h", zk_cert_ttl="24h", token_ttl="1h",
                          token_max_ttl="24h", secret_id_ttl="720h", issuer_max_ttl="72h", api_token_ttl="1h",
                          signing_key_rotation="720h", vault_listener_ttl="720h"),
    # Each fits inside the one that bounds it (a certificate inside leaf_max_ttl, a token inside
    # token_max_ttl), and every margin (a third) outlasts Vault stopped for a minute; a token may
    # lapse meanwhile, as the service logs in again with its secret_id.
    # The operator's tokens (issuer 9 min, API 5 min) renew at least three times in a 20-minute soak.
    "compressed": Lifetimes(cert_ttl="4m", leaf_max_ttl="15m", zk_cert_ttl="6m", token_ttl="60s",
                            token_max_ttl="5m", secret_id_ttl="6m", issuer_max_ttl="9m", api_token_ttl="5m",
                            signing_key_rotation="1h", vault_listener_ttl="6m"),
}


class LifetimesError(ValueError):
    """An unknown profile name."""


def profile(name: str) -> Lifetimes:
    try:
        return PROFILES[name]
    except KeyError:
        raise LifetimesError(f"unknown lifetimes profile {name!r} (choose {', '.join(PROFILES)})") from None


def seconds(value: str) -> int:
    return int(parse_duration(value))
