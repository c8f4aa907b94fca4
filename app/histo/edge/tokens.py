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
from typing import Any, Callable, Iterator

import hvac
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from ..durations import parse_duration

ROLES = ("uploader", "viewer", "admin")
ISSUER, AUDIENCE = "histo", "histo-api"
KEY, MOUNT = "histo-tokens", "transit"
MAX_TTL = 3600
MAX_TOKEN_LEN = 4096
# An unknown kid may be a fresh rotation: look in Vault again, but at most this often, so a flood
# of made-up kids never becomes a flood of Vault reads (1 s: a rotation is seen almost at once).
REFETCH_INTERVAL = 1.0
# The whole ring is re-read this often: a raised min_decryption_version reaches every master in seconds.
KEY_FOLLOW_INTERVAL = 2.0
_SUBJECT = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_KID = re.compile(r"(?P<key>[A-Za-z0-9_.-]{1,128}):(?P<version>[0-9]{1,9})")


class KeysUnavailable(Exception):
    """The verification keys cannot be fetched (Vault away) and none is cached for this token."""


class AuthError(Exception):
    """A token is refused; `reason` is short and machine-readable (never contains the token)."""

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
    """'900', '90s', '15m', '1h' -> seconds (used by `histo token issue --ttl`)."""
    return parse_duration(text)


# -- issuing (needs a Vault token whose policy may use transit/sign/histo-tokens) -----------------

def issue_token(vault: hvac.Client, *, role: str, subject: str, ttl_seconds: int, issuer: str = ISSUER,
                audience: str = AUDIENCE, key: str = KEY, mount: str = MOUNT) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or not 0 < ttl_seconds <= MAX_TTL:
        raise ValueError(f"ttl must be between 1 s and {MAX_TTL} s")
    if not _SUBJECT.fullmatch(subject):
        raise ValueError("subject must be 1-64 characters of letters, digits, _ . @ -")
    version = int(vault.secrets.transit.read_key(key, mount_point=mount)["data"]["latest_version"])
    now = int(time.time())
    header = {"alg": "ES256", "typ": "JWT", "kid": f"{key}:{version}"}
    claims = {"iss": issuer, "aud": audience, "sub": subject, "role": role, "iat": now, "nbf": now,
              "exp": now + ttl_seconds, "jti": secrets.token_hex(16)}
    signing_input = (_b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + _b64url(json.dumps(claims, separators=(",", ":")).encode()))
    # key_version pins the signature to the kid above even if the key rotates in between
    resp = vault.secrets.transit.sign_data(
        key, base64.b64encode(signing_input.encode()).decode(), key_version=version,
        hash_algorithm="sha2-256", marshaling_algorithm="jws", mount_point=mount)
    prefix, _, signature = resp["data"]["signature"].partition(f"vault:v{version}:")
    if prefix or not signature:  # "vault:v<N>:<base64url r||s>" with jws marshaling
        raise RuntimeError("unexpected signature format from Vault transit")
    return f"{signing_input}.{signature}"


def vault_public_keys(vault: hvac.Client, key: str = KEY, mount: str = MOUNT) -> dict[str, str]:
    """kid -> public key PEM for every version still in Vault's key ring (read-only access suffices)."""
    keys = vault.secrets.transit.read_key(key, mount_point=mount)["data"]["keys"]
    return {f"{key}:{version}": info["public_key"] for version, info in keys.items()
            if isinstance(info, dict) and info.get("public_key")}


# -- revocation ------------------------------------------------------------------------------------

class RevocationSet:
    """Revoked token ids, each kept until its token would have expired anyway (then pruned).
    The master mirrors the ZooKeeper children of /histo/revoked into it."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._items: dict[str, float] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def add(self, jti: str, exp: float) -> None:
        with self._lock:
            self._items[jti] = max(float(exp), self._items.get(jti, 0.0))

    def discard(self, jti: str) -> None:
        with self._lock:
            self._items.pop(jti, None)

    def __contains__(self, jti: object) -> bool:
        with self._lock:
            return jti in self._items

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._items))

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def prune(self, now: float | None = None) -> int:
        """Forget revocations of tokens that have expired; returns how many were dropped."""
        now = self._clock() if now is None else now
        with self._lock:
            gone = [j for j, exp in self._items.items() if exp < now]
            for jti in gone:
                del self._items[jti]
        return len(gone)


# -- verifying ---------------------------------------------------------------------------------------

def _load_es256_key(pem: str) -> ec.EllipticCurvePublicKey | None:
    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        return None
    # only P-256 keys can verify ES256; anything else in the ring is ignored, not trusted
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    return None


def _number(claims: dict[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AuthError("invalid")
    return float(value)


class TokenVerifier:
    def __init__(self, fetch_keys: Callable[[], dict[str, str]], issuer: str = ISSUER, audience: str = AUDIENCE,
                 is_revoked: Callable[[str], bool] = lambda jti: False, leeway: int = 5,
                 clock: Callable[[], float] = time.time, refetch_interval: float = REFETCH_INTERVAL) -> None:
        self._fetch, self.issuer, self.audience = fetch_keys, issuer, audience
        self._revoked, self.leeway, self._clock = is_revoked, leeway, clock
        self.refetch_interval = refetch_interval
        self._keys: dict[str, ec.EllipticCurvePublicKey] = {}
        self._last_fetch: float | None = None
        self._lock = threading.Lock()

    @property
    def kids(self) -> list[str]:
        return sorted(self._keys)

    def refresh(self) -> None:
        """Fetch the public keys now (at start, and on an unknown kid). On failure the cached keys stay
        in use, so tokens of known versions keep working through a Vault outage."""
        with self._lock:
            self._last_fetch = self._clock()
            try:
                fetched = self._fetch()
            except Exception as exc:
                raise KeysUnavailable(f"cannot fetch token keys: {type(exc).__name__}") from None
            keys = {kid: k for kid, pem in fetched.items() if (k := _load_es256_key(pem)) is not None}
            # versions gone from Vault's ring (min_decryption_version raised) stop verifying here
            self._keys = keys

    def follow(self, interval: float = KEY_FOLLOW_INTERVAL) -> threading.Event:
        """Re-read the key ring every `interval` seconds on a daemon thread, so any change of the key's
        configuration (min_decryption_version raised, a version trimmed) is in force here within
        seconds, not only a newer version. Set the returned event to stop."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(interval):
                try:
                    self.refresh()
                except KeysUnavailable:
                    pass  # Vault away: the cached keys stay in use
        threading.Thread(target=loop, name="histo-token-keys", daemon=True).start()
        return stop

    def _may_be_newer(self, kid: str) -> bool:
        """A kid worth a Vault look: our key name and a version above every one we hold. Versions
        at or below it that we do not hold were removed from the ring and stay refused."""
        m = _KID.fullmatch(kid)
        if not m:
            return False
        versions = [int(v.group("version")) for k in self._keys if (v := _KID.fullmatch(k))
                    and v.group("key") == m.group("key")]
        if not versions:  # nothing held of that key name: worth a look only while we hold nothing
            return not self._keys
        return int(m.group("version")) > max(versions)

    def _key(self, kid: str) -> ec.EllipticCurvePublicKey:
        key = self._keys.get(kid)
        if key is not None:
            return key
        last = self._last_fetch
        if self._may_be_newer(kid) and (last is None or self._clock() - last >= self.refetch_interval):
            self.refresh()
            key = self._keys.get(kid)
            if key is not None:
                return key
        raise AuthError("unknown_key")

    def verify(self, token: str) -> Principal:
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LEN or token.count(".") != 2:
            raise AuthError("malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("malformed") from None
        if header.get("alg") != "ES256":  # never "none", never HMAC keyed with a public key
            raise AuthError("bad_algorithm")
        if "crit" in header or "jku" in header or "jwk" in header or "x5u" in header:
            raise AuthError("bad_header")  # no header may point us at a key or extension of its choosing
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise AuthError("unknown_key")
        key = self._key(kid)
        try:
            # Times are checked below against our own (injectable) clock.
            claims = jwt.decode(token, key, algorithms=["ES256"], audience=self.audience, issuer=self.issuer,
                                options={"require": ["exp", "iat", "nbf", "sub", "jti", "iss", "aud"],
                                         "verify_exp": False, "verify_nbf": False, "verify_iat": False})
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError):
            raise AuthError("wrong_audience_or_issuer") from None
        except jwt.InvalidSignatureError:
            raise AuthError("bad_signature") from None
        except jwt.DecodeError:
            raise AuthError("malformed") from None
        except jwt.PyJWTError:
            raise AuthError("invalid") from None
        now = self._clock()
        exp, nbf, iat = _number(claims, "exp"), _number(claims, "nbf"), _number(claims, "iat")
        if exp <= now - self.leeway:
            raise AuthError("expired")
        if nbf > now + self.leeway or iat > now + self.leeway:
            raise AuthError("not_yet_valid")
        if exp - min(iat, nbf) > MAX_TTL + self.leeway:
            raise AuthError("lifetime_too_long")  # longer than any token we ever issue
        sub, jti, role = claims.get("sub"), claims.get("jti"), claims.get("role")
        if not isinstance(sub, str) or not _SUBJECT.fullmatch(sub) or not isinstance(jti, str) or not jti:
            raise AuthError("invalid")
        if role not in ROLES:
            raise AuthError("unknown_role")
        if self._revoked(jti):
            raise AuthError("revoked")
        return Principal(sub=sub, role=role, jti=jti, exp=exp)
