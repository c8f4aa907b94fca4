"""Histogram equalization in three modes, shared by the single-process reference and the
distributed path so that both give bit-identical results: only *where* they run differs (here, or
on a worker: compute/work.py), and the master checks a worker's result with equalized_histogram."""
from __future__ import annotations

import threading
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Iterable, Sequence

from PIL import Image

from .imageio import ImageError, decode, encode
from .tiles import row_ranges

MODES = ("gray", "luma", "rgb")
DEFAULT_MODE = "luma"
_CHANNELS = {"gray": ["L"], "luma": ["Y"], "rgb": ["R", "G", "B"]}
_ALPHA_MODES = {"RGBA": "RGB", "LA": "L"}  # mode with alpha -> its colour part
_TO_RGB = ("CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa")


def channel_names(mode: str) -> list[str]:
    """The channels a mode equalizes (a grayscale input has only "L", see Prepared.channels)."""
    _check_mode(mode)
    return list(_CHANNELS[mode])


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ImageError(400, "bad_mode", f"mode must be one of {', '.join(MODES)}")


# -- histograms and the lookup table ------------------------------------------------------------

def merge_histograms(hists: Iterable[Sequence[int]]) -> list[int]:
    """Element-wise sum of per-tile histograms (all of the same length)."""
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
    """Pillow's layout (band 0's 256 bins, then band 1's...) as one list per band."""
    if len(hist) != 256 * bands:
        raise ValueError(f"expected {256 * bands} bins, got {len(hist)}")
    return [list(hist[b * 256:(b + 1) * 256]) for b in range(bands)]


def _band_lut(band: Sequence[int]) -> list[int]:
    cdf, total = [], 0
    for count in band:
        total += count
        cdf.append(total)
    cdf_min = next((c for c in cdf if c), 0)
    den = total - cdf_min
    if den <= 0:  # one value only (or no pixel): nothing to spread, leave the band as it is
        return list(range(256))
    # round((c - cdf_min) * 255 / den), half up, in integers: no float may differ between hosts
    return [min(255, max(0, ((c - cdf_min) * 510 + den) // (2 * den))) for c in cdf]


def lut_from_histogram(hist: Sequence[int]) -> list[int]:
    """Classic CDF equalization table per band, 256 entries per band, exact integer arithmetic."""
    if not hist or len(hist) % 256:
        raise ValueError("histogram length must be a positive multiple of 256")
    lut: list[int] = []
    for band in split_histogram(hist, len(hist) // 256):
        lut.extend(_band_lut(band))
    return lut


def equalized_histogram(hist: Sequence[int]) -> list[int]:
    """The histogram an image of histogram `hist` has once its table (lut_from_histogram) is applied:
    each value's count moves to the value the table maps it to. What a master checks a worker's result
    against without seeing a pixel."""
    lut = lut_from_histogram(hist)
    after = [0] * len(hist)
    for i, count in enumerate(hist):
        after[(i // 256) * 256 + lut[i]] += count
    return after


# -- from a decoded image to the channels to equalize, and back ---------------------------------

@dataclass
class Prepared:
    """The channels to equalize (`work`, mode L or RGB) and what is needed to rebuild the output."""
    work: Image.Image
    fmt: str
    mode: str
    channels: list[str]
    chroma: tuple[Image.Image, Image.Image] | None = None  # luma: the original Cb, Cr
    alpha: Image.Image | None = None  # kept aside, re-attached for PNG output only

    def finish(self, equalized_work: Image.Image, consume: bool = False) -> Image.Image:
        """The output image from the equalized channels (never mutates `equalized_work` unless `consume`:
        then neither it nor this Prepared is used afterwards, and each plane is freed once copied)."""
        if self.chroma is not None:
            merged = Image.merge("YCbCr", (equalized_work, *self.chroma))
            if consume:  # 4 bytes a pixel fewer while converting
                _free(equalized_work, *self.chroma)
            out = merged.convert("RGB")
            del merged
        else:
            out = equalized_work
        if self.alpha is not None:
            out = out.copy()
            out.putalpha(self.alpha)  # L -> LA, RGB -> RGBA
        return out


def normalize(img: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """Any decoded pixel mode as L or RGB, plus its alpha channel (or None)."""
    img = _expand_transparency(img)
    if img.mode in _ALPHA_MODES:
        return img.convert(_ALPHA_MODES[img.mode]), img.getchannel("A")
    if img.mode == "1":
        img = img.convert("L")
    elif img.mode.startswith("I") or img.mode == "F":
        # 16-bit samples (PNG gives I;16 or I): scale to 8 bits; a plain convert would clip at 255
        img = img.convert("I").point(lambda v: v / 256).convert("L")
    elif img.mode in _TO_RGB:
        img = img.convert("RGB")
    if img.mode not in ("L", "RGB"):
        raise ImageError(400, "bad_image", f"unsupported pixel mode {img.mode}")
    return img, None


def _expand_transparency(img: Image.Image) -> Image.Image:
    """Palettes to RGB(A); a PNG tRNS colour key on L/RGB to a real alpha channel."""
    has_key = "transparency" in img.info
    if img.mode in ("P", "PA"):
        return img.convert("RGBA" if has_key or img.mode == "PA" else "RGB")
    if has_key and img.mode in ("L", "RGB"):
        return img.convert("LA" if img.mode == "L" else "RGBA")
    return img


def _free(*images: Image.Image) -> None:
    """Release pixels no longer needed now, not when the last reference goes (a worker's peak memory)."""
    for im in images:
        im.close()


def prepare(img: Image.Image, fmt: str, mode: str, consume: bool = False) -> Prepared:
    """Split a decoded image into the channels `mode` equalizes and what rebuilds the output. With
    `consume`, `img` is not used afterwards: its pixels are freed as soon as they are converted."""
    _check_mode(mode)
    base, alpha = normalize(img)
    if fmt == "JPEG":
        alpha = None  # JPEG cannot carry it
    if mode == "gray" or base.mode == "L":  # a grayscale input has nothing but luminance
        work = base if base.mode == "L" else base.convert("L")  # no copy of an already-gray image
        return Prepared(work, fmt, mode, ["L"], alpha=alpha)
    if mode == "luma":
        ycc = base.convert("YCbCr")
        if consume:  # the decoded RGB is not held while its planes are split off
            _free(img, base)
        y, cb, cr = ycc.split()
        return Prepared(y, fmt, mode, ["Y"], chroma=(cb, cr), alpha=alpha)
    return Prepared(base, fmt, mode, ["R", "G", "B"], alpha=alpha)


# -- results ----------------------------------------------------------------------------------

@dataclass
class Result:
    image: bytes
    fmt: str
    width: int
    height: int
    channels: list[str]
    hist_before: dict[str, list[int]]
    hist_after: dict[str, list[int]]


def by_channel(channels: Sequence[str], hist: Sequence[int]) -> dict[str, list[int]]:
    """Pillow's flat histogram (band after band) keyed by channel name, as a Result carries it."""
    return dict(zip(channels, split_histogram(hist, len(channels))))


def _finish_planes(prepared: Prepared, equalized_work: Image.Image, consume: bool) -> tuple[Image.Image, list[int]]:
    """The output pixels and their histogram once the table is applied."""
    after = equalized_work.histogram()
    if consume and prepared.work is not equalized_work:
        _free(prepared.work)  # the table is applied: the unequalized plane(s) are done with
    return prepared.finish(equalized_work, consume), after


def finish_result(prepared: Prepared, equalized_work: Image.Image, hist_before: Sequence[int],
                  consume: bool = False) -> Result:
    """The steps after the table is applied, shared by both paths so their bytes are identical. With
    `consume`, neither `prepared` nor `equalized_work` is used afterwards (Prepared.finish)."""
    channels = prepared.channels
    out, after = _finish_planes(prepared, equalized_work, consume)
    return Result(image=encode(out, prepared.fmt), fmt=prepared.fmt, width=out.width, height=out.height,
                  channels=list(channels), hist_before=by_channel(channels, hist_before),
                  hist_after=by_channel(channels, after))


@dataclass
class Equalized:
    """The output pixels and both histograms (flat, Pillow's layout), before the image is encoded."""
    image: Image.Image
    work_mode: str  # the mode the table was applied in (L or RGB), as a task's header names it
    channels: list[str]
    hist_before: list[int]
    hist_after: list[int]


def equalize_strips(img: Image.Image, fmt: str, mode: str, pool: Executor, parts: int) -> Equalized:
    """equalize_single's steps between decode and encode, on `parts` row strips run in `pool`'s
    threads (Pillow leaves the GIL in its pixel loops). Every step is per pixel, so the pixels are those
    of the whole image: the histograms are summed before the table is made, and only decode and encode
    stay whole. `img` is consumed. The strips in flight add their crops and conversions to the decoded
    image: with eight strips per thread they stay within the peak a worker charges (compute/work.py)."""
    _check_mode(mode)
    width, size = img.width, img.size
    ranges = row_ranges(img.height, parts)

    def prepare_strip(rows: tuple[int, int]) -> tuple[Prepared, list[int]]:
        strip = img.crop((0, rows[0], width, rows[1]))
        prepared = prepare(strip, fmt, mode, consume=True)
        if strip is not prepared.work and strip is not prepared.alpha:  # identity: Image == compares pixels
            _free(strip)  # converted: its copy is all that is used from here
        return prepared, prepared.work.histogram()

    strips = list(pool.map(prepare_strip, ranges))
    _free(img)
    hist = merge_histograms(h for _, h in strips)
    lut = lut_from_histogram(hist)
    out: list[Image.Image] = []
    lock = threading.Lock()

    def finish_strip(job: tuple[tuple[Prepared, list[int]], tuple[int, int]]) -> list[int]:
        (prepared, _), (top, _) = job
        part, after = _finish_planes(prepared, prepared.work.point(lut), consume=True)
        with lock:  # the output's mode is the strips' (RGB, RGBA, L, LA): made by the first one done
            if not out:
                out.append(Image.new(part.mode, size))
        out[0].paste(part, (0, top))  # disjoint rows of one image: no two threads write the same bytes
        _free(part)
        return after

    channels, work_mode = list(strips[0][0].channels), strips[0][0].work.mode
    afters = list(pool.map(finish_strip, zip(strips, ranges)))
    strips.clear()
    return Equalized(out[0], work_mode, channels, hist, merge_histograms(afters))


def equalize_single(data: bytes, mode: str = DEFAULT_MODE, max_pixels: int = 100_000_000) -> Result:
    """The one-process reference the distributed result must match bit for bit."""
    _check_mode(mode)  # before decoding: a bad request should not cost a decode
    img, fmt = decode(data, max_pixels)
    prepared = prepare(img, fmt, mode, consume=True)
    hist = prepared.work.histogram()
    equalized = prepared.work.point(lut_from_histogram(hist))
    return finish_result(prepared, equalized, hist, consume=True)
