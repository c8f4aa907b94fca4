"""THE Vault configuration of histo, applied idempotently by one piece of code: local mode calls
apply() directly; the `vault_config` Ansible role runs `histo vault-setup --spec spec.json`.

Each step reads what is there and writes only what differs, so a second apply reports no change.
Identity is per host: one PKI role, one policy and one AppRole per host, so a compromised worker
can obtain its own certificate and its role's ZooKeeper credentials, and nothing else.

spec (a plain dict, no local assumptions):
  trust_domain   "histo.internal"
  hosts          [{"name": "master1", "role": "master|worker|zookeeper|secops|vault", "address": "127.0.10.21"}, ...]
  leaf_max_ttl   "24h"       max life of a host certificate
  audit_log      path of the file audit device to require; "<none>" (default) skips the check
  secret_id_ttl  "720h"      token_ttl "1h"      token_max_ttl "24h"
  signing_key_rotation "720h"  Vault's auto_rotate_period of every transit key (0: off; else >= 1h)
  listener_ca_dir  optional, on the controller: the bootstrap CA folder (ca.pem, ca-key.pem; histo
                 vault-tls). Given, Vault gets pki_vault, its listener intermediate (CSR made in Vault,
                 signed here with the bootstrap CA), and one role listener-<host> per vault host.
  vault_listener_ttl "720h"  max life of a Vault listener certificate (vault/listener.py renews at 2/3)
  vault_url      optional: the Vault node(s) named in the PKI issuing/CRL URLs, comma-separated for a
                 raft cluster (default: every node the client was given, never just the node that
                 answered: a failover client moves between nodes, and a second apply through another
                 node must not see the URLs as drift)
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import secrets
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import hvac
from cryptography import x509
from hvac.exceptions import Forbidden, InvalidPath, InvalidRequest

from .. import TRUST_DOMAIN
from ..durations import parse_duration
from ..secops.checkpoint import anchor_path, key_name
from ..tls.identity import spiffe_id
from ..tls.selfsigned import RENEW_AT, sign_intermediate
from . import people, pki
from .failover import split_urls

ROOT, INT, KV, TRANSIT, APPROLE = "pki", "pki_int", "secret", "transit", "approle"
APPROLE_CLEAR_RESPONSE_KEYS = ("error",)  # audit_non_hmac_response_keys of the approle mount
# Vault's own rotation of every transit key (tokens, receipts, the store's wrapping key, checkpoints);
# 0 turns it off, anything else is at least 1 h (Vault's floor for auto_rotate_period).
DEFAULT_KEY_ROTATION = "720h"
MIN_KEY_ROTATION = 3600
# ZooKeeper's quorum ports trust this CA alone (not the histo root): only ZooKeeper hosts may issue
# from it (role quorum-<host>, in their own policy), so no master's or worker's certificate joins.
QUORUM = "pki_zk_quorum"
# Vault's own listener certificates: an intermediate signed by the bootstrap CA (which clients trust
# as vault-ca.pem), so a renewed listener certificate needs no change of any client's trust. Only a
# Vault host's own identity may issue from it, for its own names and address (listener_role).
LISTENER = "pki_vault"
LISTENER_CN = "histo vault listener CA"
TOKEN_KEY = "histo-tokens"
RECEIPT_KEY = "histo-receipts"  # signs job receipts (masters: sign only)
STORE_KEY = "histo-store"  # wraps the per-job data keys of stored jobs (masters: datakey and decrypt only)
ISSUER_POLICY = "histo-token-issuer"
PROVISIONER_POLICY = "histo-provisioner"  # what provisioning needs after setup (the root token is revoked)
# token roles through which the provisioner makes the operator's tokens (it does not hold their policies)
ISSUER_TOKEN_ROLE, VERIFIER_TOKEN_ROLE = "histo-issuer", "histo-receipt-verifier"
RECEIPT_VERIFIER_POLICY = "histo-receipt-verifier"  # reads the receipt key's public keys, nothing else
AUDIT_VERIFIER_POLICY = AUDIT_VERIFIER_TOKEN_ROLE = "histo-audit-verifier"  # `histo audit verify`: read only
# vault: a Vault node's own identity, its certificate only (what its log shipper presents, roles/logship)
ROLES = ("master", "worker", "zookeeper", "secops", "vault")
ZK_ROLES = ("master", "worker")  # roles that hold their own ZooKeeper digest credential
CONTAINABLE_ROLES = ("master", "worker")  # what a SecOps collector may quarantine (vault/quarantine.py)
QUARANTINE_KV = "histo/quarantine"  # KV v2 under secret/: one record per quarantined host
NO_AUDIT = "<none>"
# A freshly mounted KV v2 answers 400 "Upgrading from non-versioned to versioned data" for a moment.
KV_UPGRADING = "Upgrading from non-versioned to versioned data"
KV_UPGRADE_WAIT = 30.0  # seconds

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_RE = re.compile(rf"^{_LABEL}$")
_DOMAIN_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})+$")


class SetupError(RuntimeError):
    """The spec is invalid or Vault cannot be brought to it by the API alone."""


def _seconds(value: str | int) -> int:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise SetupError(str(exc)) from None


def zk_digest(username: str, password: str) -> str:
    """ZooKeeper's digest id: user:base64(sha1(user:password))."""
    return f"{username}:" + base64.b64encode(hashlib.sha1(f"{username}:{password}".encode()).digest()).decode()


def host_cidr(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


def host_addresses(host: dict) -> list[str]:
    """The addresses a host's certificate may name: its own; a master's also the public (floating)
    address, which any healthy master may hold (roles/keepalived)."""
    return [host["address"], *([host["public_address"]] if host.get("public_address") else [])]


def validate_spec(spec: dict) -> None:
    """Names and addresses end up inside policy HCL and PKI roles: accept only plain values."""
    td = spec.get("trust_domain", TRUST_DOMAIN)
    if not _DOMAIN_RE.match(td):
        raise SetupError(f"bad trust_domain {td!r}")
    hosts = spec.get("hosts")
    if not isinstance(hosts, list) or not hosts:
        raise SetupError("spec needs a non-empty 'hosts' list")
    seen: set[str] = set()
    for h in hosts:
        name, role, addr = h.get("name", ""), h.get("role", ""), h.get("address", "")
        if not _HOST_RE.match(name) or name in seen:
            raise SetupError(f"bad or duplicate host name {name!r}")
        if role not in ROLES:
            raise SetupError(f"host {name}: role must be one of {', '.join(ROLES)}")
        for a in (addr, *([h["public_address"]] if "public_address" in h else [])):
            try:
                ipaddress.ip_address(a)
            except ValueError:
                raise SetupError(f"host {name}: bad address {a!r}") from None
        if "public_address" in h and role != "master":
            raise SetupError(f"host {name}: only a master serves the public address")
        seen.add(name)
    for key in ("leaf_max_ttl", "secret_id_ttl", "token_ttl", "token_max_ttl", "signing_key_rotation",
                "vault_listener_ttl"):
        if key in spec:
            _seconds(spec[key])
    if "signing_key_rotation" in spec and 0 < _seconds(spec["signing_key_rotation"]) < MIN_KEY_ROTATION:
        raise SetupError(f"signing_key_rotation must be 0 (off) or at least {MIN_KEY_ROTATION} s (Vault's floor)")
    readmit = spec.get("readmit") or ""
    if readmit and readmit not in seen:
        raise SetupError(f"readmit names {readmit!r}, which is not a host of the spec")
    if "oidc" in spec:
        try:
            people.validate(spec["oidc"])
        except people.SpecError as exc:
            raise SetupError(str(exc)) from None


def _data(resp: Any) -> dict:
    return resp.get("data", resp) if isinstance(resp, dict) else {}


def _norm(v: Any) -> Any:
    if isinstance(v, (list, tuple)):  # Vault echoes a /32 binding back as the bare address
        return sorted(re.sub(r"/(32|128)$", "", str(x)) for x in v)
    if isinstance(v, bool) or v is None:
        return v
    return str(v)


def _client_urls(client: hvac.Client) -> str:
    """Every node the client knows (vault/failover.py), in the order it was given: client.url is only
    the node it talks to now, which changes with a failover or an election."""
    urls = getattr(getattr(client, "adapter", None), "urls", None)
    return ",".join(urls) if urls else str(client.url)


def _differs(have: dict, want: dict) -> bool:
    """Compare only what the server knows: a field this Vault flavour does not echo back (e.g.
    allowed_ip_sans_cidr on HashiCorp Vault) must not make every apply report a change."""
    if not have:
        return True
    return any(k in have and _norm(have[k]) != _norm(v) for k, v in want.items())


class _Applier:
    def __init__(self, client: hvac.Client, spec: dict) -> None:
        self.c, self.spec = client, spec
        self.td = spec.get("trust_domain", TRUST_DOMAIN)
        self.base_urls = split_urls(str(spec.get("vault_url") or "") or _client_urls(client))
        self.changed: list[str] = []
        self.listener = bool(spec.get("listener_ca_dir"))
        # the one quarantined host this run gives an identity back to (`make readmit`); every other one
        # SecOps holds keeps its quarantine (its policy and PKI role are not restored, nothing is noted)
        self.readmit = str(spec.get("readmit") or "")
        self._held: dict[str, bool] = {}
        self._listed: set[str] | None = None  # the quarantine records' names (vault/quarantine.py)

    def held(self, name: str) -> bool:
        """Is `name` quarantined (its policy the quarantine's text: vault/quarantine.py wrote it) and not
        the host this run re-admits? Then vault-setup leaves its identity as SecOps left it: a re-apply
        (root token or not) must not undo a containment, only `make readmit HOST=<name>` does."""
        if name == self.readmit:
            return False
        if name not in self._held:
            from .quarantine import QUARANTINED_POLICY, quarantined_hosts
            try:
                have = _data(self.c.sys.read_policy(f"histo-{name}")).get("rules")
            except InvalidPath:
                have = None
            if self._listed is None:
                # a containment whose policy step failed still has its record (and may have lost its PKI
                # role): held too, or this run would give that role back
                try:
                    self._listed = quarantined_hosts(self.c)
                except Forbidden:  # a token that may not list them: the policy text alone decides
                    self._listed = set()
            self._held[name] = (have or "").strip() == QUARANTINED_POLICY.strip() or name in self._listed
        return self._held[name]

    @property
    def base_url(self) -> str:
        """The first node: the OIDC issuer's default (vault/people.py), as vault_config names it."""
        return self.base_urls[0]

    def note(self, what: str) -> None:
        self.changed.append(what)

    # -- audit -----------------------------------------------------------------------------------
    def audit(self) -> None:
        path = self.spec.get("audit_log") or NO_AUDIT
        if path == NO_AUDIT:
            return
        devices = _data(self.c.sys.list_enabled_audit_devices())
        used = set()
        for mount, dev in devices.items():
            if not isinstance(dev, dict):
                continue
            used.add(mount.rstrip("/"))
            if dev.get("type") == "file" and (dev.get("options") or {}).get("file_path") == path:
                return  # declared in the server config (OpenBao) or enabled earlier (Vault)
        mount = "file" if "file" not in used else "histo-file"
        try:
            # HashiCorp Vault still allows this; OpenBao >= 2.3.2 refuses it (see server.py)
            self.c.sys.enable_audit_device("file", path=mount, options={"file_path": path, "mode": "0600"},
                                           description="histo: every request and response, values HMAC-ed")
        except InvalidRequest as exc:
            if "declarative" in str(exc) or "config" in str(exc):
                raise SetupError(f'no file audit device writes to {path}: this server only accepts audit devices '
                                 f'from its config file; add  audit "file" "file" {{ options {{ file_path = '
                                 f'"{path}" }} }}  and restart it') from None
            raise
        self.note(f"audit {mount}")

    # -- engines -------------------------------------------------------------------------------
    def mount(self, path: str, backend: str, max_ttl: str | None = None, options: dict | None = None) -> None:
        mounts = _data(self.c.sys.list_mounted_secrets_engines())
        if f"{path}/" in mounts:
            have = mounts[f"{path}/"]
            if have.get("type") != backend:
                raise SetupError(f"{path}/ is mounted as {have.get('type')}, expected {backend}")
            if max_ttl and int((have.get("config") or {}).get("max_lease_ttl") or 0) != _seconds(max_ttl):
                self.c.sys.tune_mount_configuration(path, max_lease_ttl=max_ttl)
                self.note(f"tune {path}")
            return
        config = {"max_lease_ttl": max_ttl} if max_ttl else None
        self.c.sys.enable_secrets_engine(backend, path=path, config=config, options=options)
        self.note(f"mount {path}")

    def auth_method(self, path: str, method: str, non_hmac_response_keys: Sequence[str] = ()) -> None:
        """Enable the method at `path`; with `non_hmac_response_keys`, its audit entries carry those
        response keys in clear (tuned on a method enabled before, read back from the listing, which the
        provisioner may read: a re-apply writes nothing when it holds)."""
        methods = _data(self.c.sys.list_auth_methods())
        keys = sorted(non_hmac_response_keys)
        if f"{path}/" not in methods:
            config = {"audit_non_hmac_response_keys": keys} if keys else None
            self.c.sys.enable_auth_method(method, path=path, config=config)
            self.note(f"auth {path}")
            return
        have = ((methods[f"{path}/"] or {}).get("config") or {}).get("audit_non_hmac_response_keys") or []
        if keys and sorted(have) != keys:
            self.c.sys.tune_auth_method(path, audit_non_hmac_response_keys=keys)
            self.note(f"tune auth {path}")

    # -- PKI --------------------------------------------------------------------------------------
    def _ca_pem(self, mount: str) -> str:
        try:
            return (self.c.secrets.pki.read_ca_certificate(mount_point=mount) or "").strip()
        except InvalidPath:
            return ""

    def pki(self) -> None:
        self.mount(ROOT, "pki", "87600h")
        self.mount(INT, "pki", "43800h")
        if not self._ca_pem(ROOT):
            self.c.secrets.pki.generate_root("internal", "histo root CA", mount_point=ROOT,
                                             extra_params={"key_type": "ec", "key_bits": 256, "ttl": "87600h",
                                                           "issuer_name": "root", "key_name": "root"})
            self.note("root CA")
        if not self._ca_pem(INT):
            csr = self.c.secrets.pki.generate_intermediate(
                "internal", "histo intermediate CA", mount_point=INT,
                extra_params={"key_type": "ec", "key_bits": 256, "key_name": "intermediate"})["data"]["csr"]
            signed = self.c.secrets.pki.sign_intermediate(
                csr, "histo intermediate CA", mount_point=ROOT,
                extra_params={"ttl": "43800h", "format": "pem", "max_path_length": 0})["data"]
            # intermediate + root: issued certificates then carry the full chain up to the root
            self.c.secrets.pki.set_signed_intermediate(signed["certificate"].strip() + "\n" + self._ca_pem(ROOT),
                                                       mount_point=INT)
            self.note("intermediate CA")
        self.default_issuer()
        for mount in (ROOT, INT):
            self.urls(mount)
        for host in self.spec["hosts"]:
            if not self.held(host["name"]):
                self.pki_role(host)
        self.quorum_pki()
        if self.listener:
            self.listener_pki()

    def quorum_pki(self) -> None:
        """A CA of its own for ZooKeeper's quorum (ports 2888/3888): a separate root, so a
        certificate of the histo CA (any master or worker) is refused at the quorum handshake, and a
        quorum certificate is no client of anything else."""
        self.mount(QUORUM, "pki", "87600h")
        if not self._ca_pem(QUORUM):
            self.c.secrets.pki.generate_root("internal", "histo ZooKeeper quorum CA", mount_point=QUORUM,
                                             extra_params={"key_type": "ec", "key_bits": 256, "ttl": "87600h",
                                                           "issuer_name": "zk-quorum", "key_name": "zk-quorum"})
            self.note("ZooKeeper quorum CA")
        self.urls(QUORUM)
        for host in self.spec["hosts"]:
            if host["role"] == "zookeeper":
                self.quorum_role(host)

    def quorum_role(self, host: dict) -> None:
        name, addr = host["name"], host["address"]
        want = {
            "key_type": "ec", "key_bits": 256,
            "allowed_domains": [f"{name}.{self.td}", name], "allow_bare_domains": True,
            "allow_subdomains": False, "allow_glob_domains": False, "allow_wildcard_certificates": False,
            "allow_localhost": False, "allow_any_name": False, "enforce_hostnames": True,
            "cn_validations": ["hostname"],
            "allow_ip_sans": True, "allowed_ip_sans_cidr": [host_cidr(addr)],
            "allowed_uri_sans": [], "allowed_other_sans": [],
            "server_flag": True, "client_flag": True, "code_signing_flag": False, "email_protection_flag": False,
            "key_usage": ["DigitalSignature", "KeyAgreement"],
            "max_ttl": _seconds(self.spec.get("leaf_max_ttl", "24h")),
            "not_before_duration": 30, "no_store": False, "generate_lease": False, "require_cn": True,
            "use_csr_common_name": False, "use_csr_sans": False,
        }
        self._pki_role(QUORUM, f"quorum-{name}", want)

    def listener_pki(self) -> None:
        """pki_vault: Vault generates the key and CSR, the controller signs it with the bootstrap CA
        (the CA key never leaves the controller). A new intermediate only when none is there or the
        current one is in its last third (then it becomes the default issuer; the old one stays until
        its leaves expire)."""
        self.mount(LISTENER, "pki", "87600h")
        pem = self._ca_pem(LISTENER)
        due = not pem
        if pem:
            cert = x509.load_pem_x509_certificate(pem.encode())
            start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
            due = time.time() >= (start + (end - start) * RENEW_AT).timestamp()
        if due:
            csr = self.c.write_data(f"{LISTENER}/intermediate/generate/internal",
                                    data={"common_name": LISTENER_CN, "key_type": "ec", "key_bits": 256})["data"]["csr"]
            try:
                signed = sign_intermediate(self.spec["listener_ca_dir"], csr, LISTENER_CN)
            except (OSError, ValueError) as exc:
                raise SetupError(f"{LISTENER}: cannot sign its intermediate: {exc}") from None
            ca_pem = (Path(self.spec["listener_ca_dir"]) / "ca.pem").read_text().strip()
            resp = self.c.write_data(f"{LISTENER}/intermediate/set-signed",
                                     data={"certificate": signed.strip() + "\n" + ca_pem})
            imported = [i for i in ((resp or {}).get("data") or {}).get("imported_issuers") or []]
            for iid in imported:  # the intermediate, not the bootstrap CA copy (which has no key here)
                info = _data(self.c.read(f"{LISTENER}/issuer/{iid}"))
                if info.get("key_id"):
                    self.c.write_data(f"{LISTENER}/config/issuers", data={"default": iid})
            self.note(f"{LISTENER} intermediate")
        for host in self.spec["hosts"]:
            if host["role"] == "vault":
                self.listener_role(host)

    def listener_names(self, host: dict) -> list[str]:
        """What a Vault node's listener certificate names: its inventory name, its FQDN and the
        cluster's Vault name (the vault role's vault_hostnames; local mode's BaoServer hostnames)."""
        return [host["name"], f"{host['name']}.{self.td}", f"vault.{self.td}"]

    def listener_role(self, host: dict) -> None:
        want = {
            "key_type": "ec", "key_bits": 256,
            "allowed_domains": self.listener_names(host), "allow_bare_domains": True,
            "allow_subdomains": False, "allow_glob_domains": False, "allow_wildcard_certificates": False,
            "allow_localhost": False, "allow_any_name": False, "enforce_hostnames": True,
            "cn_validations": ["hostname"],
            "allow_ip_sans": True, "allowed_ip_sans_cidr": [host_cidr(host["address"])],
            "allowed_uri_sans": [], "allowed_other_sans": [],
            # a TLS server only: raft's joins reach the API as clients with no certificate of their own,
            # and the cluster port (8201) uses OpenBao's own internal certificates
            "server_flag": True, "client_flag": False, "code_signing_flag": False, "email_protection_flag": False,
            "key_usage": ["DigitalSignature"],
            "max_ttl": _seconds(self.spec.get("vault_listener_ttl", "720h")),
            "not_before_duration": 30, "no_store": False, "generate_lease": False, "require_cn": True,
            "use_csr_common_name": False, "use_csr_sans": False,
        }
        self._pki_role(LISTENER, f"listener-{host['name']}", want)

    def default_issuer(self) -> None:
        """pki_int issues with the imported intermediate (the issuer that has a key)."""
        have = pki.default_issuer(self.c)
        # after a rotation (vault/pki.py) the retired intermediates keep their key (they sign CRLs)
        # and a root rotation's staged intermediate issues nothing until root-finish
        with_key = [iid for iid, info in pki.issuers(self.c).items()
                    if info.get("key_id") and pki.retired_at(info) is None and pki.staged_at(info) is None]
        if have in with_key:
            return
        if len(with_key) != 1:
            raise SetupError(f"{INT} has {len(with_key)} current issuers with a key; expected exactly one")
        if have != with_key[0]:
            self.c.write_data(f"{INT}/config/issuers", data={"default": with_key[0]})
            self.note(f"{INT} default issuer")

    def urls(self, mount: str) -> None:
        want = {"issuing_certificates": [f"{u}/v1/{mount}/ca" for u in self.base_urls],
                "crl_distribution_points": [f"{u}/v1/{mount}/crl" for u in self.base_urls]}
        have = _data(self.c.secrets.pki.read_urls(mount_point=mount))
        if any(list(have.get(k) or []) != v for k, v in want.items()):
            self.c.secrets.pki.set_urls(want, mount_point=mount)
            self.note(f"{mount} urls")

    def pki_role(self, host: dict) -> None:
        name, role = host["name"], host["role"]
        want = {
            "key_type": "ec", "key_bits": 256,
            # exactly this host's names: FQDN and bare name, nothing below, no wildcards, no localhost
            "allowed_domains": [f"{name}.{self.td}", name], "allow_bare_domains": True,
            "allow_subdomains": False, "allow_glob_domains": False, "allow_wildcard_certificates": False,
            "allow_localhost": False, "allow_any_name": False, "enforce_hostnames": True,
            "cn_validations": ["hostname"],
            # OpenBao's role-level IP restriction; the host policy pins ip_sans too (defence in depth)
            "allow_ip_sans": True, "allowed_ip_sans_cidr": [host_cidr(a) for a in host_addresses(host)],
            "allowed_uri_sans": [spiffe_id(role, name, self.td)], "allowed_uri_sans_template": False,
            "allowed_other_sans": [],
            "server_flag": True, "client_flag": True, "code_signing_flag": False, "email_protection_flag": False,
            # RFC 5480: an EC key does not do key encipherment
            "key_usage": ["DigitalSignature", "KeyAgreement"],
            "max_ttl": _seconds(self.spec.get("leaf_max_ttl", "24h")),
            "not_before_duration": 30, "no_store": False, "generate_lease": False, "require_cn": True,
            "use_csr_common_name": False, "use_csr_sans": False,
        }
        self._pki_role(INT, f"host-{name}", want, label=f"host-{name}")

    def _pki_role(self, mount: str, path: str, want: dict, label: str | None = None) -> None:
        """A PKI role made or brought back to `want`; untouched (and unreported) when it already is."""
        try:
            have = _data(self.c.secrets.pki.read_role(path, mount_point=mount))
        except InvalidPath:
            have = {}
        if _differs(have, want):
            self.c.secrets.pki.create_or_update_role(path, extra_params=want, mount_point=mount)
            self.note(f"pki role {label or f'{mount}/{path}'}")

    # -- KV: ZooKeeper credentials ------------------------------------------------------------------
    def _kv_read(self, path: str) -> dict | None:
        deadline = time.monotonic() + KV_UPGRADE_WAIT
        while True:
            try:
                return self.c.secrets.kv.v2.read_secret_version(path, mount_point=KV,
                                                                 raise_on_deleted_version=True)["data"]["data"]
            except InvalidPath:
                return None
            except InvalidRequest as exc:
                # The first read after the mount: wait for the upgrade instead of failing the apply.
                if KV_UPGRADING not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def kv_secret(self, path: str, factory: Callable[[], dict]) -> dict:
        """Generated only if absent: a re-apply never rotates a credential behind ZooKeeper's back."""
        have = self._kv_read(path)
        if have is not None:
            return have
        data = factory()
        # cas=0: write only if the secret still does not exist (two concurrent applies cannot race)
        self.c.secrets.kv.v2.create_or_update_secret(path, secret=data, cas=0, mount_point=KV)
        self.note(f"kv {path}")
        return data

    def kv_write(self, path: str, data: dict) -> None:
        """Written when it differs (configuration, not a credential: a re-apply brings it to the spec)."""
        if self._kv_read(path) != data:
            self.c.secrets.kv.v2.create_or_update_secret(path, secret=data, mount_point=KV)
            self.note(f"kv {path}")

    def _kv_exists(self, path: str) -> bool:
        deadline = time.monotonic() + KV_UPGRADE_WAIT
        while True:
            try:
                self.c.secrets.kv.v2.read_secret_metadata(path, mount_point=KV)
                return True
            except InvalidPath:
                return False
            except InvalidRequest as exc:  # a fresh mount: wait for the upgrade (see _kv_read)
                if KV_UPGRADING not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def zk_credentials(self) -> None:
        self.mount(KV, "kv", options={"version": "2"})
        # Once everything exists, a re-apply reads no password (the provisioner may not read them).
        paths = [f"histo/zk/{role}" for role in ZK_ROLES] + ["histo/zk/super"]
        if all(self._kv_exists(p) for p in paths):
            have_ids = self._kv_read("histo/zk/acl-ids") or {}
            if all(have_ids.get(role) for role in ZK_ROLES):
                return
        ids = {}
        for role in ZK_ROLES:
            user = f"histo-{role}"
            cred = self.kv_secret(f"histo/zk/{role}",
                                  lambda u=user: {"username": u, "password": secrets.token_urlsafe(32)})
            ids[role] = zk_digest(cred["username"], cred["password"])

        def super_cred() -> dict:
            pw = secrets.token_urlsafe(32)
            return {"username": "super", "password": pw, "digest": zk_digest("super", pw)}
        self.kv_secret("histo/zk/super", super_cred)
        # The digest ids (hashes of random passwords, not the passwords) let each role set ACLs
        # naming the other without being able to read the other's password.
        if self._kv_read("histo/zk/acl-ids") != ids:
            self.c.secrets.kv.v2.create_or_update_secret("histo/zk/acl-ids", secret=ids, mount_point=KV)
            self.note("kv histo/zk/acl-ids")

    # -- transit keys for API tokens and job receipts -----------------------------------------------------
    def transit(self) -> None:
        self.mount(TRANSIT, "transit")
        for key in (TOKEN_KEY, RECEIPT_KEY):
            self.transit_key(key)
        # the key that wraps the masters' per-job data keys (envelope encryption of stored jobs)
        self.transit_key(STORE_KEY, "aes256-gcm96")
        for host in self.spec["hosts"]:  # each SecOps collector signs its log's checkpoints with its own key
            if host["role"] == "secops":
                self.transit_key(key_name(host["name"]))

    def transit_key(self, key: str, key_type: str = "ecdsa-p256") -> None:
        try:
            have = _data(self.c.secrets.transit.read_key(key, mount_point=TRANSIT))
        except InvalidPath:
            # not exportable, no plaintext backup: the key never leaves Vault
            self.c.secrets.transit.create_key(key, key_type=key_type, exportable=False,
                                              allow_plaintext_backup=False, mount_point=TRANSIT)
            self.note(f"transit key {key}" if key != TOKEN_KEY else "transit key")
            have = {"type": key_type, "auto_rotate_period": 0}
        if have.get("type") != key_type:
            raise SetupError(f"transit key {key} is {have.get('type')}, expected {key_type}")
        # Vault itself rotates the key (a new version signs or wraps; the old versions still verify and
        # unwrap, as min_decryption_version stays 1): no histo process holds the rotate capability.
        period = _seconds(str(self.spec.get("signing_key_rotation", DEFAULT_KEY_ROTATION)))
        if int(have.get("auto_rotate_period") or 0) != period:
            self.c.write(f"{TRANSIT}/keys/{key}/config", auto_rotate_period=f"{period}s")
            self.note(f"transit key {key} rotation")

    # -- policies and AppRoles ---------------------------------------------------------------------------
    def policy(self, name: str, rules: str) -> None:
        try:
            have = _data(self.c.sys.read_policy(name)).get("rules")
        except InvalidPath:
            have = None
        if (have or "").strip() != rules.strip():
            from .quarantine import QUARANTINED_POLICY, revoke_tokens_of
            if have is not None and have.strip() == QUARANTINED_POLICY.strip():
                if name != f"histo-{self.readmit}":
                    return  # contained since this run decided who is held (held() above): the quarantine stays
                # re-admitting a contained host: the tokens it held then must not get their powers back
                n = revoke_tokens_of(self.c, name.removeprefix("histo-"))
                self.note(f"revoked {n} token(s) of quarantined {name}")
            self.c.sys.create_or_update_policy(name, rules)
            self.note(f"policy {name}")

    def host_policy(self, host: dict) -> str:
        name, role, addr = host["name"], host["role"], host["address"]
        fqdn = f"{name}.{self.td}"
        # allowed_parameters: any parameter not listed is refused, listed ones only take these values
        # ([] = any value), so the token cannot ask for another IP, URI, name or key format.
        rules = f'''# histo host {name} ({role}): its own certificate and its role's secrets, nothing else.
path "{INT}/issue/host-{name}" {{
  capabilities = ["update"]
  # required: a certificate always names the host's address (peers refuse one that does not), so a
  # key taken off this machine is useless anywhere else
  required_parameters = ["common_name", "ip_sans", "uri_sans"]
  allowed_parameters = {{
    "common_name" = ["{fqdn}"]
    "alt_names" = ["{name}", "{fqdn}", "{name},{fqdn}", "{fqdn},{name}", ""]
    "ip_sans" = [{", ".join(f'"{v}"' for v in dict.fromkeys([addr, ",".join(host_addresses(host))]))}]
    "uri_sans" = ["{spiffe_id(role, name, self.td)}"]
    "ttl" = []
    "format" = ["pem"]
    "private_key_format" = ["pkcs8"]
  }}
}}
path "{ROOT}/cert/ca" {{
  capabilities = ["read"]
}}
path "{INT}/cert/ca_chain" {{
  capabilities = ["read"]
}}
'''
        rules += self.secret_id_rules(name)
        # the quarantine list, names only: every machine's firewall drops who is on it (secops/fence.py)
        rules += f'path "{KV}/metadata/{QUARANTINE_KV}" {{\n  capabilities = ["list"]\n}}\n'
        if role in ZK_ROLES:
            rules += (f'path "{KV}/data/histo/zk/{role}" {{\n  capabilities = ["read"]\n}}\n'
                      f'path "{KV}/data/histo/zk/acl-ids" {{\n  capabilities = ["read"]\n}}\n')
        if role == "master":  # public keys only, to verify API tokens; receipts: sign (ES256, JWS) only
            rules += "".join(f'path "{TRANSIT}/keys/{key}" {{\n  capabilities = ["read"]\n}}\n'
                             for key in (TOKEN_KEY, RECEIPT_KEY))  # public keys (receipts: GET /api/v1/receipts/keys)
            # receipts; and, for sign-in (OIDC, client credentials), the master's own API tokens
            rules += "".join(f'path "{TRANSIT}/sign/{key}" {{\n  capabilities = ["update"]\n'
                             f'  required_parameters = ["hash_algorithm", "marshaling_algorithm"]\n'
                             f'  allowed_parameters = {{\n    "input" = []\n    "key_version" = []\n'
                             f'    "hash_algorithm" = ["sha2-256"]\n    "marshaling_algorithm" = ["jws"]\n  }}\n}}\n'
                             for key in (RECEIPT_KEY, TOKEN_KEY))
            rules += people.master_policy()
            # the quarantine list (vault/quarantine.py): masters follow it
            rules += f'path "{KV}/data/{QUARANTINE_KV}/*" {{\n  capabilities = ["read"]\n}}\n'
            # stored jobs: create a data key (plaintext + wrapped) and unwrap one; not encrypt, rewrap,
            # read or export the key itself
            rules += (f'path "{TRANSIT}/datakey/plaintext/{STORE_KEY}" {{\n  capabilities = ["update"]\n}}\n'
                      f'path "{TRANSIT}/decrypt/{STORE_KEY}" {{\n  capabilities = ["update"]\n}}\n')
        if role == "secops":  # sign its own log's checkpoints; write (not read, delete) the anchored copy
            rules += (f'path "{TRANSIT}/sign/{key_name(name)}" {{\n  capabilities = ["update"]\n'
                      f'  allowed_parameters = {{\n    "input" = []\n    "key_version" = []\n'
                      f'    "hash_algorithm" = ["sha2-256"]\n    "marshaling_algorithm" = ["jws"]\n  }}\n}}\n'
                      f'path "{KV}/data/{anchor_path(name)}" {{\n  capabilities = ["create", "update"]\n}}\n')
            rules += self.responder_rules()
        if role == "vault" and self.listener:  # its own listener certificate (vault/listener.py)
            names = self.listener_names(host)
            rules += f'''path "{LISTENER}/issue/listener-{name}" {{
  capabilities = ["update"]
  required_parameters = ["common_name", "ip_sans"]
  allowed_parameters = {{
    "common_name" = [{", ".join(f'"{n}"' for n in names)}]
    "alt_names" = []
    "ip_sans" = ["{addr}"]
    "ttl" = []
    "format" = ["pem"]
    "private_key_format" = ["pkcs8"]
  }}
}}
'''
        if role == "zookeeper":  # its digest goes into zoo.cfg; its quorum certificate (address required)
            rules += f'path "{KV}/data/histo/zk/super" {{\n  capabilities = ["read"]\n}}\n'
            rules += f'''path "{QUORUM}/issue/quorum-{name}" {{
  capabilities = ["update"]
  allowed_parameters = {{
    "common_name" = ["{fqdn}"]
    "alt_names" = ["{name}"]
    "ip_sans" = ["{addr}"]
    "ttl" = []
    "format" = ["pem"]
    "private_key_format" = ["pkcs8"]
  }}
}}
'''
        return rules

    def responder_rules(self) -> str:
        """A SecOps collector's quarantine powers (vault/quarantine.py::contain), per containable host
        (master, worker) of the spec and nothing for a zookeeper, vault or secops host: overwrite the
        host's policy with the quarantine text and no other (allowed_parameters: this exact value),
        destroy its secret_ids by accessor, delete its PKI role, revoke certificates (pki_int/revoke
        takes any serial: Vault cannot bind it to a host), write its quarantine record."""
        from .quarantine import QUARANTINED_POLICY  # (quarantine -> revoke -> setup: imported late)
        rules = "# quarantine responder (vault/quarantine.py)\n"
        for host in self.spec["hosts"]:
            if host["role"] not in CONTAINABLE_ROLES:
                continue
            h = host["name"]
            rules += f'''path "sys/policies/acl/histo-{h}" {{
  capabilities = ["update"]
  allowed_parameters = {{
    "policy" = [{json.dumps(QUARANTINED_POLICY)}]
  }}
}}
path "auth/{APPROLE}/role/histo-{h}/secret-id/" {{
  capabilities = ["list"]
}}
path "auth/{APPROLE}/role/histo-{h}/secret-id-accessor/destroy" {{
  capabilities = ["update"]
  allowed_parameters = {{
    "secret_id_accessor" = []
  }}
}}
path "{INT}/roles/host-{h}" {{
  capabilities = ["delete"]
}}
path "{KV}/data/{QUARANTINE_KV}/{h}" {{
  capabilities = ["create", "update"]
}}
'''
        rules += "".join(f'path "{p}" {{\n  capabilities = ["{c}"]\n}}\n'
                         for p, c in ((f"{INT}/certs", "list"), (f"{INT}/cert/*", "read"), (f"{INT}/revoke", "update")))
        return rules

    @staticmethod
    def secret_id_rules(name: str) -> str:
        """Its own AppRole's next secret_id, before the one it holds expires (vault/secretid.py). No
        parameter is allowed when minting (no cidr_list, metadata, ttl or num_uses of its choosing):
        the new one carries the role's address binding and TTL. Lookup and destroy only on its own role.
        Minting for another host's role stays the provisioner's, response-wrapped (secret zero)."""
        role = f"auth/{APPROLE}/role/histo-{name}"
        return f'''path "{role}/secret-id" {{
  capabilities = ["update"]
  denied_parameters = {{
    "*" = []
  }}
}}
path "{role}/secret-id/lookup" {{
  capabilities = ["update"]
  allowed_parameters = {{
    "secret_id" = []
  }}
}}
path "{role}/secret-id-accessor/destroy" {{
  capabilities = ["update"]
  allowed_parameters = {{
    "secret_id_accessor" = []
  }}
}}
'''

    def token_role(self, name: str, policy: str, max_ttl: str) -> None:
        want = {"allowed_policies": [policy], "disallowed_policies": ["root"], "orphan": True,
                "renewable": False, "token_explicit_max_ttl": _seconds(max_ttl), "token_type": "service"}
        try:
            have = _data(self.c.read(f"auth/token/roles/{name}"))
        except InvalidPath:
            have = {}
        if _differs(have, want):
            self.c.write_data(f"auth/token/roles/{name}", data=want)
            self.note(f"token role {name}")

    def approle(self, host: dict) -> str:
        name, cidr = host["name"], host_cidr(host["address"])
        want = {
            "token_policies": [f"histo-{name}"], "token_no_default_policy": False,  # default: renew/lookup self
            "bind_secret_id": True, "secret_id_bound_cidrs": [cidr], "token_bound_cidrs": [cidr],
            "secret_id_ttl": _seconds(self.spec.get("secret_id_ttl", "720h")),
            # 0 = unlimited: a restarted service logs in again with its stored, address-bound secret_id
            "secret_id_num_uses": 0, "token_num_uses": 0,
            "token_ttl": _seconds(self.spec.get("token_ttl", "1h")),
            "token_max_ttl": _seconds(self.spec.get("token_max_ttl", "24h")), "token_type": "service",
        }
        role_name = f"histo-{name}"
        try:
            have = _data(self.c.auth.approle.read_role(role_name, mount_point=APPROLE))
        except InvalidPath:
            have = {}
        if _differs(have, want):
            self.c.auth.approle.create_or_update_approle(role_name, mount_point=APPROLE, **want)
            self.note(f"approle {role_name}")
        return self.c.auth.approle.read_role_id(role_name, mount_point=APPROLE)["data"]["role_id"]

    def run(self) -> dict:
        validate_spec(self.spec)
        self.audit()
        self.pki()
        self.zk_credentials()
        self.transit()
        # a refused AppRole login's reason (a secret_id presented from an address outside its CIDR
        # binding, an unknown one) is the response's data.error, which the audit device HMACs unless
        # told not to: in clear, secops/sources.py says why the login was refused. No secret is in it
        # for histo's roles (secret_id_num_uses 0: the one reason that would quote the secret_id, a
        # use-limited secret_id gone during the login, cannot happen); docs/SECURITY.md.
        self.auth_method(APPROLE, "approle", non_hmac_response_keys=APPROLE_CLEAR_RESPONSE_KEYS)
        self.policy(ISSUER_POLICY, f'''# histo token issuer: signs API tokens with the transit key (which never leaves Vault)
path "{TRANSIT}/sign/{TOKEN_KEY}" {{
  capabilities = ["update"]
}}
path "{TRANSIT}/keys/{TOKEN_KEY}" {{
  capabilities = ["read"]
}}
''')  # noqa: E501 (the policy's comment line)
        self.policy(RECEIPT_VERIFIER_POLICY, f'''# histo receipt verifier: the public keys of the receipt key (to check receipts offline)
path "{TRANSIT}/keys/{RECEIPT_KEY}" {{
  capabilities = ["read"]
}}
''')  # noqa: E501 (the policy's comment line)
        self.policy(AUDIT_VERIFIER_POLICY, f'''# histo audit verifier: the collectors' checkpoint keys and anchored checkpoints, read only
path "{TRANSIT}/keys/histo-secops-*" {{
  capabilities = ["read"]
}}
path "{KV}/data/histo/secops/*" {{
  capabilities = ["read"]
}}
path "{KV}/metadata/histo/secops/*" {{
  capabilities = ["read"]
}}
''')  # noqa: E501 (the policy's comment line)
        self.policy(PROVISIONER_POLICY, provisioner_policy())
        self.token_role(ISSUER_TOKEN_ROLE, ISSUER_POLICY, self.spec.get("issuer_max_ttl", "72h"))
        self.token_role(VERIFIER_TOKEN_ROLE, RECEIPT_VERIFIER_POLICY, self.spec.get("issuer_max_ttl", "72h"))
        self.token_role(AUDIT_VERIFIER_TOKEN_ROLE, AUDIT_VERIFIER_POLICY, self.spec.get("issuer_max_ttl", "72h"))
        role_ids = {}
        for host in self.spec["hosts"]:
            if not self.held(host["name"]):
                self.policy(f"histo-{host['name']}", self.host_policy(host))
            role_ids[host["name"]] = self.approle(host)
        oidc = people.apply(self, self.spec["oidc"]) if "oidc" in self.spec else None
        held = sorted(name for name, yes in self._held.items() if yes)
        return {"changed": bool(self.changed), "changes": self.changed, "role_ids": role_ids, "held": held,
                **({"oidc": oidc} if oidc else {})}


def provisioner_policy() -> str:
    """`make provision` after setup: verify the configuration (read-only), deliver response-wrapped
    secret_ids, make the operator's tokens through their token roles, revoke or block a host's
    certificates, release a quarantined host once it holds a fresh identity (vault/quarantine.py).
    Not: write any policy, read any ZooKeeper password, sign with transit, mint an
    unwrapped secret_id or a token with a policy of its choosing. Changing the configuration itself
    (a new host, a new policy) needs a root token: docs/SECURITY.md says how to regenerate one."""
    ro = [("sys/mounts", "read"), ("sys/auth", "read"), ("sys/audit", "read\", \"sudo"), ("sys/policy/histo-*", "read"),
          (f"{INT}/config/issuers", "read"), (f"{INT}/issuers", "list"),
          (f"{ROOT}/config/urls", "read"), (f"{INT}/config/urls", "read"),
          (f"{ROOT}/cert/ca", "read"), (f"{INT}/cert/ca_chain", "read"),
          (f"{QUORUM}/config/urls", "read"), (f"{QUORUM}/cert/ca", "read"), (f"{QUORUM}/roles/quorum-*", "read"),
          (f"{LISTENER}/cert/ca", "read"), (f"{LISTENER}/roles/listener-*", "read"),
          (f"{KV}/metadata/histo/zk/*", "read"), (f"{KV}/data/histo/zk/acl-ids", "read"),
          (f"{TRANSIT}/keys/{TOKEN_KEY}", "read"), (f"{TRANSIT}/keys/{RECEIPT_KEY}", "read"),
          (f"{TRANSIT}/keys/{STORE_KEY}", "read"),
          # the SecOps collectors' checkpoint keys (a re-apply checks each exists; public keys only)
          (f"{TRANSIT}/keys/{key_name('*')}", "read"),
          (f"auth/{APPROLE}/role/+", "read"), (f"auth/{APPROLE}/role/+/role-id", "read"),
          ("auth/token/roles/histo-*", "read"), ("auth/token/renew-self", "update"),
          (f"{INT}/certs", "list"), (f"{INT}/cert/*", "read"), (f"{INT}/revoke", "update"),
          (f"auth/token/create/{ISSUER_TOKEN_ROLE}", "update"),
          (f"auth/token/create/{VERIFIER_TOKEN_ROLE}", "update"),
          # sign-in (vault/people.py): a re-apply verifies; a new person or client needs a root token
          ("identity/oidc/*", "read"), ("identity/entity/name/*", "read"), ("identity/group/name/*", "read"),
          ("auth/userpass/users/*", "read"), (f"{KV}/data/{people.MACHINE_CLIENTS_KV}", "read"),
          (f"auth/token/create/{AUDIT_VERIFIER_TOKEN_ROLE}", "update"),
          # start a root token generation; only a quorum of unseal keys completes it (secretzero.py)
          ("sys/generate-root-token/attempt", "read\", \"update\", \"delete"),
          ("sys/generate-root-token/update", "update"),
          # `histo quarantine release` (vault/quarantine.py): the host's identity restored? then the record goes
          ("sys/policies/acl/histo-*", "read"), (f"auth/{APPROLE}/role/+/secret-id-accessor/lookup", "update"),
          (f"{KV}/data/{QUARANTINE_KV}/*", "read"), (f"{KV}/metadata/{QUARANTINE_KV}", "list"),
          (f"{KV}/metadata/{QUARANTINE_KV}/*", "delete")]
    rules = "# histo provisioner: provisioning after setup, nothing more (the root token is revoked)\n"
    rules += "".join(f'path "{p}" {{\n  capabilities = ["{c}"]\n}}\n' for p, c in ro)
    rules += f'''# a host's PKI role: re-created by vault-setup, deleted by `histo identity revoke --block`
path "{INT}/roles/host-*" {{
  capabilities = ["read", "create", "update", "delete"]
}}
# destroy a secret_id (a host rebuilt, a drill's extra one); never read one
path "auth/{APPROLE}/role/+/secret-id/destroy" {{
  capabilities = ["update"]
}}
# list a role's secret_id accessors (not the secret_ids: quarantine release looks up their creation
# times). Its own stanza: the one below holds the wrapping constraint, which Vault applies to every
# operation of its path (a list there would have to be response-wrapped); a list's path ends in '/'.
path "auth/{APPROLE}/role/+/secret-id/" {{
  capabilities = ["list"]
}}
# secret_ids only response-wrapped: the provisioner never sees one
path "auth/{APPROLE}/role/+/secret-id" {{
  capabilities = ["update"]
  min_wrapping_ttl = "1s"
  max_wrapping_ttl = "15m"
}}
'''
    return rules


def apply(client: hvac.Client, spec: dict) -> dict:
    """Bring Vault to `spec`; returns {"changed": bool, "changes": [...], "role_ids": {host: role_id}}."""
    return _Applier(client, spec).run()
