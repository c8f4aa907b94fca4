"""The tiled path (what master + workers do) is bit-identical to the one-process reference."""
import io
import struct
import zlib

import pytest
from PIL import Image

from histo.compute import equalize, tiles
from histo.compute.imageio import ImageError, decode, encode, sniff_format
from histo.compute.plot import plot_histograms


def _image(w: int, h: int, mode: str = "RGB") -> Image.Image:
    base = Image.linear_gradient("L").resize((w, h))
    noise = Image.effect_noise((w, h), 30)
    rgb = Image.merge("RGB", (base.point(lambda v: 40 + v // 3), noise, Image.blend(base, noise, 0.5)))
    if mode == "RGBA":
        rgb = rgb.copy()
        rgb.putalpha(base)
        return rgb
    if mode == "P":
        return rgb.quantize(64)
    return rgb.convert(mode)


def _bytes(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def tiled(data: bytes, mode: str, parts: int) -> equalize.Result:
    img, fmt = decode(data, 10**9)
    prepared = equalize.prepare(img, fmt, mode)
    work = prepared.work
    bands = tiles.bands_of(work.mode)
    ranges = tiles.row_ranges(work.height, parts)
    strips = tiles.split_rows(work.tobytes(), work.width, bands, ranges)
    hists = [tiles.tile_histogram(s, work.mode, work.width, r1 - r0) for s, (r0, r1) in zip(strips, ranges)]
    hist = equalize.merge_histograms(hists)
    lut = equalize.lut_from_histogram(hist)
    out = [tiles.tile_apply(s, work.mode, work.width, r1 - r0, lut) for s, (r0, r1) in zip(strips, ranges)]
    return equalize.finish_result(prepared, tiles.assemble(out, work.mode, work.size), hist)


CASES = [("RGB", "JPEG", (640, 480)), ("RGB", "PNG", (3, 517)), ("L", "JPEG", (211, 97)), ("RGBA", "PNG", (128, 96)),
         ("P", "PNG", (99, 101)), ("RGB", "PNG", (1, 1))]


@pytest.mark.parametrize("mode", equalize.MODES)
@pytest.mark.parametrize("pix_mode,fmt,size", CASES)
def test_tiled_is_bit_identical(mode: str, pix_mode: str, fmt: str, size: tuple[int, int]) -> None:
    data = _bytes(_image(*size, mode=pix_mode), fmt)
    ref = equalize.equalize_single(data, mode)
    for parts in (1, 2, 3, 7, 16):
        got = tiled(data, mode, parts)
        assert got.image == ref.image and got.hist_before == ref.hist_before and got.hist_after == ref.hist_after
    assert Image.open(io.BytesIO(ref.image)).format == fmt


def test_lut_properties_and_known_example() -> None:
    hist = [0] * 256
    hist[10], hist[20], hist[30] = 1, 2, 1  # cdf 1,3,4; cdf_min 1; den 3
    lut = equalize.lut_from_histogram(hist)
    assert lut[10] == 0 and lut[20] == 170 and lut[30] == 255
    assert all(a <= b for a, b in zip(lut, lut[1:])) and min(lut) >= 0 and max(lut) <= 255
    flat = [0] * 256
    flat[77] = 50
    assert equalize.lut_from_histogram(flat) == list(range(256))
    with pytest.raises(ValueError):
        equalize.lut_from_histogram([1] * 100)


def test_row_ranges_cover_without_gaps() -> None:
    for h, n in ((1, 4), (10, 3), (517, 16), (5, 5)):
        rr = tiles.row_ranges(h, n)
        assert rr[0][0] == 0 and rr[-1][1] == h and all(a[1] == b[0] for a, b in zip(rr, rr[1:]))
        assert all(r1 > r0 for r0, r1 in rr)


def _png_header_only(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))


def test_refusals() -> None:
    with pytest.raises(ImageError) as e:
        sniff_format(b"GIF89a....")
    assert e.value.status == 415
    with pytest.raises(ImageError) as e:
        decode(_png_header_only(50000, 50000), 64_000_000)
    assert e.value.status == 413
    jpeg = _bytes(_image(64, 64), "JPEG")
    with pytest.raises(ImageError) as e:
        decode(jpeg[:300], 10**8)
    assert e.value.status == 400
    with pytest.raises(ImageError) as e:
        decode(_bytes(_image(100, 100), "PNG"), 5000)
    assert e.value.status == 413
    with pytest.raises(ImageError) as e:
        equalize.prepare(_image(4, 4), "PNG", "sepia")
    assert e.value.status == 400
    img, fmt = decode(jpeg, 10**8)  # the legitimate path
    assert fmt == "JPEG" and img.size == (64, 64)


def test_plot_is_a_png() -> None:
    ref = equalize.equalize_single(_bytes(_image(64, 64), "PNG"), "rgb")
    png = plot_histograms(ref.hist_before, ref.hist_after, title="t")
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size == (960, 420)
    assert encode(img.convert("RGB"), "PNG").startswith(b"\x89PNG")
