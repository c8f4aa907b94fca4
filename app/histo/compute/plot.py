"""The before/after histogram plot, drawn with Pillow (no plotting library on the master).

Each panel shows, per channel, the 256 bins as translucent bars with a step outline, and the
cumulative distribution as a line on the same frame (0 to 100 % of the pixels): after equalization
the histogram turns into a comb and the cumulative line into a near-straight diagonal.

A worker draws one per job, so it is drawn for its CPU cost (issue 15): straight into a palette
image (one byte a pixel, PNG-encoded unfiltered at a low zlib level) with no alpha compositing.
The translucent overlaps are palette entries blended once per plot (a pixel's index says which
channels' bars and whether a grid line cover it), the bars are built a column a bin, and the text
is anti-aliased through a few palette shades over the background. What does not depend on the
histograms (background, ticks and their labels, panel labels, legend) is drawn once per channel set."""
from __future__ import annotations

import functools
import io
import itertools
from typing import Mapping, Sequence

from PIL import Image, ImageChops, ImageDraw, ImageFont

W, H = 960, 420
PAD_X, TOP, BOTTOM, GAP = 44, 58, 36, 40  # outer margins, space between the two panels
TICKS = (0, 64, 128, 192, 255)
BG, FG, MUTED, GRID, FRAME = (22, 26, 33), (222, 226, 233), (140, 148, 160), (44, 50, 61), (74, 82, 96)
COLOURS = {"L": (205, 208, 216), "Y": (205, 208, 216), "R": (240, 84, 84), "G": (84, 204, 112),
           "B": (92, 146, 245)}
FILL_ALPHA, SWATCH_ALPHA = 64, 150  # the bars' and the legend swatches' opacity over what is under them
HEADER = 26  # panel label band
HEADING = "Histogram equalization"  # then "  ·  " and the title
COMPRESS_LEVEL = 3  # a palette PNG: ~1.3 ms for ~15 kB here (level 6: 2.7 ms, 11.5 kB)
MAX_CHANNELS = 6  # bars of at most this many channels (2^(n+1) blended entries must fit the palette)
Hists = Mapping[str, Sequence[int]]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
Box = tuple[int, int, int, int]
Rgb = tuple[int, int, int]

# Palette indices. Text is drawn anti-aliased on an 8-bit layer whose coverage picks one of RAMP
# shades of its colour over the background (all text sits on the background).
BG_I, FG_I, MUTED_I, GRID_I, FRAME_I = range(5)
RAMP = 8
FG_RAMP, MUTED_RAMP = 5, 5 + RAMP
CH_BASE = 5 + 2 * RAMP  # then per channel: its bar outline, its cumulative line, its legend swatch
PANEL_W = (W - 2 * PAD_X - GAP) // 2
PLOT_TOP = TOP + HEADER  # the data area of a panel, below its label band
PLOT_H = H - BOTTOM - PLOT_TOP


def plot_histograms(before: Hists, after: Hists, title: str = "") -> bytes:
    """A PNG (960x420, palette) with a "before" and an "after" panel and a legend."""
    channels = tuple(dict.fromkeys([*before, *after]))[:MAX_CHANNELS]
    base, palette = _base(channels)
    img = base.copy()  # palette indices, mode L until the palette is attached
    draw = ImageDraw.Draw(img)
    fill_base = CH_BASE + 3 * len(channels)
    labels = Image.new("L", (W, PLOT_TOP))  # the title, anti-aliased (laid on last, as the bar scales)
    ldraw = ImageDraw.Draw(labels)
    if title:  # after the heading, which is in the base
        ldraw.text((PAD_X + ldraw.textlength(HEADING, font=_font(13)), 16), f"  ·  {title[:60]}", fill=255,
                   font=_font(13))
    scales = Image.new("L", (W, PLOT_TOP))
    sdraw = ImageDraw.Draw(scales)
    for i, hists in enumerate((before, after)):
        box = _panel_box(i)
        plot = (box[0], PLOT_TOP, box[2], box[3])
        shown = {ch: hists[ch] for ch in channels if ch in hists}
        peak = _scale_peak(shown)
        tops = {ch: _bar_tops(hist, peak, PLOT_H) for ch, hist in shown.items()}
        img.paste(_area(plot, tops, channels, fill_base), plot[:2])
        for ch, hist in shown.items():
            j = channels.index(ch)
            _outline(draw, plot, tops[ch], CH_BASE + 3 * j)
            _cdf(draw, plot, hist, CH_BASE + 3 * j + 1)
        draw.rectangle(box, outline=FRAME_I)
        sdraw.text((box[2] - 8, TOP + 8), f"bar scale: {_human(peak)} px per bin", fill=255, font=_font(11),
                   anchor="ra")
    _lay_text(img, labels, FG_RAMP)
    _lay_text(img, scales, MUTED_RAMP)
    img.putpalette(palette)  # L -> P: the indices are the pixels
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=COMPRESS_LEVEL)
    return buf.getvalue()


@functools.lru_cache(maxsize=None)
def _font(size: int) -> Font:
    try:
        return ImageFont.load_default(size)  # Pillow's bundled FreeType font
    except (TypeError, OSError):  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _panel_box(i: int) -> Box:
    left = PAD_X + i * (PANEL_W + GAP)
    return left, TOP, left + PANEL_W, H - BOTTOM


def _blend(under: Rgb, over: Rgb, alpha: int) -> Rgb:
    return tuple((o * alpha + u * (255 - alpha) + 127) // 255 for u, o in zip(under, over))  # type: ignore[return-value]


def _palette(channels: tuple[str, ...]) -> list[int]:
    colours = [BG, FG, MUTED, GRID, FRAME]
    for ink in (FG, MUTED):
        colours += [_blend(BG, ink, j * 255 // (RAMP - 1)) for j in range(RAMP)]
    for ch in channels:
        c = COLOURS.get(ch, FG)
        colours += [c, _lighten(c), _blend(BG, c, SWATCH_ALPHA)]
    for v in range(2 ** (len(channels) + 1)):  # bit 0: a grid line; bit j + 1: channel j's bar
        c = GRID if v & 1 else BG
        for j, ch in enumerate(channels):
            if v >> (j + 1) & 1:
                c = _blend(c, COLOURS.get(ch, FG), FILL_ALPHA)
        colours.append(c)
    return [x for c in colours for x in c]


@functools.lru_cache(maxsize=16)
def _base(channels: tuple[str, ...]) -> tuple[Image.Image, list[int]]:
    """What does not depend on the histograms, as palette indices, and the palette (never mutate it)."""
    img = Image.new("L", (W, H), BG_I)
    draw = ImageDraw.Draw(img)
    fg, muted = Image.new("L", (W, H)), Image.new("L", (W, H))
    fdraw, mdraw = ImageDraw.Draw(fg), ImageDraw.Draw(muted)
    small = _font(11)
    fdraw.text((PAD_X, 16), HEADING, fill=255, font=_font(13))
    for i, label in enumerate(("before", "after")):
        left, top, right, bottom = _panel_box(i)
        fdraw.text((left + 8, top + 6), label, fill=255, font=_font(13))
        for tick in TICKS:
            x = _x((left, PLOT_TOP, right, bottom), tick + 0.5)
            draw.line((x, bottom, x, bottom + 4), fill=FRAME_I)
            mdraw.text((x, bottom + 7), str(tick), fill=255, font=small, anchor="ma")
    x, y = W - PAD_X, 18  # the legend, right-aligned: laid out from the right edge
    entries = [(ch, CH_BASE + 3 * j) for j, ch in enumerate(channels)] + [("cumulative share of pixels", -1)]
    for text, ink in reversed(entries):
        x -= int(fdraw.textlength(text, font=small)) + 6
        fdraw.text((x + 4, y + 6), text, fill=255, font=small, anchor="lm")
        x -= 14
        if ink >= 0:
            draw.rectangle((x, y, x + 11, y + 11), fill=ink + 2, outline=ink)
        else:
            draw.line((x, y + 6, x + 12, y + 6), fill=MUTED_I, width=2)
        x -= 14
    _lay_text(img, fg, FG_RAMP)
    _lay_text(img, muted, MUTED_RAMP)
    return img, _palette(channels)


_COVERED = [0] + [255] * 255


def _lay_text(img: Image.Image, layer: Image.Image, ramp: int) -> None:
    """Anti-aliased text (white on a black layer, placed at the image's top left) as shades of its colour."""
    box = layer.getbbox()
    if box is None:
        return
    layer = layer.crop(box)
    img.paste(layer.point(_SHADES[ramp]), box[:2], layer.point(_COVERED))


_SHADES = {ramp: [BG_I] + [ramp + (v * (RAMP - 1) + 127) // 255 for v in range(1, 256)]
           for ramp in (FG_RAMP, MUTED_RAMP)}


@functools.lru_cache(maxsize=1)
def _grid(width: int, height: int) -> Image.Image:
    """The grid of a data area, value 1 on its lines: quarters of the height (read the cumulative line as
    25/50/75/100 %) and the ticks' bin centres."""
    img = Image.new("L", (width + 1, height + 1))
    draw = ImageDraw.Draw(img)
    for q in (1, 2, 3, 4):
        y = height - q * height / 4
        draw.line((0, y, width, y), fill=1)
    for tick in TICKS:
        x = _x((0, 0, width, height), tick + 0.5)
        draw.line((x, 0, x, height), fill=1)
    return img


def _area(plot: Box, tops: Mapping[str, list[int]], channels: tuple[str, ...], fill_base: int) -> Image.Image:
    """The data area's grid and translucent bars as palette indices: a bar covers the rows from its top
    (_bar_tops) down to the axis, each bin is a run of whole pixel columns."""
    left, top, right, bottom = plot
    width, height = right - left, bottom - top
    sideways: Image.Image | None = None  # a row per bin, the axis on the right
    empty = bytes(height + 1)
    for ch, bar_tops in tops.items():  # a bit per channel: the channels' bars add up to which cover a pixel
        full = bytes((2 << channels.index(ch),)) * (height + 1)
        rows = Image.frombytes("L", (height + 1, 256), b"".join([empty[:t] + full[t:] for t in bar_tops]))
        sideways = rows if sideways is None else ImageChops.add(sideways, rows)
    if sideways is None:
        sideways = Image.new("L", (height + 1, 256))
    lut = [fill_base + v for v in range(2 ** (len(channels) + 1))]  # bit 0 clear: the grid adds 1 below
    raw = sideways.point(lut + [BG_I] * (256 - len(lut))).tobytes()
    bins = [raw[v * (height + 1):(v + 1) * (height + 1)] for v in range(256)]
    columns = b"".join([bins[v] for v in _column_bins(width)])  # pixel column x shows bin x * 256 // width
    bars = Image.frombytes("L", (height + 1, width + 1), columns).transpose(Image.Transpose.TRANSPOSE)
    return ImageChops.add(bars, _grid(width, height))


@functools.lru_cache(maxsize=1)
def _column_bins(width: int) -> list[int]:
    """The bin each pixel column of a data area shows: bin v spans [v, v + 1) * width / 256, as _x says."""
    return [min(255, x * 256 // width) for x in range(width + 1)]


def _bar_tops(hist: Sequence[int], peak: int, height: int) -> list[int]:
    """Per bin, the row (0 at the top of the data area) its bar reaches: any non-empty bin shows (its bar
    covers that row and those below it, the axis's included); height + 1 for an empty bin."""
    bins = [*hist[:256], *[0] * (256 - len(hist[:256]))]
    return [height - round(min(c, peak) * height / peak) if c > 0 else height + 1 for c in bins]


@functools.lru_cache(maxsize=2)
def _edges(left: int, right: int) -> list[float]:
    """The x of each bin's left edge, and of the right end (257 values)."""
    return [left + v * (right - left) / 256 for v in range(257)]


def _x(box: Box, v: float) -> float:
    """Left edge of bin v (v may be 256, the right end)."""
    return box[0] + v * (box[2] - box[0]) / 256


def _scale_peak(hists: Hists) -> int:
    """The count that fills the panel height. One huge bin (a flat background) must not squash
    every other bar to nothing, so the scale follows the bulk and such outliers are clipped."""
    counts = sorted(c for h in hists.values() for c in h if c > 0)
    if not counts:
        return 1
    bulk = counts[min(len(counts) - 1, (len(counts) * 98) // 100)]
    return max(1, min(counts[-1], bulk * 5 // 4))


def _outline(draw: ImageDraw.ImageDraw, plot: Box, bar_tops: list[int], ink: int) -> None:
    """The step outline of each run of non-empty bins: their tops, not down to the axis, so that a comb
    (the usual "after" histogram) reads as bars, not a zigzag."""
    top, height, xs = plot[1], plot[3] - plot[1], _edges(plot[0], plot[2])
    run: list[tuple[float, float]] = []
    for v, t in enumerate([*bar_tops, height + 1]):
        if t > height:
            if run:
                draw.line(run, fill=ink, width=1)
            run = []
        else:
            run += [(xs[v], top + t), (xs[v + 1], top + t)]


def _cdf(draw: ImageDraw.ImageDraw, plot: Box, hist: Sequence[int], ink: int) -> None:
    total = sum(hist[:256])
    if not total:
        return
    left, top, right, bottom = plot
    scale = (bottom - top) / total
    points = [(x, bottom - running * scale)
              for x, running in zip(_edges(left, right)[1:], itertools.accumulate(hist[:256]))]
    draw.line([(left, bottom), *points], fill=ink, width=2)


def _lighten(colour: Rgb) -> Rgb:
    """The cumulative line: the channel's colour, brighter, so it stands out over its own bars."""
    return tuple(c + (255 - c) * 2 // 5 for c in colour)  # type: ignore[return-value]


def _human(n: int) -> str:
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)
