"""Image bytes in and out: the format is read from the bytes, the pixel count is checked from the
header before any pixel is decoded (decompression bombs), and every failure is a clean ImageError."""
from __future__ import annotations

import io
import struct
import warnings

from PIL import Image

SUPPORTED = {"JPEG", "PNG"}
_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"))


class ImageError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def sniff_format(data: bytes) -> str:
    for magic, fmt in _MAGIC:
        if data[:len(magic)] == magic:
            return fmt
    raise ImageError(415, "unsupported_type", "only JPEG and PNG images are accepted")


def header_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """Width and height read straight from the PNG IHDR or the JPEG SOF marker, or None."""
    if fmt == "PNG":
        if len(data) >= 24 and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        i += 2 + length
    return None


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageError(413, "too_many_pixels", f"{width}x{height} is more than the {max_pixels} pixels allowed")


def decode(data: bytes, max_pixels: int) -> tuple[Image.Image, str]:
    fmt = sniff_format(data)
    size = header_size(data, fmt)
    if size is not None:  # refuse a bomb before Pillow allocates anything
        _check_pixels(*size, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[fmt])
            width, height = img.size  # from the header only: nothing decoded yet
            if width <= 0 or height <= 0:
                raise ImageError(400, "bad_image", "the image has no pixels")
            _check_pixels(width, height, max_pixels)
            img.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(413, "too_many_pixels", "the image is too large to decode") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError) as exc:
        raise ImageError(400, "bad_image", f"the {fmt} data is corrupt or truncated") from exc
    return img, fmt


def encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, format="JPEG", quality=90, optimize=False)
    else:
        img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
