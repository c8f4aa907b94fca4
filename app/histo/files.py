"""The one owner of private files (as Patroni's file_perm.py): every secret, key, credential and
generated configuration is written here, never with a bare open().

write_private() writes through a temp file that is 0600 from its creation, fsyncs it, renames it
over the target and fsyncs the folder: a reader sees the old file or the new one, never half of
one, and never a moment where others could read it. private_dir() makes (or tightens) a 0700 folder.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def private_dir(path: Path) -> Path:
    """`path` and any missing parents, the leaf 0700 even if it existed wider before."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    """Atomically replace `path` with `data`; `mode` (0600 unless a public file such as a CA
    certificate asks for 0644) applies from the file's creation."""
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk.
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
