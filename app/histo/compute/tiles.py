"""Row strips. row_ranges cuts the rows a worker's threads share (equalize.equalize_strips). The rest —
tobytes() once, zero-copy slices, each strip wrapped as an image for Pillow's C paths (Image.histogram,
Image.point), never numpy, so that the result is the same bytes as the single-process reference — is
what bench/kernel.py measures against Pillow's whole-image calls."""
from __future__ import annotations

from typing import Sequence

from PIL import Image

Buffer = bytes | bytearray | memoryview
# The work image modes and their bytes per pixel: the one table, also what the task protocol accepts.
WORK_MODES = {"L": 1, "RGB": 3}


def bands_of(mode: str) -> int:
    """Bytes per pixel of a work image mode ("L" 1, "RGB" 3)."""
    try:
        return WORK_MODES[mode]
    except KeyError:
        raise ValueError(f"unsupported tile mode {mode!r}") from None


def row_ranges(height: int, parts: int) -> list[tuple[int, int]]:
    """`parts` contiguous [start, end) row ranges of near-equal size; never an empty one."""
    if height <= 0:
        raise ValueError("height must be positive")
    parts = max(1, min(parts, height))
    base, extra = divmod(height, parts)
    out, start = [], 0
    for i in range(parts):
        end = start + base + (1 if i < extra else 0)  # the first `extra` strips take one more row
        out.append((start, end))
        start = end
    return out


def split_rows(raw: Buffer, width: int, bands: int, ranges: Sequence[tuple[int, int]]) -> list[memoryview]:
    """Zero-copy views of `raw` (row-major pixels), one per row range."""
    view = memoryview(raw).cast("B")
    stride = width * bands
    if ranges and ranges[-1][1] * stride > len(view):
        raise ValueError("row ranges go past the end of the pixel buffer")
    return [view[r0 * stride:r1 * stride] for r0, r1 in ranges]


def _expect_size(buf: Buffer, mode: str, width: int, rows: int) -> None:
    # a short buffer would make Pillow raise deep inside; say what is wrong instead
    expected, got = width * rows * bands_of(mode), memoryview(buf).nbytes
    if got != expected:
        raise ValueError(f"tile holds {got} bytes, {width}x{rows} {mode} needs {expected}")


def tile_image(buf: Buffer, mode: str, width: int, rows: int) -> Image.Image:
    """A strip as an image (shares `buf` where Pillow can map it, copies otherwise)."""
    _expect_size(buf, mode, width, rows)
    # Pillow maps a memoryview as well; its annotation names only bytes, bytearray and the array interface
    return Image.frombuffer(mode, (width, rows), buf, "raw", mode, 0, 1)  # type: ignore[arg-type]


def assemble(parts: Sequence[Buffer], mode: str, size: tuple[int, int]) -> Image.Image:
    """The strips, in order, back into one image."""
    data = b"".join(parts)
    if len(data) != size[0] * size[1] * bands_of(mode):
        raise ValueError("the strips do not add up to the image size")
    return Image.frombytes(mode, size, data)


def tile_histogram(buf: Buffer, mode: str, width: int, rows: int) -> list[int]:
    """One strip's histogram: 256 bins per band, Pillow's layout."""
    return tile_image(buf, mode, width, rows).histogram()


def tile_apply(buf: Buffer, mode: str, width: int, rows: int, lut: Sequence[int]) -> bytes:
    """The lookup table (256 entries per band) applied to one strip (measured in bench/kernel.py)."""
    if len(lut) != 256 * bands_of(mode):
        raise ValueError(f"a {mode} table needs {256 * bands_of(mode)} entries, got {len(lut)}")
    return tile_image(buf, mode, width, rows).point(list(lut)).tobytes()
