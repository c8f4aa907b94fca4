"""A service's own Vault session: AppRole login (unwrapping its secret_id on first start),
its certificate, its ZooKeeper credentials, and keeping its token alive.

The secret_id, once unwrapped, is kept 0600 in the service's credentials folder: it is bound to
the host's address, so a restarted service logs in again by itself while a copy is useless
anywhere else."""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import hvac
import requests
from cryptography import x509
from hvac.exceptions import Forbidden, InvalidRequest, VaultDown, VaultError
from requests.adapters import HTTPAdapter

from .. import TRUST_DOMAIN


class VaultUnavailable(RuntimeError):
    """Vault cannot be reached or is sealed."""


class VaultAuthError(RuntimeError):
    """Vault refused our credentials."""


@dataclass
class CertBundle:
    cert_pem: str
    chain_pem: str
    key_pem: str
    not_before: datetime
    not_after: datetime
    serial: str


class _SourceAddressAdapter(HTTPAdapter):
    """Binds outgoing connections to the service's own address, which Vault's CIDR bindings check."""

    def __init__(self, source: str, **kw) -> None:
        self._source = source
        super().__init__(**kw)

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self._source, 0)
        return super().init_poolmanager(*args, **kwargs)


class ServiceVault:
    def __init__(self, url: str, ca_path: str, host: str, role: str, creds_dir: Path,
                 source_address: str | None = None, trust_domain: str = TRUST_DOMAIN) -> None:
        self.url, self.ca_path, self.host, self.role = url, ca_path, host, role
        self.creds = Path(creds_dir)
        self.source_address, self.trust_domain = source_address, trust_domain
        self.client = self._new_client()
        self._lock = threading.Lock()
        self._token_expires = 0.0
        self._token_ttl = 0

    def _new_client(self, token: str | None = None) -> hvac.Client:
        session = requests.Session()
        session.verify = self.ca_path  # hvac takes a custom session's verify over its own argument
        if self.source_address:
            session.mount("https://", _SourceAddressAdapter(self.source_address))
        return hvac.Client(url=self.url, verify=self.ca_path, token=token, session=session, timeout=10)

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (VaultDown,) as exc:
            raise VaultUnavailable(f"Vault is sealed or down: {_short(exc)}") from None
        except requests.RequestException as exc:
            raise VaultUnavailable(f"Vault unreachable: {type(exc).__name__}") from None
        except Forbidden as exc:
            raise VaultAuthError(f"Vault refused: {_short(exc)}") from None
        except InvalidRequest as exc:
            raise VaultAuthError(f"Vault rejected the request: {_short(exc)}") from None
        except VaultError as exc:
            if "sealed" in str(exc).lower():
                raise VaultUnavailable("Vault is sealed") from None
            raise VaultAuthError(f"Vault error: {_short(exc)}") from None

    # -- login ----------------------------------------------------------------------------------
    def _secret_id(self) -> str:
        stored = self.creds / "secret_id"
        if stored.exists():
            return stored.read_text().strip()
        wrap = self.creds / "secret_id.wrap"
        if not wrap.exists():
            raise VaultAuthError(f"no secret_id delivered in {self.creds} (provision this host)")
        unwrapper = self._new_client(token=wrap.read_text().strip())
        try:
            resp = unwrapper.sys.unwrap()
        except (Forbidden, InvalidRequest, VaultError) as exc:
            if isinstance(exc, VaultDown):
                raise VaultUnavailable("Vault is sealed or down") from None
            raise VaultAuthError("wrapped secret_id was already used or expired — possible interception") from None
        except requests.RequestException as exc:
            raise VaultUnavailable(f"Vault unreachable: {type(exc).__name__}") from None
        secret_id = resp["data"]["secret_id"]
        fd = os.open(stored, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secret_id + "\n")
        wrap.unlink()
        return secret_id

    def login(self) -> None:
        with self._lock:
            role_id = (self.creds / "role_id").read_text().strip()
            resp = self._call(self.client.auth.approle.login, role_id=role_id, secret_id=self._secret_id(),
                              use_token=True)
            self._token_ttl = int(resp["auth"]["lease_duration"])
            self._token_expires = time.time() + self._token_ttl

    def renew_token(self) -> None:
        resp = self._call(self.client.auth.token.renew_self)
        self._token_ttl = int(resp["auth"]["lease_duration"])
        self._token_expires = time.time() + self._token_ttl

    def token_ttl_remaining(self) -> int:
        return max(0, int(self._token_expires - time.time()))

    def renew_if_needed(self, fraction: float = 2 / 3) -> None:
        """Renew past `fraction` of the token's life; log in again when it can no longer be renewed.
        Also a liveness probe of Vault: raises VaultUnavailable when Vault is away."""
        left = self._token_expires - time.time()
        if left > (1 - fraction) * self._token_ttl:
            self._call(self.client.auth.token.lookup_self)  # cheap, and fails while Vault is away
            return
        try:
            self.renew_token()
            if self.token_ttl_remaining() < 30:
                self.login()
        except VaultAuthError:
            self.login()

    # -- what a service reads ------------------------------------------------------------------------
    def issue_cert(self, ttl: str) -> CertBundle:
        params = {"common_name": f"{self.host}.{self.trust_domain}", "alt_names": self.host,
                  "uri_sans": f"spiffe://{self.trust_domain}/{self.role}/{self.host}", "ttl": ttl,
                  "format": "pem", "private_key_format": "pkcs8"}
        if self.source_address:
            params["ip_sans"] = self.source_address
        data = self._call(self.client.write, f"pki_int/issue/host-{self.host}", **params)["data"]
        cert = x509.load_pem_x509_certificate(data["certificate"].encode())
        chain = data.get("ca_chain") or [data["issuing_ca"]]
        return CertBundle(cert_pem=data["certificate"], chain_pem="\n".join(c.strip() for c in chain) + "\n",
                          key_pem=data["private_key"], not_before=cert.not_valid_before_utc,
                          not_after=cert.not_valid_after_utc, serial=data["serial_number"])

    def ca_chain_pem(self) -> str:
        """Root first, then the intermediate: everything a peer needs to verify our certificates."""
        root = self._call(self.client.read, "pki/cert/ca")["data"]["certificate"].strip()
        chain = self._call(self.client.read, "pki_int/cert/ca_chain")["data"]["certificate"]
        blocks = [root] + [b for b in _pem_blocks(chain) if b.strip() != root]
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
        return self._kv("histo/zk/super")["digest"]


def _pem_blocks(pem: str) -> list[str]:
    end = "-----END CERTIFICATE-----"
    return [b.strip() + "\n" + end for b in pem.split(end) if "BEGIN CERTIFICATE" in b]


def _short(exc: Exception) -> str:
    text = str(exc).replace("\n", " ")
    return text[:160]
