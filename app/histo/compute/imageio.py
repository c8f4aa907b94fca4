"""Image bytes in and out: the format is read from the bytes, the pixel count is checked from the
header before any pixel is decoded (decompression bombs), and every failure is a clean ImageError
(an HTTP status, a short code and a message that names no internal path)."""
from __future__ import annotations

import io
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from PIL import Image, ImageOps

SUPPORTED = {"JPEG", "PNG"}
_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"))
# JPEG start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field (TEM, RST0-7, SOI, EOI).
_STANDALONE = frozenset([0x01, *range(0xD0, 0xDA)])


class ImageError(Exception):
    """A refusal the API maps to JSON: status 400, 413 or 415, a short code, a readable message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def sniff_format(data: bytes | memoryview) -> str:
    """The format from the magic bytes only: a filename or a Content-Type is the client's claim."""
    head = bytes(data[:8])
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    raise ImageError(415, "unsupported_type", "only JPEG and PNG images are accepted")


def header_size(data: bytes | memoryview, fmt: str) -> tuple[int, int] | None:
    """(width, height) read straight from the PNG IHDR or the JPEG SOF marker, or None if not found."""
    if fmt == "PNG":
        if len(data) >= 24 and bytes(data[12:16]) == b"IHDR":
            return struct.unpack(">II", data[16:24])
        return None
    return _jpeg_size(data)


def _jpeg_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """Walk the marker segments up to the first SOF (it precedes the scan data)."""
    i = 2  # after SOI
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None  # not a marker where one must be: let Pillow judge the stream
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker in _STANDALONE:
            i += 2
        elif marker in _SOF:
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        else:
            i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    return None


MAX_SIDE = 1 << 16  # pixels a side may have (what a task names: protocol.py), whatever the pixel count


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(400, "bad_image", "the image has no pixels")
    if width > MAX_SIDE or height > MAX_SIDE:
        raise ImageError(413, "too_many_pixels", f"{width}x{height}: a side may have at most {MAX_SIDE} pixels")
    if width * height > max_pixels:
        raise ImageError(413, "too_many_pixels",
                         f"{width}x{height} is more than the {max_pixels} pixels allowed")


# Pixel modes that normalize to grayscale (compute/equalize.py normalize): their work image is L in every mode.
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})  # EXIF orientations exif_transpose turns by 90 degrees


@dataclass(frozen=True)
class Header:
    """What the master knows of an upload without decoding it."""
    fmt: str
    width: int  # after the EXIF orientation, as decode() returns the image
    height: int
    pixel_mode: str  # Pillow's mode of the decoded image, before normalize()

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def work_mode(self, mode: str) -> str:
        """The mode of the work image prepare() makes for equalization `mode` (L or RGB)."""
        return "RGB" if mode == "rgb" and self.pixel_mode not in _GRAY_MODES else "L"


def probe(data: bytes, max_pixels: int) -> Header:
    """Format, size and pixel mode from the header, never a pixel decoded; the same refusals as
    decode() for a bad type, a bomb, a broken header or a stream cut short (a PNG's chunk CRCs are
    checked, a JPEG must end its scan). Damage inside the compressed pixels shows only when a worker
    decodes them (the job then fails with that reason)."""
    fmt = sniff_format(data)
    size = header_size(data, fmt)
    if size is not None:
        check_pixels(*size, max_pixels)
    with _client_errors(fmt):
        img = Image.open(io.BytesIO(data), formats=[fmt])
        check_pixels(*img.size, max_pixels)
        width, height = img.size
        pixel_mode = img.mode
        orientation = _orientation(img.info.get("exif"))  # not getexif(): on a PNG it decodes the pixels
        if fmt == "PNG":
            # every chunk's CRC, IEND present, no pixel inflated (verify() must come right after open)
            Image.open(io.BytesIO(data), formats=[fmt]).verify()
        elif data.rfind(b"\xff\xd9") < data.find(b"\xff\xda"):  # EOI after the first SOS: not cut short
            raise ValueError("no end of image")
    if orientation in _SWAPPING_ORIENTATIONS:
        width, height = height, width
    return Header(fmt, width, height, pixel_mode)


@contextmanager
def _client_errors(fmt: str) -> Iterator[None]:
    """Untrusted bytes: any parser or decoder failure is the client's 400, a bomb its 413."""
    try:
        yield
    except ImageError:
        raise
    # Pillow's own bomb guard (MAX_IMAGE_PIXELS) is a second line behind check_pixels. Its warning
    # is only an exception where warnings are errors; we do not flip the filter with
    # warnings.catch_warnings() because that is process-global and decode runs in thread pools.
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(413, "too_many_pixels", "the image is too large to decode") from None
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any failure is the client's 400
        raise ImageError(400, "bad_image", f"the {fmt} data is corrupt or truncated") from exc


def _orientation(raw: object) -> int | None:
    """The EXIF orientation tag of the EXIF block read with the header (a PNG's eXIf chunk placed after its
    pixel data is not read, and such an image fails on the worker if it turns)."""
    if not isinstance(raw, bytes):
        return None
    exif = Image.Exif()
    exif.load(raw)
    value = exif.get(0x0112)
    return value if isinstance(value, int) else None


def decode(data: bytes, max_pixels: int) -> tuple[Image.Image, str]:
    """A fully loaded image and its format, or ImageError (415 type, 413 pixels, 400 corrupt)."""
    fmt = sniff_format(data)
    size = header_size(data, fmt)
    if size is not None:  # refuse a bomb before Pillow allocates anything
        check_pixels(*size, max_pixels)
    with _client_errors(fmt):
        img = Image.open(io.BytesIO(data), formats=[fmt])
        check_pixels(*img.size, max_pixels)  # Image.open is lazy: the size is from the header only
        img.load()
        # Browsers honour the EXIF orientation and our output carries no EXIF: apply it to the pixels.
        ImageOps.exif_transpose(img, in_place=True)
    return img, fmt


def encode(img: Image.Image, fmt: str) -> bytes:
    """Deterministic bytes for the same pixels: fixed options, no metadata carried over."""
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, format="JPEG", quality=90, optimize=False)
    elif fmt == "PNG":
        img.save(buf, format="PNG", compress_level=1)  # speed over size: results are transient
    else:
        raise ValueError(f"cannot encode {fmt}")
    return buf.getvalue()
