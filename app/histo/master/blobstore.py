"""A master's own disk store of sealed blobs (master/envelope.py): `<store_dir>/<xx>/<job>.<kind>`,
folders 0700, files 0600, written atomically and fsynced (histo/files.py write_private). It holds
ciphertext only; it knows nothing of owners, keys or peers (master/replication.py does)."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..files import private_dir, write_private
from .envelope import KINDS, valid_job_id


@dataclass(frozen=True)
class Entry:
    job: str
    kind: str
    size: int
    mtime: float


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = private_dir(Path(root))

    def path(self, job: str, kind: str) -> Path:
        if not valid_job_id(job) or kind not in KINDS:
            raise ValueError("bad job id or kind")
        return self.root / job[-2:] / f"{job}.{kind}"

    def put(self, job: str, kind: str, blob: bytes) -> None:
        path = self.path(job, kind)
        private_dir(path.parent)
        write_private(path, blob)

    def get(self, job: str, kind: str) -> bytes | None:
        try:
            return self.path(job, kind).read_bytes()
        except FileNotFoundError:
            return None

    def has(self, job: str, kind: str) -> bool:
        return self.path(job, kind).exists()

    def delete(self, job: str) -> int:
        """Remove every blob of `job` (with them, its wrapped key); the bytes freed."""
        freed = 0
        for kind in KINDS:
            path = self.path(job, kind)
            try:
                freed += path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
        return freed

    def entries(self) -> Iterator[Entry]:
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                job, _, kind = path.name.partition(".")
                if kind in KINDS and valid_job_id(job):
                    try:
                        st = path.stat()
                    except FileNotFoundError:
                        continue
                    yield Entry(job, kind, st.st_size, st.st_mtime)

    def bytes_on_disk(self) -> int:
        return sum(e.size for e in self.entries())

    def clean_temp(self, older_than: float = 600.0) -> None:
        """Temporary files a crash left mid-write (write_private's `.<name>.*`)."""
        cutoff = time.time() - older_than
        for folder in self.root.iterdir():
            if folder.is_dir():
                for path in folder.glob(".*"):
                    try:
                        if path.stat().st_mtime < cutoff:
                            os.unlink(path)
                    except FileNotFoundError:
                        continue
