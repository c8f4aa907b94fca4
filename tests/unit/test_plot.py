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
    img = _open(plot_histograms(_hists("RGB", 1), _hists("RGB", 2), title="0123abcd"))
    assert img.format == "PNG" and img.mode == "RGB" and img.size == (plot.W, plot.H) == (960, 420)


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
