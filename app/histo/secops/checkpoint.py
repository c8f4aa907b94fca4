"""Signed checkpoints of the SecOps log: a compact JWS (ES256) stating "entry <seq> of the log of
<collector> has hash <h>", signed by the collector's own Vault transit key histo-secops-<host> (not
exportable; the collector's policy may sign with it and nothing else on transit). The latest one is
also written off the collector, to Vault's KV (`secret/histo/secops/<host>`, versioned), so removing
the log's tail together with the local checkpoints is detected too."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ..edge import receipts
from ..edge.tokens import _load_es256_key
from .chain import Head

TYP = "histo-log-checkpoint+jwt"
KV_MOUNT = "secret"
_HEX64 = frozenset("0123456789abcdef")


def key_name(host: str) -> str:
    """The transit key of one collector host."""
    return f"histo-secops-{host}"


def anchor_path(host: str) -> str:
    """Where (KV v2 under secret/) the collector keeps its latest checkpoint, off the machine."""
    return f"histo/secops/{host}"


class CheckpointError(Exception):
    """A checkpoint is malformed or its signature does not verify."""


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    ts: float
    collector: str
    kid: str


def claims_for(head: Head, collector: str, now: float | None = None) -> dict[str, Any]:
    return {"iss": receipts.ISSUER, "collector": collector, "seq": head.seq, "hash": head.hash,
            "ts": round(time.time() if now is None else now, 3)}


def verify(jws: str, keys: Mapping[str, str]) -> Checkpoint:
    """The checkpoint `jws` states, if its signature verifies with `keys` (kid -> public key PEM)."""
    try:
        if not isinstance(jws, str) or jws.count(".") != 2 or len(jws) > receipts.MAX_RECEIPT_LEN:
            raise CheckpointError("not a compact JWS")
        h64, c64, s64 = jws.split(".")
        header, claims, sig = receipts._json_part(h64), receipts._json_part(c64), receipts.b64url_decode(s64)
    except receipts.ReceiptError:
        raise CheckpointError("not a compact JWS") from None
    if header != {"alg": "ES256", "typ": TYP, "kid": header.get("kid")}:  # no other field, no other algorithm
        raise CheckpointError(f"unexpected header {sorted(header)}")
    kid = str(header["kid"])
    pem = keys.get(kid)
    key = _load_es256_key(pem) if isinstance(pem, str) else None
    if key is None:
        raise CheckpointError(f"no public key for {kid}")
    if len(sig) != 64:
        raise CheckpointError(f"the signature does not verify with {kid}")
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        key.verify(der, f"{h64}.{c64}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise CheckpointError(f"the signature does not verify with {kid}") from None
    seq, digest, ts, who = claims.get("seq"), claims.get("hash"), claims.get("ts"), claims.get("collector")
    if (not isinstance(seq, int) or isinstance(seq, bool) or seq < 1 or not isinstance(digest, str)
            or len(digest) != 64 or not set(digest) <= _HEX64 or not isinstance(ts, (int, float))
            or not isinstance(who, str) or claims.get("iss") != receipts.ISSUER):
        raise CheckpointError("malformed claims")
    return Checkpoint(seq, digest, float(ts), who, kid)


class VaultCheckpointSigner(receipts.VaultReceiptSigner):
    """Signs heads with transit/sign/histo-secops-<host>, the key version pinned as for receipts."""

    def __init__(self, client: Callable[[], Any], host: str, collector: str) -> None:
        super().__init__(client, key=key_name(host))
        self.collector = collector

    def sign_head(self, head: Head) -> str:
        """Blocking (Vault calls). Raises SigningUnavailable when Vault cannot sign."""
        try:
            return receipts.encode(claims_for(head, self.collector), self.latest_version(), self._pinned,
                                   key=self.key, typ=TYP)
        except receipts.SigningUnavailable:
            raise
        except Exception as exc:
            raise receipts.SigningUnavailable(f"Vault cannot sign checkpoints right now ({type(exc).__name__})") \
                from None


class VaultKvAnchor:
    """The latest checkpoint, off the collector: every write is a new KV v2 version, so a rollback
    (an older checkpoint written after a newer one) shows in the history too."""

    def __init__(self, client: Callable[[], Any], host: str, mount: str = KV_MOUNT) -> None:
        self._client, self.path, self.mount = client, anchor_path(host), mount

    def put(self, jws: str) -> None:
        self._client().secrets.kv.v2.create_or_update_secret(self.path, secret={"checkpoint": jws},
                                                             mount_point=self.mount)

    def history(self) -> list[str]:
        """Every kept version's checkpoint, oldest first (needs read on data and metadata)."""
        kv = self._client().secrets.kv.v2
        versions = kv.read_secret_metadata(self.path, mount_point=self.mount)["data"]["versions"]
        out = []
        for v in sorted(versions, key=int):
            info = versions[v]
            if info.get("destroyed") or info.get("deletion_time"):
                continue
            data = kv.read_secret_version(self.path, version=int(v), mount_point=self.mount,
                                          raise_on_deleted_version=True)["data"]["data"]
            out.append(str(data.get("checkpoint", "")))
        return out
