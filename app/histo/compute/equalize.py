"""Histogram equalization in three modes, shared by the single-process reference and the
distributed path so that both give bit-identical results: only *where* the histogram and the
table application run differs (whole image here, row strips on workers there)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from PIL import Image

from .imageio import ImageError, decode, encode

MODES = ("gray", "luma", "rgb")
DEFAULT_MODE = "luma"
_CHANNELS = {"L": ["L"], "Y": ["Y"], "RGB": ["R", "G", "B"]}


def merge_histograms(hists: Iterable[Sequence[int]]) -> list[int]:
    merged: list[int] | None = None
    for h in hists:
        if merged is None:
            merged = list(h)
        elif len(h) != len(merged):
            raise ValueError("histograms of different lengths")
        else:
            merged = [a + b for a, b in zip(merged, h)]
    if merged is None:
        raise ValueError("no histograms to merge")
    return merged


def split_histogram(hist: Sequence[int], bands: int) -> list[list[int]]:
    return [list(hist[b * 256:(b + 1) * 256]) for b in range(bands)]


def lut_from_histogram(hist: Sequence[int]) -> list[int]:
    """Classic CDF equalization per band, in exact integer arithmetic (identical everywhere)."""
    if len(hist) % 256:
        raise ValueError("histogram length must be a multiple of 256")
    lut: list[int] = []
    for band in split_histogram(hist, len(hist) // 256):
        cdf, total = [], 0
        for count in band:
            total += count
            cdf.append(total)
        cdf_min = next((c for c in cdf if c), 0)
        den = total - cdf_min
        if den <= 0:  # a flat band (one value, or empty): leave it as it is
            lut.extend(range(256))
            continue
        lut.extend(min(255, max(0, ((c - cdf_min) * 255 * 2 + den) // (2 * den))) for c in cdf)
    return lut


@dataclass
class Prepared:
    """The channels to equalize (`work`, mode L or RGB) and what is needed to rebuild the output."""
    work: Image.Image
    fmt: str
    mode: str
    channels: list[str]
    chroma: tuple[Image.Image, Image.Image] | None = None
    alpha: Image.Image | None = None

    def finish(self, equalized: Image.Image) -> Image.Image:
        if self.chroma is not None:
            out = Image.merge("YCbCr", (equalized, *self.chroma)).convert("RGB")
        else:
            out = equalized
        if self.alpha is not None:
            out = out.copy()
            out.putalpha(self.alpha)
        return out


def _normalize(img: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """Bring any decoded mode to L or RGB, keeping an alpha channel aside."""
    alpha = None
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA"):
        alpha = img.getchannel("A")
        img = img.convert("RGB" if img.mode == "RGBA" else "L")
    elif img.mode == "1":
        img = img.convert("L")
    elif img.mode.startswith("I") or img.mode == "F":  # 16-bit samples: scale down, do not clip
        img = img.convert("I").point(lambda v: v / 256).convert("L")
    elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
    if img.mode not in ("L", "RGB"):
        raise ImageError(400, "bad_image", f"unsupported pixel mode {img.mode}")
    return img, alpha


def prepare(img: Image.Image, fmt: str, mode: str) -> Prepared:
    if mode not in MODES:
        raise ImageError(400, "bad_mode", f"mode must be one of {', '.join(MODES)}")
    base, alpha = _normalize(img)
    if fmt == "JPEG":
        alpha = None  # JPEG cannot carry it
    if mode == "gray" or base.mode == "L":
        work = base.convert("L") if base.mode != "L" else base
        return Prepared(work, fmt, mode, ["L"], alpha=alpha)
    if mode == "luma":
        y, cb, cr = base.convert("YCbCr").split()
        return Prepared(y, fmt, mode, ["Y"], chroma=(cb, cr), alpha=alpha)
    return Prepared(base, fmt, mode, ["R", "G", "B"], alpha=alpha)


@dataclass
class Result:
    image: bytes
    fmt: str
    width: int
    height: int
    channels: list[str]
    hist_before: dict[str, list[int]]
    hist_after: dict[str, list[int]]


def finish_result(prepared: Prepared, equalized: Image.Image, hist_before: Sequence[int]) -> Result:
    bands = len(prepared.channels)
    after = equalized.histogram()
    out = prepared.finish(equalized)
    return Result(image=encode(out, prepared.fmt), fmt=prepared.fmt, width=out.width, height=out.height,
                  channels=list(prepared.channels),
                  hist_before=dict(zip(prepared.channels, split_histogram(hist_before, bands))),
                  hist_after=dict(zip(prepared.channels, split_histogram(after, bands))))


def equalize_single(data: bytes, mode: str = DEFAULT_MODE, max_pixels: int = 100_000_000) -> Result:
    """The one-process reference the distributed result must match bit for bit."""
    img, fmt = decode(data, max_pixels)
    prepared = prepare(img, fmt, mode)
    hist = prepared.work.histogram()
    equalized = prepared.work.point(lut_from_histogram(hist))
    return finish_result(prepared, equalized, hist)
