"""API tokens: compact JWS (ES256) signed by Vault's transit engine — the signing key never leaves
Vault — and verified on the masters with public keys fetched from Vault and cached."""
from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Callable

import hvac
import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

ROLES = ("uploader", "viewer", "admin")
ISSUER, AUDIENCE = "histo", "histo-api"
KEY, MOUNT = "histo-tokens", "transit"
MAX_TTL = 3600
REFETCH_INTERVAL = 1.0


class KeysUnavailable(Exception):
    """The verification keys cannot be fetched (Vault away) and none is cached for this token."""


class AuthError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Principal:
    sub: str
    role: str
    jti: str
    exp: float


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parse_ttl(text: str) -> int:
    m = re.fullmatch(r"(\d+)([smh]?)", text.strip())
    if not m:
        raise ValueError(f"bad ttl {text!r}: use e.g. 900, 90s, 15m or 1h")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def issue_token(vault: hvac.Client, *, role: str, subject: str, ttl_seconds: int, issuer: str = ISSUER,
                audience: str = AUDIENCE, key: str = KEY, mount: str = MOUNT) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not 0 < ttl_seconds <= MAX_TTL:
        raise ValueError(f"ttl must be between 1 s and {MAX_TTL} s")
    if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", subject):
        raise ValueError("subject must be 1-64 characters of letters, digits, _ . @ -")
    version = vault.secrets.transit.read_key(key, mount_point=mount)["data"]["latest_version"]
    now = int(time.time())
    header = {"alg": "ES256", "typ": "JWT", "kid": f"{key}:{version}"}
    claims = {"iss": issuer, "aud": audience, "sub": subject, "role": role, "iat": now, "nbf": now,
              "exp": now + ttl_seconds, "jti": secrets.token_hex(16)}
    signing_input = _b64url(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        _b64url(json.dumps(claims, separators=(",", ":")).encode())
    resp = vault.secrets.transit.sign_data(
        key, base64.b64encode(signing_input.encode()).decode(), key_version=version,
        hash_algorithm="sha2-256", marshaling_algorithm="jws", mount_point=mount)
    signature = resp["data"]["signature"].split(":", 2)[2]  # "vault:v<N>:<base64url r||s>"
    return signing_input + "." + signature


def vault_public_keys(vault: hvac.Client, key: str = KEY, mount: str = MOUNT) -> dict[str, str]:
    keys = vault.secrets.transit.read_key(key, mount_point=mount)["data"]["keys"]
    return {f"{key}:{version}": info["public_key"] for version, info in keys.items() if info.get("public_key")}


class RevocationSet:
    """Revoked token ids until their tokens would have expired anyway."""

    def __init__(self) -> None:
        self._items: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, jti: str, exp: float) -> None:
        with self._lock:
            self._items[jti] = exp

    def discard(self, jti: str) -> None:
        with self._lock:
            self._items.pop(jti, None)

    def __contains__(self, jti: object) -> bool:
        return jti in self._items

    def __iter__(self):
        return iter(list(self._items))

    def prune(self, now: float | None = None) -> None:
        now = now or time.time()
        with self._lock:
            for jti in [j for j, exp in self._items.items() if exp < now]:
                del self._items[jti]


class TokenVerifier:
    def __init__(self, fetch_keys: Callable[[], dict[str, str]], issuer: str = ISSUER, audience: str = AUDIENCE,
                 is_revoked: Callable[[str], bool] = lambda jti: False, leeway: int = 5,
                 clock: Callable[[], float] = time.time) -> None:
        self._fetch, self.issuer, self.audience = fetch_keys, issuer, audience
        self._revoked, self.leeway, self._clock = is_revoked, leeway, clock
        self._keys: dict[str, object] = {}
        self._last_fetch = 0.0
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Fetch the public keys now (at start, and on an unknown kid); the cache survives Vault outages."""
        with self._lock:
            self._last_fetch = self._clock()
            try:
                fetched = self._fetch()
            except Exception as exc:
                raise KeysUnavailable(f"cannot fetch token keys: {type(exc).__name__}") from None
            self._keys = {k: load_pem_public_key(v.encode()) for k, v in fetched.items()}

    def _key(self, kid: str):
        key = self._keys.get(kid)
        if key is not None:
            return key
        # unknown kid: maybe a rotation; look again, but at most once a second (a flood of made-up
        # kids must not turn into a flood of Vault reads)
        if self._clock() - self._last_fetch >= REFETCH_INTERVAL or not self._keys:
            self.refresh()
        key = self._keys.get(kid)
        if key is None:
            raise AuthError("unknown_key")
        return key

    def verify(self, token: str) -> Principal:
        if not token or len(token) > 4096:
            raise AuthError("malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("malformed") from None
        if header.get("alg") != "ES256":  # never "none", never HMAC with a public key
            raise AuthError("bad_algorithm")
        key = self._key(str(header.get("kid", "")))
        try:
            claims = jwt.decode(token, key, algorithms=["ES256"], audience=self.audience, issuer=self.issuer,
                                leeway=self.leeway,
                                options={"require": ["exp", "iat", "nbf", "sub", "jti", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise AuthError("expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("not_yet_valid") from None
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError):
            raise AuthError("wrong_audience_or_issuer") from None
        except jwt.InvalidSignatureError:
            raise AuthError("bad_signature") from None
        except jwt.PyJWTError:
            raise AuthError("invalid") from None
        if claims["iat"] > self._clock() + self.leeway:
            raise AuthError("not_yet_valid")
        if claims["exp"] - claims["iat"] > MAX_TTL + self.leeway:
            raise AuthError("lifetime_too_long")
        if claims.get("role") not in ROLES:
            raise AuthError("unknown_role")
        if self._revoked(claims["jti"]):
            raise AuthError("revoked")
        return Principal(sub=str(claims["sub"]), role=claims["role"], jti=claims["jti"], exp=claims["exp"])
