"""histo.compute.plot: a valid, deterministic PNG of the expected size that actually shows the data."""
from __future__ import annotations

import io
import random

from PIL import Image

from histo.compute import plot
from histo.compute.plot import plot_histograms


def _hists(channels: str, seed: int) -> dict[str, list[int]]:
    rnd = random.Random(seed)
    return {ch: [int(1000 * rnd.random() * (1 - abs(v - 128) / 128)) for v in range(256)] for ch in channels}


def _open(png: bytes) -> Image.Image:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    img = Image.open(io.BytesIO(png))
    img.load()
    return img


def _count_near(img: Image.Image, colour: tuple[int, int, int], tol: int = 40) -> int:
    raw = img.convert("RGB").tobytes()
    pixels = zip(raw[0::3], raw[1::3], raw[2::3])
    return sum(1 for px in pixels if all(abs(a - b) <= tol for a, b in zip(px, colour)))


def test_plot_is_a_png_of_the_expected_size() -> None:
    png = plot_histograms(_hists("RGB", 1), _hists("RGB", 2), title="0123abcd")
    img = _open(png)
    # a palette image (one byte a pixel: what a worker can afford to encode per job)
    assert img.format == "PNG" and img.mode == "P" and img.size == (plot.W, plot.H) == (960, 420)
    Image.open(io.BytesIO(png)).verify()  # every chunk's CRC, IEND present
    assert len(png) < 64 * 1024


def test_plot_draws_each_channel_in_its_colour() -> None:
    img = _open(plot_histograms(_hists("RGB", 1), _hists("RGB", 2))).convert("RGB")
    for ch in "RGB":
        assert _count_near(img, plot.COLOURS[ch]) > 200, ch
    gray = _open(plot_histograms(_hists("L", 1), _hists("L", 2))).convert("RGB")
    assert _count_near(gray, plot.COLOURS["R"], tol=20) == 0  # no stray channel colours
    assert _count_near(gray, plot.COLOURS["L"]) > 200


def test_plot_is_deterministic() -> None:
    before, after = _hists("Y", 5), _hists("Y", 6)
    assert plot_histograms(before, after, "t") == plot_histograms(before, after, "t")
    assert plot_histograms(before, after, "t") != plot_histograms(after, before, "t")


def test_plot_survives_degenerate_inputs() -> None:
    one = [0] * 256
    one[77] = 1
    spike = [1] * 256
    spike[0] = 10**9  # one bin dwarfs the rest: the scale must follow the bulk
    for before, after in (({}, {}), ({"L": [0] * 256}, {"L": [0] * 256}), ({"L": one}, {"L": one}),
                          ({"Y": spike}, {"Y": spike}), ({"Q": one}, {"Q": one})):
        img = _open(plot_histograms(before, after, title="x" * 500))
        assert img.size == (960, 420)


def test_scale_follows_the_bulk_not_one_spike() -> None:
    spike = [100] * 256
    spike[0] = 10**9
    assert plot._scale_peak({"L": spike}) == 125
    assert plot._scale_peak({}) == 1
    assert plot._scale_peak({"L": [0] * 256}) == 1


def _column(img: Image.Image, panel: int, v: int) -> list[object]:
    """The data area's pixels, bottom to top, in the middle of bin v of a panel."""
    left, _, right, bottom = plot._panel_box(panel)
    x = int(left + (v + 0.5) * (right - left) / 256)
    return [img.getpixel((x, y)) for y in range(bottom - 1, plot.PLOT_TOP, -1)]


def test_bars_follow_the_histograms() -> None:
    before = [0] * 256
    before[32:64] = [1000] * 32  # a block at full scale
    before[100:132] = [500] * 32  # and one at half of it
    after = [1000 if v % 4 == 0 else 0 for v in range(256)]  # a comb, as equalization leaves it
    img = _open(plot_histograms({"L": before}, {"L": after})).convert("RGB")
    fill = plot._blend(plot.BG, plot.COLOURS["L"], plot.FILL_ALPHA)
    area = plot.PLOT_H
    for v in (32, 48, 63):  # full height: filled from the axis to the top line
        assert sum(px == fill for px in _column(img, 0, v)) > area * 0.9, v
    for v in (100, 120, 131):  # half height: filled up to the middle, not above
        col = _column(img, 0, v)
        assert col[:area // 2 - 3].count(fill) > area // 2 * 0.9 and fill not in col[area // 2 + 3:], v
    for panel, v in ((0, 10), (0, 80), (0, 200), (0, 250), (1, 2), (1, 127), (1, 198), (1, 202)):
        assert fill not in _column(img, panel, v), (panel, v)  # empty bins: no bar
    for v in (4, 132, 200, 252):  # (not a tick bin: its grid line runs through the bar)
        assert sum(px == fill for px in _column(img, 1, v)) > area * 0.9, v


def test_overlapping_bars_blend_their_channels() -> None:
    full = [1000] * 256
    img = _open(plot_histograms({"R": full, "B": full}, {"R": full})).convert("RGB")
    both = plot._blend(plot._blend(plot.BG, plot.COLOURS["R"], plot.FILL_ALPHA), plot.COLOURS["B"], plot.FILL_ALPHA)
    red = plot._blend(plot.BG, plot.COLOURS["R"], plot.FILL_ALPHA)
    assert _column(img, 0, 77).count(both) > plot.PLOT_H * 0.9
    assert _column(img, 1, 77).count(red) > plot.PLOT_H * 0.9
