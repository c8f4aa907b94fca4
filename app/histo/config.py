"""Service configuration: one JSON file per service, the same in local mode and on machines."""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from . import TRUST_DOMAIN
from .durations import parse_duration
from .tls.identity import spiffe_id

ROLES = ("master", "worker")
PUBLIC_ADDRESS_MODES = ("keepalived", "shared")
# Keys an older release wrote that steer nothing now: a config that still names them loads (the strips
# a master cut are gone: a worker splits a job itself, worker_strip_*).
RETIRED_KEYS = frozenset({"tiles_per_worker", "min_tile_pixels"})


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or invalid."""


@dataclass(frozen=True)
class ServiceConfig:
    role: str
    name: str
    address: str
    vault_url: str
    vault_ca: str
    creds_dir: str
    state_dir: str
    zk_hosts: str
    internal_port: int = 8443
    public_port: int = 443
    trust_domain: str = TRUST_DOMAIN
    cert_ttl: str = "1h"
    zk_session_timeout: float = 6.0
    # Public edge limits (master only).
    max_upload_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 64_000_000
    task_timeout: float = 30.0
    # The share of jobs a second worker computes again (drawn unpredictably): their results must be the
    # same bytes, else a third decides and the outvoted worker is reported (master/scheduler.py). 0: off.
    verify_fraction: float = 0.05
    worker_memory_bytes: int = 1536 << 20  # a worker's budget for decoded pixels (worker/admission.py)
    # A worker with no other job splits one of at least worker_strip_min_pixels into row strips over
    # worker_strip_threads threads (equalize.equalize_strips; 1 = never): measured in bench/worker.py,
    # it shortens a 2048² or 4096² job by 15-25 % for up to 25 % more CPU and does not pay at 1024².
    # Freed pixel blocks up to worker_pixel_cache_bytes are kept for the next image instead of being
    # returned and faulted in again (Pillow's block cache); both stay inside worker_memory_bytes.
    worker_strip_threads: int = 2
    worker_strip_min_pixels: int = 2_000_000
    worker_pixel_cache_bytes: int = 256 << 20
    job_timeout: float = 120.0
    # Abuse resistance: requests per second (and burst) per client address, uploads per principal,
    # and failed authentications per address before it is throttled.
    rate_per_address: float = 50.0
    burst_per_address: int = 200
    uploads_per_principal: float = 5.0
    upload_burst: int = 30
    auth_failures_before_block: int = 10
    auth_block_seconds: float = 60.0
    # How long finished jobs (and their stored results) are kept, then their tombstones (seconds).
    job_retention: float = 86400.0
    # The masters' store of sealed uploads and results ("" = <state_dir>/store); how many masters must
    # hold a blob before an upload is accepted or a job is done; each owner's stored bytes (one copy);
    # unwrapped data keys kept in memory (what is served while Vault is away); how many times a job
    # is started (first run plus resumes after its master stopped); seconds between retention passes
    # (leader) and between catch-up/repair passes (every master).
    store_dir: str = ""
    store_quorum: int = 2
    store_quota_bytes: int = 2 << 30
    key_cache_size: int = 4096
    # This service's own security events as JSON lines, for the machine's log shipper ("" = none;
    # machines: /var/log/histo/secops-events.jsonl, edge/events.py EventFile).
    secops_events_file: str = ""
    # Fresh data keys made ahead (datakeys.py): uploads go on while Vault is away, up to this many;
    # an unused one is dropped after key_pool_max_age seconds.
    key_pool_size: int = 256
    key_pool_max_age: int = 600
    max_job_runs: int = 3
    gc_interval: int = 30
    repair_interval: int = 30
    # Connections (edge/conncap.py): open connections per client address and in all, on the public
    # listener and on the internal one; TLS handshake and idle keep-alive timeouts (seconds).
    conn_per_address: int = 64
    conn_total: int = 2048
    internal_conn_per_address: int = 256
    internal_conn_total: int = 1024
    tls_handshake_timeout: float = 10.0
    idle_timeout: float = 15.0
    # Internal peers pool their connections (rpc.py keeps them 30 s): the server must wait longer, or
    # it closes a connection just as a peer reuses it.
    internal_idle_timeout: float = 75.0
    # The soft limit of open files (LimitNOFILE in the unit) must cover every cap plus this margin
    # (ZooKeeper, Vault, outbound pools, files); the service raises it up to the hard limit or refuses to start.
    fd_margin: int = 512
    # Admission by cost (edge/admission.py): decoded pixels per principal per window, and how many
    # uploads the leader reads and decodes at once, and how many jobs it runs at once (else 503).
    pixels_per_principal: int = 256_000_000
    pixel_window: float = 60.0
    max_concurrent_decodes: int = 2
    max_running_jobs: int = 16
    # Upload bodies of one principal read (held in memory) at once on one master (else 429).
    uploads_in_flight: int = 8
    # The cluster's one public address (HISTO_URL), held by a healthy master (master/floating.py): ""
    # for none. Its masters' certificates name it too. "keepalived": this master writes its state to
    # `public_state_file` for keepalived's check (the deployed cluster, roles/keepalived); "shared":
    # every serving master listens on it with SO_REUSEPORT (local mode, where all addresses are loopback).
    public_address: str = ""
    public_address_mode: str = "keepalived"
    public_state_file: str = "/run/histo/public-state"

    @property
    def spiffe_id(self) -> str:
        return spiffe_id(self.role, self.name, self.trust_domain)

    @property
    def internal_url(self) -> str:
        return f"https://{self.address}:{self.internal_port}"

    @property
    def max_blob_bytes(self) -> int:
        """The largest sealed blob a master stores for a peer: an upload, or a result (which may be
        larger than its upload: raw pixels at worst, plus the plot and histograms)."""
        return max(self.max_upload_bytes, self.max_pixels * 4) + (1 << 20)

    @property
    def store_path(self) -> Path:
        return Path(self.store_dir) if self.store_dir else Path(self.state_dir) / "store"

    @property
    def public_url(self) -> str:
        return f"https://{self.address}:{self.public_port}"

    @classmethod
    def load(cls, path: str | Path) -> "ServiceConfig":
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict) -> "ServiceConfig":
        known = {f.name for f in fields(cls)}
        raw = {k: v for k, v in raw.items() if k not in RETIRED_KEYS}
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))}")
        try:
            cfg = cls(**raw)
        except TypeError as exc:
            raise ConfigError(f"invalid config: {exc}") from None
        if cfg.role not in ROLES:
            raise ConfigError(f"role must be one of {ROLES}, not {cfg.role!r}")
        for name in ("conn_per_address", "conn_total", "internal_conn_per_address", "internal_conn_total",
                     "max_concurrent_decodes", "max_running_jobs", "pixels_per_principal", "uploads_in_flight",
                     "store_quorum", "store_quota_bytes", "key_cache_size", "key_pool_max_age", "max_job_runs",
                     "gc_interval", "repair_interval", "worker_strip_threads", "worker_strip_min_pixels"):
            if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 1:
                raise ConfigError(f"{name} must be a positive integer")
        if not isinstance(cfg.key_pool_size, int) or isinstance(cfg.key_pool_size, bool) or cfg.key_pool_size < 0:
            raise ConfigError("key_pool_size must be a non-negative integer (0: no keys made ahead)")
        if (not isinstance(cfg.verify_fraction, (int, float)) or isinstance(cfg.verify_fraction, bool)
                or not 0 <= cfg.verify_fraction <= 1):
            raise ConfigError("verify_fraction must be a number from 0 to 1")
        if (not isinstance(cfg.worker_pixel_cache_bytes, int) or isinstance(cfg.worker_pixel_cache_bytes, bool)
                or not 0 <= cfg.worker_pixel_cache_bytes <= cfg.worker_memory_bytes):
            raise ConfigError("worker_pixel_cache_bytes must be an integer from 0 to worker_memory_bytes")
        if cfg.conn_per_address > cfg.conn_total or cfg.internal_conn_per_address > cfg.internal_conn_total:
            raise ConfigError("a per-address connection cap cannot exceed its total")
        if cfg.public_address_mode not in PUBLIC_ADDRESS_MODES:
            raise ConfigError(f"public_address_mode must be one of {PUBLIC_ADDRESS_MODES}")
        if cfg.public_address and cfg.role != "master":
            raise ConfigError("only a master serves the public address")
        try:
            parse_duration(cfg.cert_ttl)
        except ValueError as exc:
            raise ConfigError(f"cert_ttl: {exc}") from None
        return cfg

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}
