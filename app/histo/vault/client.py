"""A service's own Vault session: AppRole login (unwrapping its secret_id on first start), its
certificate, its ZooKeeper credentials, and keeping its token alive.

The secret_id, once unwrapped, is kept 0600 in the service's credentials folder: it is bound to
the host's address, so a restarted service logs in again by itself while a copy is useless
anywhere else. Every failure surfaces as VaultUnavailable (down, sealed, unreachable: retry later)
or VaultAuthError (refused: a configuration or security problem); messages never carry a token.

`url` may name every node of a raft cluster, comma-separated: each call goes to the node that
answered last and fails over to the others, riding through an election (vault/failover.py)."""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import hvac
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hvac import exceptions as hx
from requests.adapters import HTTPAdapter

from .. import TRUST_DOMAIN
from ..files import write_private as _write_private
from ..tls.identity import spiffe_id
from .failover import failover_client

# Vault side trouble (retry later) versus a refusal (our credentials or request are not accepted).
_UNAVAILABLE = (hx.VaultDown, hx.VaultNotInitialized, hx.InternalServerError, hx.BadGateway,
                hx.RateLimitExceeded, hx.UnexpectedError)
_REFUSED = (hx.Unauthorized, hx.Forbidden, hx.InvalidRequest, hx.InvalidPath, hx.PreconditionFailed)


EXPIRED_MARGIN = 1.0  # seconds: a token this close to its end is not presented (clocks, the request's own time)


class VaultUnavailable(RuntimeError):
    """Vault cannot be reached, is sealed or failed: try again later."""


class VaultAuthError(RuntimeError):
    """Vault refused our credentials or our request."""


@dataclass
class CertBundle:
    cert_pem: str
    chain_pem: str  # issuing CA first, then up to and including the root
    key_pem: str  # PKCS#8
    not_before: datetime
    not_after: datetime
    serial: str


class _SourceAddressAdapter(HTTPAdapter):
    """Binds outgoing connections to the service's own address, which Vault's CIDR bindings check
    (on a host with several addresses the kernel would otherwise pick one)."""

    def __init__(self, source: str, **kw: Any) -> None:
        self._source = source
        super().__init__(**kw)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self._source, 0)
        super().init_poolmanager(*args, **kwargs)


def _reason(exc: Exception) -> str:
    """Vault's own error text, without the request URL hvac appends; short."""
    errors = getattr(exc, "errors", None)
    text = "; ".join(str(e) for e in errors) if errors else str(exc)
    text = re.sub(r",? on \w+ https?://\S+", "", text).replace("\n", " ").strip()
    return text[:160] or type(exc).__name__


def _pem_blocks(pem: str) -> list[str]:
    end = "-----END CERTIFICATE-----"
    return [b.strip() + "\n" + end for b in pem.split(end) if "BEGIN CERTIFICATE" in b]


class ServiceVault:
    def __init__(self, url: str, ca_path: str, host: str, role: str, creds_dir: Path,
                 source_address: str | None = None, trust_domain: str = TRUST_DOMAIN,
                 extra_ip_sans: tuple[str, ...] = ()) -> None:
        self.url, self.ca_path, self.host, self.role = url, str(ca_path), host, role
        self.creds = Path(creds_dir)
        self.source_address, self.trust_domain = source_address, trust_domain
        self.extra_ip_sans = extra_ip_sans  # a master's certificate also names the public address ("": none)
        self._client = self._new_client()
        self._lock = threading.RLock()
        self.lock = self._lock  # shared with vault/secretid.py: one Vault conversation at a time
        self._token_expires = 0.0
        self._login_ttl = 0  # the token's full life at login: renewal thresholds are fractions of it
        self._in_login = False  # login's own call must not log in first
        self._issuer_pems: dict[str, str] = {}  # PKI issuer id -> its certificate, which never changes

    def _new_client(self, token: str | None = None) -> hvac.Client:
        session = requests.Session()
        session.verify = self.ca_path  # hvac takes a custom session's verify over its own argument
        session.trust_env = False  # no proxy from the environment: Vault must see our own address
        if self.source_address:
            session.mount("https://", _SourceAddressAdapter(self.source_address))
            session.mount("http://", _SourceAddressAdapter(self.source_address))
        return failover_client(self.url, verify=self.ca_path, token=token, session=session, timeout=10)

    @property
    def client(self) -> hvac.Client:
        """The session's hvac client, for every caller (this class, secretid.py, and the data keys,
        receipts and tokens that call transit through it). A token past its life (Vault was away when it
        was due) is never presented: it would only be refused — a denial the SecOps rules cannot tell
        from a probe with a stale token — so a login comes first. Another thread logging in meanwhile is
        waited for (the lock), then the token is fresh; login's own call skips the check. A login that
        fails (Vault away, a standby answering 503 during an election, our secret_id refused) raises here,
        as the caller's own call would have: the expired token is not presented even once."""
        if self._login_ttl and self._token_expires - time.time() <= EXPIRED_MARGIN:
            with self._lock:
                if not self._in_login and self._token_expires - time.time() <= EXPIRED_MARGIN:
                    self.login()  # VaultUnavailable or VaultAuthError: what the caller's call would say
        return self._client

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except requests.RequestException as exc:
            raise VaultUnavailable(f"Vault unreachable ({type(exc).__name__})") from None
        except hx.VaultDown as exc:
            raise VaultUnavailable(f"Vault is sealed or down: {_reason(exc)}") from None
        except _UNAVAILABLE as exc:
            raise VaultUnavailable(f"Vault failed: {_reason(exc)}") from None
        except _REFUSED as exc:
            raise VaultAuthError(f"Vault refused: {_reason(exc)}") from None
        except hx.VaultError as exc:
            raise VaultAuthError(f"Vault error: {_reason(exc)}") from None

    call = _call  # the same error mapping for the modules beside this one (secretid.py)

    # -- login ----------------------------------------------------------------------------------
    def _read_cred(self, name: str) -> str:
        try:
            return (self.creds / name).read_text().strip()
        except OSError:
            raise VaultAuthError(f"no {name} in {self.creds} (provision this host)") from None

    def _unwrap_secret_id(self) -> str:
        """Unwrap secret_id.wrap once, keep the secret_id (0600), delete the wrapping token."""
        wrap_token = self._read_cred("secret_id.wrap")
        intercepted = VaultAuthError("wrapped secret_id was already used or expired — possible interception")
        anon = self._new_client()
        try:
            # Look before unwrapping: a token that wraps something else (a substituted delivery) is refused.
            info = anon.write_data("sys/wrapping/lookup", data={"token": wrap_token})["data"]
        except (requests.RequestException, *_UNAVAILABLE) as exc:
            raise VaultUnavailable(f"Vault unreachable or sealed ({type(exc).__name__})") from None
        except hx.VaultError:
            raise intercepted from None
        expected = f"auth/approle/role/histo-{self.host}/secret-id"
        if info.get("creation_path") != expected:
            raise VaultAuthError("wrapped secret_id does not come from this host's AppRole — possible tampering")
        try:
            resp = self._new_client(token=wrap_token).sys.unwrap()
        except (requests.RequestException, *_UNAVAILABLE) as exc:
            raise VaultUnavailable(f"Vault unreachable or sealed ({type(exc).__name__})") from None
        except hx.VaultError:
            raise intercepted from None
        secret_id = resp["data"]["secret_id"]
        _write_private(self.creds / "secret_id", secret_id + "\n")
        (self.creds / "secret_id.wrap").unlink(missing_ok=True)  # single use anyway: leave nothing behind
        return secret_id

    def _secret_id(self) -> str:
        if (self.creds / "secret_id").exists():
            return self._read_cred("secret_id")
        return self._unwrap_secret_id()

    def login(self) -> None:
        """AppRole login with role_id and the stored (or freshly unwrapped) secret_id."""
        with self._lock:
            role_id = self._read_cred("role_id")
            self._in_login = True
            sent = time.time()  # Vault starts the token's life at or after this: never count from later
            try:
                resp = self._call(self.client.auth.approle.login, role_id=role_id, secret_id=self._secret_id(),
                                  use_token=True)
            finally:
                self._in_login = False
            self._login_ttl = int(resp["auth"]["lease_duration"])
            self._token_expires = sent + self._login_ttl

    # -- token upkeep ----------------------------------------------------------------------------
    def renew_token(self) -> None:
        with self._lock:
            sent = time.time()
            resp = self._call(self.client.auth.token.renew_self)
            self._token_expires = sent + int(resp["auth"]["lease_duration"])

    def token_ttl_remaining(self) -> int:
        return max(0, int(self._token_expires - time.time()))

    def renew_if_needed(self, fraction: float = 2 / 3) -> None:
        """Call periodically. Renews once `fraction` of the token's life is spent; logs in again
        with the stored secret_id when the token is gone or can no longer be renewed far enough
        (token_max_ttl reached). Also a liveness probe: raises VaultUnavailable while Vault is away."""
        with self._lock:
            if not self.client.token or self.token_ttl_remaining() <= 0:
                self.login()
                return
            threshold = (1 - fraction) * self._login_ttl
            try:
                if self.token_ttl_remaining() > threshold:
                    sent = time.time()
                    ttl = self._call(self.client.auth.token.lookup_self)["data"]["ttl"]
                    self._token_expires = sent + int(ttl)  # Vault's clock, not our guess
                    return
                self.renew_token()
            except VaultAuthError:  # revoked or expired behind our back
                self.login()
                return
            if self.token_ttl_remaining() <= threshold:  # renewal capped by token_max_ttl
                self.login()

    # -- what a service reads ------------------------------------------------------------------------
    def issue_cert(self, ttl: str) -> CertBundle:
        params = {"common_name": f"{self.host}.{self.trust_domain}", "alt_names": self.host,
                  "uri_sans": spiffe_id(self.role, self.host, self.trust_domain), "ttl": ttl,
                  "format": "pem", "private_key_format": "pkcs8"}
        sans = [a for a in (self.source_address, *self.extra_ip_sans) if a]
        if sans:
            params["ip_sans"] = ",".join(sans)
        data = self._call(self.client.write_data, f"pki_int/issue/host-{self.host}", data=params)["data"]
        cert = x509.load_pem_x509_certificate(data["certificate"].encode())
        chain = [c.strip() for c in (data.get("ca_chain") or [data["issuing_ca"]])]
        last = x509.load_pem_x509_certificate(chain[-1].encode())
        if last.issuer != last.subject:  # chain stops below the root: complete it
            chain += [b for b in _pem_blocks(self.ca_chain_pem()) if b not in chain]
        key_pem = data["private_key"]
        if "BEGIN PRIVATE KEY" not in key_pem:  # a server that ignored private_key_format
            key = serialization.load_pem_private_key(key_pem.encode(), None)
            key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
        return CertBundle(cert_pem=data["certificate"].strip() + "\n", chain_pem="\n".join(chain) + "\n",
                          key_pem=key_pem, not_before=cert.not_valid_before_utc,
                          not_after=cert.not_valid_after_utc, serial=data["serial_number"])

    def crl_der(self) -> bytes:
        """The default intermediate's CRL (public, DER)."""
        return self._crl("/v1/pki_int/crl")

    def crl_bundles(self) -> list[tuple[bytes, str]]:
        """Every intermediate's CRL (public, DER) with that intermediate's certificate (PEM): what every
        peer follows to refuse revoked serials. After an intermediate rotation (vault/pki.py) the
        retired one still signs the revocations of what it issued until they expire, and a peer whose
        CA bundle predates the new one still checks its CRL (the certificate against the root)."""
        from .pki import issuer_pem, issuers, staged_at
        # not the root's copy (no key); not a root rotation's staged intermediate: it has issued nothing,
        # and a peer whose bundle lacks the new root yet would refuse its CRL at every poll
        signing = [i for i, info in self._call(issuers, self.client).items()
                   if info.get("key_id") and staged_at(info) is None]
        for i in signing:
            if i not in self._issuer_pems:
                self._issuer_pems[i] = self._call(issuer_pem, self.client, i)
        return [(self._crl(f"/v1/pki_int/issuer/{i}/crl/der"), self._issuer_pems[i]) for i in sorted(signing)]

    def _crl(self, path: str) -> bytes:
        resp = self._call(self.client.adapter.get, path)  # a 5xx node: the next one
        if not isinstance(resp, requests.Response) or resp.status_code != 200:
            raise VaultUnavailable(f"CRL fetch answered {getattr(resp, 'status_code', 'JSON')}")
        return resp.content

    def ca_chain_pem(self) -> str:
        """Every root (the current one first, then any other still in a root rotation's overlap, staged
        or retired: vault/pki.py), then every intermediate (the current one, then any staged or retired
        one): everything a peer needs to verify any live certificate and any CRL."""
        from .pki import intermediates_pem, roots_pem
        blocks: list[str] = []
        for pem in [*self._call(roots_pem, self.client), *self._call(intermediates_pem, self.client)]:
            if pem not in blocks:  # pki_int holds a copy of each root that signed one of its intermediates
                blocks.append(pem)
        return "\n".join(blocks) + "\n"

    def _kv(self, path: str) -> dict:
        return self._call(self.client.secrets.kv.v2.read_secret_version, path, mount_point="secret",
                          raise_on_deleted_version=True)["data"]["data"]

    def zk_credentials(self) -> tuple[str, str]:
        data = self._kv(f"histo/zk/{self.role}")
        return data["username"], data["password"]

    def zk_acl_ids(self) -> dict[str, str]:
        return self._kv("histo/zk/acl-ids")

    def super_digest(self) -> str:
        """ZooKeeper hosts only: `super:<base64 sha1>` for zoo.cfg's superDigest."""
        return self._kv("histo/zk/super")["digest"]
