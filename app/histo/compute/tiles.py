"""Row strips: the master calls tobytes() once and hands out zero-copy slices; workers wrap a
strip as an image and use Pillow's C paths (Image.histogram, Image.point)."""
from __future__ import annotations

from typing import Sequence

from PIL import Image

_BANDS = {"L": 1, "RGB": 3}


def bands_of(mode: str) -> int:
    return _BANDS[mode]


def row_ranges(height: int, parts: int) -> list[tuple[int, int]]:
    parts = max(1, min(parts, height))
    base, extra = divmod(height, parts)
    out, start = [], 0
    for i in range(parts):
        end = start + base + (1 if i < extra else 0)
        out.append((start, end))
        start = end
    return out


def split_rows(raw: bytes | memoryview, width: int, bands: int, ranges) -> list[memoryview]:
    view = memoryview(raw)
    stride = width * bands
    return [view[r0 * stride:r1 * stride] for r0, r1 in ranges]


def tile_image(buf: bytes | memoryview, mode: str, width: int, rows: int) -> Image.Image:
    return Image.frombuffer(mode, (width, rows), buf, "raw", mode, 0, 1)


def assemble(parts: Sequence[bytes | memoryview], mode: str, size: tuple[int, int]) -> Image.Image:
    return Image.frombytes(mode, size, b"".join(parts))


def tile_histogram(buf, mode: str, width: int, rows: int) -> list[int]:
    return tile_image(buf, mode, width, rows).histogram()


def tile_apply(buf, mode: str, width: int, rows: int, lut: Sequence[int]) -> bytes:
    return tile_image(buf, mode, width, rows).point(list(lut)).tobytes()
