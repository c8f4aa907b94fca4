"""Who is calling the public API: bearer tokens signed by Vault transit, verified here with
public keys fetched from Vault; roles; per-address throttling of failures; per-principal and
per-address rate limits; revocations shared by all masters through ZooKeeper."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web

from ..edge.admission import Admission, Refused
from ..edge.middleware import bearer_token, client_addr, json_error
from ..edge.ratelimit import AuthFailureTracker, RateLimiter
from ..edge.tokens import AuthError, KeysUnavailable, Principal, RevocationSet, TokenVerifier, vault_public_keys
from ..zk.revocations import RevocationStore

if TYPE_CHECKING:
    from .service import Master

log = logging.getLogger("histo.auth")


class Authenticator:
    def __init__(self, master: "Master", store: RevocationStore) -> None:
        self.m = master
        self.store = store
        self.revoked = RevocationSet()
        self.verifier = TokenVerifier(self._fetch_keys, issuer="histo", audience="histo-api",
                                      is_revoked=self.revoked.__contains__)
        cfg = master.cfg
        self.failures = AuthFailureTracker(threshold=cfg.auth_failures_before_block, window_s=60,
                                           block_s=cfg.auth_block_seconds)
        self.per_address = RateLimiter(rate_per_s=cfg.rate_per_address, burst=cfg.burst_per_address)
        self.uploads = RateLimiter(rate_per_s=cfg.uploads_per_principal, burst=cfg.upload_burst)
        self.admission = Admission(pixels=cfg.pixels_per_principal, window=cfg.pixel_window,
                                   decodes=cfg.max_concurrent_decodes, jobs=cfg.max_running_jobs,
                                   reads=cfg.uploads_in_flight)

    def _fetch_keys(self) -> dict[str, str]:
        return vault_public_keys(self.m.rt.vault.client)

    def start(self) -> None:
        """Fetch the verification keys once, and follow the shared revocation list."""
        try:
            self.verifier.refresh()
        except KeysUnavailable as exc:  # Vault away at start: keys are fetched on first use instead
            log.warning("token keys not fetched yet: %s", exc)
        self.verifier.follow()  # key config changes (min_decryption_version) in force within seconds
        self.store.follow(self.revoked)

    def revoke(self, jti: str, exp: float) -> None:
        self.store.revoke(jti, exp)
        self.revoked.add(jti, exp)

    # -- per request ---------------------------------------------------------------------------
    def verify_token(self, token: str, request: web.Request) -> Principal:
        addr = client_addr(request)
        try:
            return self.verifier.verify(token)
        except AuthError as exc:
            self.failed(request, addr, exc.reason)
            raise

    def failed(self, request: web.Request, addr: str, reason: str) -> None:
        self.m.emit("auth_failure", severity="warning", where=addr, reason=reason, path=request.path)
        self.m.audit.record(who="-", role="-", what=f"{request.method} {request.path}", where=addr,
                            decision="deny", why=f"authentication failed: {reason}")
        if self.failures.failure(addr):
            self.m.emit("auth_throttled", severity="critical", where=addr,
                        reason="repeated authentication failures; address throttled")

    def gate(self, request: web.Request) -> str:
        """The per-address request limit and the failure throttle, before any credential is looked at
        (HTTP routes and the event stream alike); the client's address."""
        addr = client_addr(request)
        ok, retry = self.per_address.check(addr)
        if not ok:
            self.m.emit("rate_limited", severity="warning", where=addr, scope="address")
            raise json_error(429, "rate_limited", "too many requests", headers={"Retry-After": str(int(retry) + 1)})
        blocked = self.failures.blocked(addr)
        if blocked:
            raise json_error(429, "throttled", "too many failed authentications from this address",
                             headers={"Retry-After": str(int(blocked) + 1)})
        return addr

    async def require(self, request: web.Request, roles: tuple[str, ...]) -> Principal:
        addr = self.gate(request)
        token = bearer_token(request)
        if not token:
            self.failed(request, addr, "missing token")
            raise json_error(401, "unauthorized", "a bearer token is required",
                             headers={"WWW-Authenticate": 'Bearer realm="histo"'})
        try:
            principal = self.verify_token(token, request)
        except KeysUnavailable:
            raise json_error(503, "vault_unavailable", "tokens cannot be verified right now; try again shortly",
                             headers={"Retry-After": "5"}) from None
        except AuthError as exc:
            raise json_error(401, "unauthorized", f"invalid token: {exc.reason}",
                             headers={"WWW-Authenticate": 'Bearer realm="histo", error="invalid_token"'}) from None
        if principal.role not in roles:
            self.m.emit("forbidden", severity="warning", who=principal.sub, role=principal.role, where=addr,
                        path=request.path)
            self.m.audit_decision(principal, request, f"{request.method} {request.path}", False,
                                  f"role {principal.role} not in {'/'.join(roles)}")
            raise json_error(403, "forbidden", f"role {principal.role} may not do this")
        request["principal"] = principal
        return principal

    def limit_uploads(self, request: web.Request, principal: Principal) -> None:
        """Counted by the master that received the upload (every master admits uploads itself): each
        charges as many tokens as there are live masters, so the cluster allows one rate per principal
        however the uploads are spread."""
        ok, retry = self.uploads.check(principal.sub, cost=self.m.live_masters())
        if not ok:
            self.m.emit("rate_limited", severity="warning", who=principal.sub, where=client_addr(request),
                        scope="principal")
            raise json_error(429, "rate_limited", "too many uploads; slow down",
                             headers={"Retry-After": str(int(retry) + 1)})

    def refused(self, request: web.Request, principal: Principal, exc: Refused) -> web.HTTPException:
        """An admission refusal as the JSON error it is answered with (and the event it makes)."""
        self.m.emit("admission_refused", severity="warning", who=principal.sub, where=client_addr(request),
                    reason=exc.code)
        self.m.audit_decision(principal, request, "POST /api/v1/jobs", False, f"admission: {exc.code}")
        return json_error(exc.status, exc.code, exc.message, headers={"Retry-After": str(exc.retry_after)})
