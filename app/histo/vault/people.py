"""Sign-in through OpenBao's identity OIDC provider: people accounts (userpass, one entity each, one
group per histo role), the provider `histo`, its signing key, the web client `histo` (confidential,
authorization code + PKCE) and the machine clients (client credentials), applied idempotently as
part of vault/setup.py.

spec["oidc"] (absent: nothing of this is configured):
  redirect_uris    the web UI's callback URLs (every master's public URL and the floating one, "/" path)
  issuer           the scheme://host:port the ID tokens name (default: the Vault URL setup talks to)
  people           [{"name": "alice", "groups": ["uploader"]}]; groups among uploader, viewer, admin
                   (none: the person signs in and histo refuses, with the reason)
  machine_clients  [{"name": "ci", "roles": ["uploader"]}]: the roles a script may ask for
  secrets_dir      where a new person's password and a machine client's secret are written (0600),
                   and `accounts` (name, groups, password file per line, in the spec's order)

Passwords are generated here, on the controller, written to `secrets_dir/<name>.password` and given
to Vault in the body of one API call: never on a command line. An existing account keeps its
password (Vault cannot show it, and a re-apply must not change it behind its owner's back)."""
from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Any, Callable, Protocol

import hvac
from hvac.exceptions import Forbidden, InvalidPath

from ..files import private_dir, write_private

PROVIDER, WEB_CLIENT, KEY, SCOPE, ASSIGNMENT = "histo", "histo", "histo", "histo", "histo-people"
USERPASS = "userpass"
ROLES = ("uploader", "viewer", "admin")
GROUP_PREFIX = "histo-"
# Where masters find the machine clients' grants (client_id -> name, roles): written here only.
MACHINE_CLIENTS_KV = "histo/oidc/machine-clients"
# The ID token's claims beyond OpenBao's own (sub is the entity id): the person's name and groups.
SCOPE_TEMPLATE = '{"username": {{identity.entity.name}}, "groups": {{identity.entity.groups.names}}}'
ID_TOKEN_TTL, ACCESS_TOKEN_TTL, SESSION_TTL = "5m", "5m", "15m"
_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,31}")


class SpecError(ValueError):
    """The oidc part of the spec is invalid."""


class Applier(Protocol):
    c: hvac.Client
    base_url: str

    def note(self, what: str) -> None: ...
    def auth_method(self, path: str, method: str) -> None: ...
    def kv_write(self, path: str, data: dict[str, Any]) -> None: ...


def validate(oidc: dict[str, Any]) -> None:
    """Names end up in Vault paths and in histo tokens' subjects: plain lowercase names only."""
    uris = oidc.get("redirect_uris")
    if not isinstance(uris, list) or not uris or not all(isinstance(u, str) and re.fullmatch(r"https?://\S+", u)
                                                          for u in uris):
        raise SpecError("oidc.redirect_uris must be a non-empty list of http(s) URLs")
    seen: set[str] = set()
    for kind, roles_key in (("people", "groups"), ("machine_clients", "roles")):
        for item in oidc.get(kind) or []:
            name = item.get("name", "") if isinstance(item, dict) else ""
            if not isinstance(name, str) or not _NAME.fullmatch(name) or name in seen or name == WEB_CLIENT:
                raise SpecError(f"oidc.{kind}: bad or duplicate name {name!r} (a-z, 0-9, _ . -, up to 32)")
            roles = item.get(roles_key) or []
            if not isinstance(roles, list) or any(r not in ROLES for r in roles):
                raise SpecError(f"oidc.{kind} {name}: {roles_key} must be among {', '.join(ROLES)}")
            seen.add(name)
    if not oidc.get("secrets_dir"):
        raise SpecError("oidc.secrets_dir is required (where new passwords and client secrets go)")


def _read(c: hvac.Client, path: str) -> dict[str, Any]:
    try:
        resp = c.read(path)
    except InvalidPath:
        return {}
    data = resp.get("data") if isinstance(resp, dict) else None
    return data if isinstance(data, dict) else {}


def _same(have: dict[str, Any], want: dict[str, Any]) -> bool:
    def norm(v: Any) -> Any:
        if v is None or isinstance(v, list):  # Vault answers null for an empty list
            return sorted(str(x) for x in v or [])
        return str(v)
    return bool(have) and all(k in have and norm(have[k]) == norm(v) for k, v in want.items()
                              if not k.endswith("_ttl"))


class _People:
    def __init__(self, applier: Applier, oidc: dict[str, Any]) -> None:
        self.a, self.c, self.spec = applier, applier.c, oidc
        self.dir = Path(oidc["secrets_dir"])

    def put(self, path: str, want: dict[str, Any], what: str, echo: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write `want` unless Vault already has it (`echo`: fields Vault reads back in another form)."""
        have = _read(self.c, path)
        if not _same(have, {**want, **(echo or {})}):
            self.c.write_data(path, data=want)
            self.a.note(what)
            have = _read(self.c, path)
        return have

    def _secret_file(self, name: str, content: str) -> Path:
        path = private_dir(self.dir) / name
        write_private(path, content)
        return path

    # -- people ------------------------------------------------------------------------------------
    def person(self, name: str, accessor: str, password: Callable[[], str]) -> str:
        """The person's userpass account and its entity (linked by an alias); returns the entity id."""
        if not _read(self.c, f"auth/{USERPASS}/users/{name}"):
            pw = password()
            path = self._secret_file(f"{name}.password", pw + "\n")  # first: a password Vault took is never lost
            try:
                self.c.write_data(f"auth/{USERPASS}/users/{name}",
                                  data={"password": pw, "token_ttl": SESSION_TTL, "token_max_ttl": SESSION_TTL})
            except Forbidden:
                path.unlink()  # no account, so no password file that names none
                raise PermissionError(f"creating the account {name} needs a root token (docs/SECURITY.md, "
                                      "'Secret zero'): the provisioner token only verifies sign-in") from None
            self.a.note(f"person {name}")
        entity = self.put(f"identity/entity/name/{name}", {"metadata": {"histo": "person"}}, f"entity {name}")
        if not any(al.get("mount_accessor") == accessor for al in entity.get("aliases") or []):
            self.c.write_data("identity/entity-alias",
                              data={"name": name, "canonical_id": entity["id"], "mount_accessor": accessor})
            self.a.note(f"alias {name}")
        return str(entity["id"])

    def groups(self, members: dict[str, list[str]]) -> list[str]:
        ids = []
        for role in ROLES:
            group = self.put(f"identity/group/name/{GROUP_PREFIX}{role}",
                             {"type": "internal", "member_entity_ids": sorted(members[role])}, f"group {role}")
            ids.append(str(group["id"]))
        return ids

    # -- the provider --------------------------------------------------------------------------------
    def client(self, name: str, want: dict[str, Any]) -> dict[str, Any]:
        return self.put(f"identity/oidc/client/{name}", {"key": KEY, "id_token_ttl": ID_TOKEN_TTL,
                                                          "access_token_ttl": ACCESS_TOKEN_TTL, **want},
                        f"oidc client {name}")

    def run(self) -> dict[str, Any]:
        self.a.auth_method(USERPASS, "userpass")
        mount = self.c.sys.list_auth_methods()["data"][f"{USERPASS}/"]
        accessor = mount["accessor"]
        if (mount.get("config") or {}).get("listing_visibility") != "unauth":
            # OpenBao's sign-in page then offers username and password first (not a Vault token)
            self.c.write_data(f"sys/auth/{USERPASS}/tune", data={"listing_visibility": "unauth"})
            self.a.note("userpass on the sign-in page")
        members: dict[str, list[str]] = {r: [] for r in ROLES}
        entities = []
        for p in self.spec.get("people") or []:
            eid = self.person(p["name"], accessor, lambda: secrets.token_urlsafe(18))
            entities.append(eid)
            for g in p.get("groups") or []:
                members[g].append(eid)
        group_ids = self.groups(members)
        # who is who, in the spec's order (no secret): `make up` and `make local` name the first account
        listing = "".join(f"{p['name']} {','.join(p.get('groups') or []) or '-'} "
                          f"{self.dir / (p['name'] + '.password')}\n" for p in self.spec.get("people") or [])
        self._secret_file("accounts", listing)
        # Every listed person may sign in (so one without a histo group hears why histo refuses);
        # anyone else OpenBao refuses at its own authorize step.
        self.put(f"identity/oidc/assignment/{ASSIGNMENT}", {"entity_ids": sorted(entities), "group_ids": group_ids},
                 "oidc assignment")
        self.put(f"identity/oidc/key/{KEY}", {"algorithm": "ES256", "allowed_client_ids": ["*"],
                                              "rotation_period": 86400, "verification_ttl": 86400}, "oidc key")
        self.put(f"identity/oidc/scope/{SCOPE}", {"template": SCOPE_TEMPLATE,
                                                  "description": "histo: the person's name and groups"},
                 "oidc scope")
        web = self.client(WEB_CLIENT, {"redirect_uris": self.spec["redirect_uris"], "assignments": [ASSIGNMENT],
                                       "client_type": "confidential"})
        grants, client_ids = {}, [web["client_id"]]
        for mc in self.spec.get("machine_clients") or []:
            have = self.client(mc["name"], {"assignments": [], "client_credentials": True,
                                            "authorization_code": False, "client_type": "confidential"})
            client_ids.append(have["client_id"])
            grants[have["client_id"]] = {"name": mc["name"], "roles": sorted(mc.get("roles") or [])}
            cred = self.dir / f"{mc['name']}.client"
            if not cred.exists():
                self._secret_file(cred.name, json.dumps({"client_id": have["client_id"],
                                                         "client_secret": have["client_secret"]}) + "\n")
        self.a.kv_write(MACHINE_CLIENTS_KV, {"clients": grants})
        issuer = str(self.spec.get("issuer") or self.a.base_url).rstrip("/")
        effective = f"{issuer}/v1/identity/oidc/provider/{PROVIDER}"
        self.put(f"identity/oidc/provider/{PROVIDER}", {"issuer": issuer, "allowed_client_ids": sorted(client_ids),
                                                        "scopes_supported": [SCOPE]}, "oidc provider",
                 echo={"issuer": effective})
        return {"client_id": web["client_id"], "issuer": effective}


def apply(applier: Applier, oidc: dict[str, Any]) -> dict[str, Any]:
    """Bring the people, groups, provider and clients to `oidc`; returns the web client's id and the issuer."""
    validate(oidc)
    return _People(applier, oidc).run()


def master_policy() -> str:
    """What a master adds for sign-in: the web client's id and secret (to redeem codes), the machine
    clients' grants, and signing its own API tokens with the token key (allowed parameters only)."""
    return (f'path "identity/oidc/client/{WEB_CLIENT}" {{\n  capabilities = ["read"]\n}}\n'
            f'path "secret/data/{MACHINE_CLIENTS_KV}" {{\n  capabilities = ["read"]\n}}\n')
