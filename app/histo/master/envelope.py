"""Envelope encryption of what a master stores: an upload or a result, sealed with the job's own
data key (AES-256-GCM, cryptography's AESGCM) whose plaintext lives only in memory.

A sealed blob is self-describing and carries the data key only in its wrapped form (Vault transit
ciphertext, which only Vault can unwrap):

    MAGIC (5 bytes) | header length (4 bytes, big endian) | header (JSON) | ciphertext + GCM tag

The header names the job, the kind (`upload` or `result`), the wrapped key and the nonce. The
associated data is built from the job id, the job's owner and the kind *as ZooKeeper records them*,
never from the header: a blob moved to another job, another owner or another kind does not open.
Removing the blob removes its wrapped key, so the ciphertext left on a disk can no longer be opened.

What a result holds (image, histograms, plot) is framed by pack_result/unpack_result; an upload is
its bytes as received."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..compute import frame
from ..compute.equalize import Result

MAGIC = b"HSTO\x01"
KINDS = ("upload", "result")
MAX_HEADER = 4096
_JOB = re.compile(r"[0-9a-f]{8,64}")


class BlobError(ValueError):
    """A blob that is not a sealed blob of this job and kind, or whose ciphertext was altered."""


@dataclass(frozen=True)
class DataKey:
    plaintext: bytes  # 32 bytes; never written anywhere
    wrapped: str  # Vault transit ciphertext ("vault:v1:...")

    def __repr__(self) -> str:  # never in a log line or a traceback
        return f"DataKey(wrapped={self.wrapped[:16]}...)"


@dataclass(frozen=True)
class Header:
    job: str
    kind: str
    wrapped_key: str
    nonce: bytes
    body_offset: int


def valid_job_id(job: str) -> bool:
    return bool(_JOB.fullmatch(job))


def associated_data(job: str, owner: str, kind: str) -> bytes:
    return b"\0".join((b"histo-store/v1", job.encode(), owner.encode(), kind.encode()))


def digest(blob: bytes) -> str:
    """The integrity tag of a blob as stored and replicated (recorded in the job's znode)."""
    return hashlib.sha256(blob).hexdigest()


def seal(key: DataKey, job: str, owner: str, kind: str, plaintext: bytes) -> bytes:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    nonce = os.urandom(12)
    ciphertext = AESGCM(key.plaintext).encrypt(nonce, plaintext, associated_data(job, owner, kind))
    header = json.dumps({"v": 1, "job": job, "kind": kind, "wrapped_key": key.wrapped,
                         "nonce": base64.b64encode(nonce).decode()}, separators=(",", ":")).encode()
    return MAGIC + len(header).to_bytes(4, "big") + header + ciphertext


def parse(blob: bytes) -> Header:
    """The header of a sealed blob; BlobError if the bytes are not one."""
    if len(blob) < len(MAGIC) + 4 or not blob.startswith(MAGIC):
        raise BlobError("not a sealed blob")
    size = int.from_bytes(blob[len(MAGIC):len(MAGIC) + 4], "big")
    start = len(MAGIC) + 4
    if not 0 < size <= MAX_HEADER or len(blob) < start + size + 16:
        raise BlobError("truncated or oversized header")
    try:
        doc = json.loads(blob[start:start + size])
        header = Header(job=str(doc["job"]), kind=str(doc["kind"]), wrapped_key=str(doc["wrapped_key"]),
                        nonce=base64.b64decode(doc["nonce"], validate=True), body_offset=start + size)
    except (ValueError, KeyError, TypeError) as exc:
        raise BlobError(f"unreadable header ({type(exc).__name__})") from None
    if doc.get("v") != 1 or header.kind not in KINDS or not valid_job_id(header.job) or len(header.nonce) != 12:
        raise BlobError("header of an unknown version, kind, job id or nonce")
    return header


def open_blob(key_plaintext: bytes, blob: bytes, job: str, owner: str, kind: str) -> bytes:
    """The plaintext of a blob of `job` (owned by `owner`) and `kind`; BlobError if anything differs."""
    header = parse(blob)
    if header.job != job or header.kind != kind:
        raise BlobError("blob of another job or kind")
    try:
        return AESGCM(key_plaintext).decrypt(header.nonce, blob[header.body_offset:],
                                             associated_data(job, owner, kind))
    except InvalidTag:
        raise BlobError("ciphertext or associated data altered (GCM tag mismatch)") from None


# -- what a result blob holds ----------------------------------------------------------------------
def unpack_result(data: bytes) -> tuple[Result, bytes]:
    """compute/frame.py unpack_result, its refusals as BlobError (a stored result that does not parse)."""
    try:
        return frame.unpack_result(data)
    except frame.FrameError as exc:
        raise BlobError(str(exc)) from None
