"""THE Vault configuration of histo, applied idempotently by one piece of code: local mode calls
apply() directly; the `vault_config` Ansible role runs `histo vault-setup --spec ...`.

Each step reads what is there and writes only what differs, so a second apply reports no change.
Identity is per host: one PKI role, one policy and one AppRole per host, so a compromised worker
can obtain its own certificate and its role's ZooKeeper credentials, and nothing else."""
from __future__ import annotations

import base64
import hashlib
import re
import secrets
from typing import Any

import hvac
from hvac.exceptions import InvalidPath

ROOT, INT, KV, TRANSIT, APPROLE = "pki", "pki_int", "secret", "transit", "approle"
TOKEN_KEY = "histo-tokens"
ISSUER_POLICY = "histo-token-issuer"
ZK_ROLES = ("master", "worker")


def _seconds(value: str | int) -> int:
    if isinstance(value, int):
        return value
    total = 0
    for num, unit in re.findall(r"(\d+)([smhd]?)", value):
        total += int(num) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    return total


def zk_digest(username: str, password: str) -> str:
    """ZooKeeper's digest id: user:base64(sha1(user:password))."""
    return f"{username}:" + base64.b64encode(hashlib.sha1(f"{username}:{password}".encode()).digest()).decode()


class _Applier:
    def __init__(self, client: hvac.Client, spec: dict) -> None:
        self.c, self.spec = client, spec
        self.td = spec.get("trust_domain", "histo.internal")
        self.changed: list[str] = []

    def note(self, what: str) -> None:
        self.changed.append(what)

    # -- engines -------------------------------------------------------------------------------
    def mount(self, path: str, backend: str, max_ttl: str | None = None, options: dict | None = None) -> None:
        mounts = self.c.sys.list_mounted_secrets_engines()
        mounts = mounts.get("data", mounts)
        if f"{path}/" in mounts:
            return
        config = {"max_lease_ttl": max_ttl} if max_ttl else None
        self.c.sys.enable_secrets_engine(backend, path=path, config=config, options=options)
        self.note(f"mount {path}")

    def auth_method(self, path: str, method: str) -> None:
        methods = self.c.sys.list_auth_methods()
        methods = methods.get("data", methods)
        if f"{path}/" not in methods:
            self.c.sys.enable_auth_method(method, path=path)
            self.note(f"auth {path}")

    # -- PKI --------------------------------------------------------------------------------------
    def pki(self) -> None:
        self.mount(ROOT, "pki", "87600h")
        self.mount(INT, "pki", "43800h")
        if not self.c.secrets.pki.read_ca_certificate(mount_point=ROOT).strip():
            self.c.secrets.pki.generate_root("internal", "histo root CA", mount_point=ROOT,
                                             extra_params={"key_type": "ec", "key_bits": 256, "ttl": "87600h",
                                                           "issuer_name": "root"})
            self.note("root CA")
        if not self.c.secrets.pki.read_ca_certificate(mount_point=INT).strip():
            csr = self.c.secrets.pki.generate_intermediate(
                "internal", "histo intermediate CA", mount_point=INT,
                extra_params={"key_type": "ec", "key_bits": 256})["data"]["csr"]
            signed = self.c.secrets.pki.sign_intermediate(
                csr, "histo intermediate CA", mount_point=ROOT,
                extra_params={"ttl": "43800h", "format": "pem_bundle"})["data"]
            root = self.c.secrets.pki.read_ca_certificate(mount_point=ROOT).strip()
            self.c.secrets.pki.set_signed_intermediate(signed["certificate"].strip() + "\n" + root,
                                                       mount_point=INT)
            self.note("intermediate CA")
        for host in self.spec["hosts"]:
            self.pki_role(host)

    def pki_role(self, host: dict) -> None:
        name, role = host["name"], host["role"]
        want = {
            "key_type": "ec", "key_bits": 256, "allowed_domains": [f"{name}.{self.td}", name],
            "allow_bare_domains": True, "allow_subdomains": False, "allow_glob_domains": False,
            "allow_localhost": False, "allow_ip_sans": True,
            "allowed_uri_sans": [f"spiffe://{self.td}/{role}/{name}"], "enforce_hostnames": False,
            "server_flag": True, "client_flag": True, "max_ttl": _seconds(self.spec.get("leaf_max_ttl", "24h")),
            "not_before_duration": 30, "no_store": False, "require_cn": True,
        }
        path = f"host-{name}"
        try:
            have = self.c.secrets.pki.read_role(path, mount_point=INT)["data"]
        except InvalidPath:
            have = {}
        if any(_norm(have.get(k)) != _norm(v) for k, v in want.items()):
            self.c.secrets.pki.create_or_update_role(path, extra_params=want, mount_point=INT)
            self.note(f"pki role {path}")

    # -- KV: ZooKeeper credentials ------------------------------------------------------------------
    def kv_secret(self, path: str, factory) -> dict:
        try:
            return self.c.secrets.kv.v2.read_secret_version(path, mount_point=KV,
                                                             raise_on_deleted_version=True)["data"]["data"]
        except InvalidPath:
            data = factory()
            self.c.secrets.kv.v2.create_or_update_secret(path, secret=data, mount_point=KV)
            self.note(f"kv {path}")
            return data

    def zk_credentials(self) -> None:
        self.mount(KV, "kv", options={"version": "2"})
        ids = {}
        for role in ZK_ROLES:
            user = f"histo-{role}"
            cred = self.kv_secret(f"histo/zk/{role}", lambda u=user: {"username": u,
                                                                      "password": secrets.token_urlsafe(32)})
            ids[role] = zk_digest(cred["username"], cred["password"])

        def super_cred() -> dict:
            pw = secrets.token_urlsafe(32)
            return {"username": "super", "password": pw, "digest": zk_digest("super", pw)}
        self.kv_secret("histo/zk/super", super_cred)
        # The digest ids (hashes of random passwords, not the passwords) let each role set ACLs
        # naming the other without being able to read the other's password.
        try:
            have = self.c.secrets.kv.v2.read_secret_version("histo/zk/acl-ids", mount_point=KV,
                                                            raise_on_deleted_version=True)["data"]["data"]
        except InvalidPath:
            have = None
        if have != ids:
            self.c.secrets.kv.v2.create_or_update_secret("histo/zk/acl-ids", secret=ids, mount_point=KV)
            self.note("kv histo/zk/acl-ids")

    # -- transit key for API tokens --------------------------------------------------------------------
    def transit(self) -> None:
        self.mount(TRANSIT, "transit")
        try:
            self.c.secrets.transit.read_key(TOKEN_KEY, mount_point=TRANSIT)
        except InvalidPath:
            self.c.secrets.transit.create_key(TOKEN_KEY, key_type="ecdsa-p256", mount_point=TRANSIT)
            self.note("transit key")

    # -- policies and AppRoles ---------------------------------------------------------------------------
    def policy(self, name: str, rules: str) -> None:
        try:
            have = self.c.sys.read_policy(name)["data"]["rules"]
        except InvalidPath:
            have = None
        if (have or "").strip() != rules.strip():
            self.c.sys.create_or_update_policy(name, rules)
            self.note(f"policy {name}")

    def host_policy(self, host: dict) -> str:
        name, role, addr = host["name"], host["role"], host["address"]
        rules = f'''# histo host {name} ({role}): its own certificate, its role's ZooKeeper credentials.
path "{INT}/issue/host-{name}" {{
  capabilities = ["update"]
  allowed_parameters = {{
    "common_name" = ["{name}.{self.td}"]
    "alt_names" = ["{name}", "{name}.{self.td}", ""]
    "ip_sans" = ["{addr}", ""]
    "uri_sans" = ["spiffe://{self.td}/{role}/{name}"]
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
        if role in ZK_ROLES:
            rules += (f'path "{KV}/data/histo/zk/{role}" {{\n  capabilities = ["read"]\n}}\n'
                      f'path "{KV}/data/histo/zk/acl-ids" {{\n  capabilities = ["read"]\n}}\n')
        if role == "master":
            rules += f'path "{TRANSIT}/keys/{TOKEN_KEY}" {{\n  capabilities = ["read"]\n}}\n'
        if role == "zookeeper":
            rules += f'path "{KV}/data/histo/zk/super" {{\n  capabilities = ["read"]\n}}\n'
        return rules

    def approle(self, host: dict) -> str:
        name, cidr = host["name"], f"{host['address']}/32"
        want = {
            "token_policies": [f"histo-{name}"], "secret_id_bound_cidrs": [cidr], "token_bound_cidrs": [cidr],
            "secret_id_ttl": _seconds(self.spec.get("secret_id_ttl", "720h")), "secret_id_num_uses": 0,
            "token_ttl": _seconds(self.spec.get("token_ttl", "1h")),
            "token_max_ttl": _seconds(self.spec.get("token_max_ttl", "24h")), "token_type": "service",
            "bind_secret_id": True,
        }
        role_name = f"histo-{name}"
        try:
            have = self.c.auth.approle.read_role(role_name)["data"]
        except InvalidPath:
            have = {}
        if any(_norm(have.get(k)) != _norm(v) for k, v in want.items()):
            self.c.auth.approle.create_or_update_approle(role_name, **want)
            self.note(f"approle {role_name}")
        return self.c.auth.approle.read_role_id(role_name)["data"]["role_id"]

    def run(self) -> dict:
        self.pki()
        self.zk_credentials()
        self.transit()
        self.auth_method(APPROLE, "approle")
        self.policy(ISSUER_POLICY, f'''# may sign API tokens with the transit key; the key never leaves Vault
path "{TRANSIT}/sign/{TOKEN_KEY}" {{
  capabilities = ["update"]
}}
path "{TRANSIT}/keys/{TOKEN_KEY}" {{
  capabilities = ["read"]
}}
''')
        role_ids = {}
        for host in self.spec["hosts"]:
            self.policy(f"histo-{host['name']}", self.host_policy(host))
            role_ids[host["name"]] = self.approle(host)
        return {"changed": bool(self.changed), "changes": self.changed, "role_ids": role_ids}


def _norm(v: Any) -> Any:
    if isinstance(v, list):  # Vault echoes a /32 binding back as the bare address
        return sorted(str(x).removesuffix("/32") for x in v)
    if isinstance(v, bool) or v is None:
        return v
    return str(v)


def apply(client: hvac.Client, spec: dict) -> dict:
    return _Applier(client, spec).run()
