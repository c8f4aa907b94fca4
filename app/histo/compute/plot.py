"""The before/after histogram plot, drawn with Pillow (no plotting library needed)."""
from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFont

COLOURS = {"L": (200, 200, 210), "Y": (200, 200, 210), "R": (235, 80, 80), "G": (80, 200, 110),
           "B": (90, 140, 240)}
W, H, PAD, GAP = 960, 420, 48, 36
BG, FG, GRID = (22, 26, 33), (215, 220, 228), (55, 62, 74)


def plot_histograms(before: dict[str, list[int]], after: dict[str, list[int]], title: str = "") -> bytes:
    img = Image.new("RGB", (W, H), BG)
    draw = ImageDraw.Draw(img, "RGBA")
    font = ImageFont.load_default()
    panel_w = (W - 2 * PAD - GAP) // 2
    top, bottom = PAD + 12, H - PAD
    if title:
        draw.text((PAD, 10), f"histograms — {title}", fill=FG, font=font)
    for i, (label, hists) in enumerate((("before", before), ("after", after))):
        left = PAD + i * (panel_w + GAP)
        _panel(draw, font, hists, label, left, top, panel_w, bottom - top)
    x = W - PAD
    for ch in reversed(list(before)):  # legend, right-aligned
        x -= 44
        draw.rectangle((x, 14, x + 10, 24), fill=COLOURS.get(ch, FG))
        draw.text((x + 14, 12), ch, fill=FG, font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _panel(draw: ImageDraw.ImageDraw, font, hists: dict[str, list[int]], label: str,
           left: int, top: int, width: int, height: int) -> None:
    draw.rectangle((left, top, left + width, top + height), outline=GRID)
    for tick in (0, 64, 128, 192, 255):
        x = left + tick * width / 255
        draw.line((x, top, x, top + height), fill=GRID)
        draw.text((x - 6, top + height + 4), str(tick), fill=FG, font=font)
    draw.text((left + 6, top + 4), label, fill=FG, font=font)
    peak = max((max(h) for h in hists.values() if h), default=1) or 1
    for ch, hist in hists.items():
        r, g, b = COLOURS.get(ch, FG)
        points = [(left + v * width / 255, top + height - hist[v] * (height - 16) / peak) for v in range(256)]
        draw.polygon([(left, top + height), *points, (left + width, top + height)], fill=(r, g, b, 70))
        draw.line(points, fill=(r, g, b, 255), width=1)
