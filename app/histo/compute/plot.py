"""The before/after histogram plot, drawn with Pillow (no plotting library on the master).

Each panel shows, per channel, the 256 bins as semi-transparent bars with a step outline, and the
cumulative distribution as a line on the same frame (0 to 100 % of the pixels): after equalization
the histogram turns into a comb and the cumulative line into a near-straight diagonal."""
from __future__ import annotations

import io
from typing import Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

W, H = 960, 420
PAD_X, TOP, BOTTOM, GAP = 44, 58, 36, 40  # outer margins, space between the two panels
TICKS = (0, 64, 128, 192, 255)
BG, FG, MUTED, GRID, FRAME = (22, 26, 33), (222, 226, 233), (140, 148, 160), (44, 50, 61), (74, 82, 96)
COLOURS = {"L": (205, 208, 216), "Y": (205, 208, 216), "R": (240, 84, 84), "G": (84, 204, 112),
           "B": (92, 146, 245)}
FILL_ALPHA, LINE_ALPHA = 64, 230
HEADER = 26  # panel label band
Hists = Mapping[str, Sequence[int]]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def plot_histograms(before: Hists, after: Hists, title: str = "") -> bytes:
    """A PNG (960x420) with a "before" and an "after" panel and a legend."""
    img = Image.new("RGB", (W, H), BG)
    draw = ImageDraw.Draw(img, "RGBA")  # RGBA drawing blends the semi-transparent fills
    font, small = _font(13), _font(11)
    draw.text((PAD_X, 16), "Histogram equalization" + (f"  ·  {title[:60]}" if title else ""), fill=FG, font=font)
    panel_w = (W - 2 * PAD_X - GAP) // 2
    for i, (label, hists) in enumerate((("before", before), ("after", after))):
        box = (PAD_X + i * (panel_w + GAP), TOP, PAD_X + i * (panel_w + GAP) + panel_w, H - BOTTOM)
        _panel(draw, box, label, hists, font, small)
    _legend(draw, list(dict.fromkeys([*before, *after])), small)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _font(size: int) -> Font:
    try:
        return ImageFont.load_default(size)  # Pillow's bundled FreeType font
    except (TypeError, OSError):  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], label: str, hists: Hists,
           font: Font, small: Font) -> None:
    left, top, right, bottom = box
    plot = (left, top + HEADER, right, bottom)  # a header band keeps the label clear of the data
    peak = _scale_peak(hists)
    _axes(draw, plot, small)
    for ch, hist in hists.items():
        colour = COLOURS.get(ch, FG)
        _bars(draw, plot, hist, peak, colour)
        _cdf(draw, plot, hist, colour)
    draw.rectangle(box, outline=FRAME)
    draw.text((left + 8, top + 6), label, fill=FG, font=font)
    draw.text((right - 8, top + 8), f"bar scale: {_human(peak)} px per bin", fill=MUTED, font=small,
              anchor="ra")


def _x(box: tuple[int, int, int, int], v: float) -> float:
    """Left edge of bin v (v may be 256, the right end)."""
    return box[0] + v * (box[2] - box[0]) / 256


def _axes(draw: ImageDraw.ImageDraw, plot: tuple[int, int, int, int], small: Font) -> None:
    left, top, right, bottom = plot
    for q in (1, 2, 3, 4):  # quarter lines: read the cumulative line as 25/50/75/100 %
        y = bottom - q * (bottom - top) / 4
        draw.line((left, y, right, y), fill=GRID)
    for tick in TICKS:
        x = _x(plot, tick + 0.5)  # bin centre
        draw.line((x, top, x, bottom), fill=GRID)
        draw.line((x, bottom, x, bottom + 4), fill=FRAME)
        draw.text((x, bottom + 7), str(tick), fill=MUTED, font=small, anchor="ma")


def _scale_peak(hists: Hists) -> int:
    """The count that fills the panel height. One huge bin (a flat background) must not squash
    every other bar to nothing, so the scale follows the bulk and such outliers are clipped."""
    counts = sorted(c for h in hists.values() for c in h if c > 0)
    if not counts:
        return 1
    bulk = counts[min(len(counts) - 1, (len(counts) * 98) // 100)]
    return max(1, min(counts[-1], bulk * 5 // 4))


def _bars(draw: ImageDraw.ImageDraw, plot: tuple[int, int, int, int], hist: Sequence[int], peak: int,
          colour: tuple[int, int, int]) -> None:
    left, top, right, bottom = plot
    run: list[tuple[float, float]] = []  # the step outline of the current run of non-empty bins
    for v, count in enumerate([*hist[:256], 0]):
        if not count:  # an empty bin ends a run: outline the run's tops, not down to the axis,
            if run:    # so a comb (the usual "after" histogram) reads as bars, not a zigzag
                draw.line(run, fill=(*colour, LINE_ALPHA), width=1)
            run = []
            continue
        y = bottom - min(count, peak) * (bottom - top) / peak
        x0, x1 = _x(plot, v), _x(plot, v + 1)
        draw.rectangle((x0, y, x1, bottom), fill=(*colour, FILL_ALPHA))
        run += [(x0, y), (x1, y)]


def _cdf(draw: ImageDraw.ImageDraw, plot: tuple[int, int, int, int], hist: Sequence[int],
         colour: tuple[int, int, int]) -> None:
    total = sum(hist[:256])
    if not total:
        return
    left, top, right, bottom = plot
    points, running = [], 0
    for v, count in enumerate(hist[:256]):
        running += count
        points.append((_x(plot, v + 1), bottom - running * (bottom - top) / total))
    draw.line([(left, bottom), *points], fill=(*_lighten(colour), 255), width=2)


def _legend(draw: ImageDraw.ImageDraw, channels: list[str], small: Font) -> None:
    x, y = W - PAD_X, 18
    entries = [(f"{ch}", COLOURS.get(ch, FG), "bar") for ch in channels]
    entries.append(("cumulative share of pixels", MUTED, "line"))
    for text, colour, kind in reversed(entries):  # right-aligned: lay out from the right edge
        x -= int(draw.textlength(text, font=small)) + 6
        draw.text((x + 4, y + 6), text, fill=FG, font=small, anchor="lm")
        x -= 14
        if kind == "bar":
            draw.rectangle((x, y, x + 11, y + 11), fill=(*colour, 150), outline=colour)
        else:
            draw.line((x, y + 6, x + 12, y + 6), fill=colour, width=2)
        x -= 14


def _lighten(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    """The cumulative line: the channel's colour, brighter, so it stands out over its own bars."""
    return tuple(c + (255 - c) * 2 // 5 for c in colour)  # type: ignore[return-value]


def _human(n: int) -> str:
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)
