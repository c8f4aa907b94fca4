"""histo.compute: the tiled path (what master + workers do) is bit-identical to the one-process
reference; the lookup table is the classic one in integers; bad bytes are refused cleanly."""
from __future__ import annotations

import functools
import io
import random
import struct
import zlib
from typing import Any, NoReturn

import pytest
from PIL import Image

from histo.compute import equalize, imageio, tiles
from histo.compute.imageio import ImageError, decode, encode, sniff_format

# -- generated inputs (fixed seeds, nothing from the net) -----------------------------------------


def _noise(w: int, h: int, seed: int) -> Image.Image:
    return Image.frombytes("L", (w, h), random.Random(seed).randbytes(w * h))


def _rgb(w: int, h: int, seed: int = 7) -> Image.Image:
    """Gradients plus noise, with a different spread per channel so every mode has work to do."""
    grad = Image.linear_gradient("L").resize((w, h))
    noise = _noise(w, h, seed)
    return Image.merge("RGB", (grad.point(lambda v: 40 + v // 3),  # narrow range: equalization stretches it
                               Image.blend(grad, noise, 0.3),
                               noise.point(lambda v: v // 2)))


def _save(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _rgba(w: int, h: int) -> Image.Image:
    img = _rgb(w, h)
    img.putalpha(Image.linear_gradient("L").rotate(90).resize((w, h)))
    return img


def _gray16(w: int, h: int) -> Image.Image:
    img = Image.new("I;16", (w, h))
    img.putdata([(x * 997 + y * 131) % 65536 for y in range(h) for x in range(w)])
    return img


def _cmyk(w: int, h: int) -> Image.Image:
    return _rgb(w, h).convert("CMYK")


INPUTS = {
    "rgb-1x1.jpg": lambda: _save(_rgb(1, 1), "JPEG"),
    "rgb-1x1.png": lambda: _save(_rgb(1, 1), "PNG"),
    "rgb-3x517.jpg": lambda: _save(_rgb(3, 517), "JPEG"),
    "rgb-3x517.png": lambda: _save(_rgb(3, 517), "PNG"),
    "rgb-517x3.png": lambda: _save(_rgb(517, 3), "PNG"),
    "rgb-640x480.jpg": lambda: _save(_rgb(640, 480), "JPEG"),
    "rgb-640x480.png": lambda: _save(_rgb(640, 480), "PNG"),
    "rgba-129x97.png": lambda: _save(_rgba(129, 97), "PNG"),
    "palette-99x101.png": lambda: _save(_rgb(99, 101).quantize(64), "PNG"),
    "palette-trns-64x33.png": lambda: _save(_rgb(64, 33).quantize(16), "PNG", transparency=3),
    "gray-211x97.jpg": lambda: _save(_rgb(211, 97).convert("L"), "JPEG"),
    "gray-alpha-50x41.png": lambda: _save(_rgba(50, 41).convert("LA"), "PNG"),
    "gray16-37x29.png": lambda: _save(_gray16(37, 29), "PNG"),
    "bilevel-45x23.png": lambda: _save(_rgb(45, 23).convert("1"), "PNG"),
    "cmyk-31x17.jpg": lambda: _save(_cmyk(31, 17), "JPEG"),
    "rgb-trns-20x20.png": lambda: _save(_rgb(20, 20), "PNG", transparency=(40, 0, 0)),
}
TILE_COUNTS = (1, 2, 3, 7, 16)


@functools.cache
def _input(name: str) -> bytes:
    return INPUTS[name]()


def tiled(data: bytes, mode: str, parts: int) -> equalize.Result:
    """What the master and the workers do between them, run in one process."""
    img, fmt = decode(data, 10**9)
    prepared = equalize.prepare(img, fmt, mode)
    work = prepared.work
    ranges = tiles.row_ranges(work.height, parts)
    strips = tiles.split_rows(work.tobytes(), work.width, tiles.bands_of(work.mode), ranges)
    rows = [r1 - r0 for r0, r1 in ranges]
    hist = equalize.merge_histograms(tiles.tile_histogram(s, work.mode, work.width, n) for s, n in zip(strips, rows))
    lut = bytes(equalize.lut_from_histogram(hist))  # the master sends the table as bytes
    out = [tiles.tile_apply(s, work.mode, work.width, n, lut) for s, n in zip(strips, rows)]
    return equalize.finish_result(prepared, tiles.assemble(out, work.mode, work.size), hist)


# -- the tiled path equals the reference --------------------------------------------------------

@pytest.mark.parametrize("mode", equalize.MODES)
@pytest.mark.parametrize("name", sorted(INPUTS))
def test_tiled_path_is_bit_identical_to_the_reference(name: str, mode: str) -> None:
    data = _input(name)
    ref = equalize.equalize_single(data, mode)
    for parts in TILE_COUNTS:
        got = tiled(data, mode, parts)
        assert got.image == ref.image, f"{parts} tiles"
        assert (got.hist_before, got.hist_after, got.channels) == (ref.hist_before, ref.hist_after, ref.channels)
        assert (got.width, got.height, got.fmt) == (ref.width, ref.height, ref.fmt)


@pytest.mark.parametrize("mode", equalize.MODES)
@pytest.mark.parametrize("name", sorted(INPUTS))
def test_result_is_consistent(name: str, mode: str) -> None:
    data = _input(name)
    ref = equalize.equalize_single(data, mode)
    out = Image.open(io.BytesIO(ref.image))
    src = Image.open(io.BytesIO(data))
    assert out.format == ref.fmt == src.format
    assert out.size == (ref.width, ref.height) == src.size
    assert list(ref.hist_before) == ref.channels == list(ref.hist_after)
    for ch in ref.channels:
        before, after = ref.hist_before[ch], ref.hist_after[ch]
        assert len(before) == len(after) == 256
        assert sum(before) == sum(after) == src.width * src.height
        # hist_after is exactly the before-histogram pushed through the table
        lut = equalize.lut_from_histogram(before)
        expected = [0] * 256
        for v, count in enumerate(before):
            expected[lut[v]] += count
        assert after == expected


@pytest.mark.parametrize("name,mode,channels,out_mode", [
    ("rgb-640x480.png", "gray", ["L"], "L"),
    ("rgb-640x480.png", "luma", ["Y"], "RGB"),
    ("rgb-640x480.jpg", "rgb", ["R", "G", "B"], "RGB"),
    ("rgba-129x97.png", "gray", ["L"], "LA"),       # alpha kept for PNG
    ("rgba-129x97.png", "luma", ["Y"], "RGBA"),
    ("rgba-129x97.png", "rgb", ["R", "G", "B"], "RGBA"),
    ("gray-211x97.jpg", "luma", ["L"], "L"),        # a gray input stays gray whatever the mode
    ("gray-211x97.jpg", "rgb", ["L"], "L"),
    ("gray-alpha-50x41.png", "rgb", ["L"], "LA"),
    ("palette-99x101.png", "rgb", ["R", "G", "B"], "RGB"),
    ("palette-trns-64x33.png", "luma", ["Y"], "RGBA"),
    ("rgb-trns-20x20.png", "rgb", ["R", "G", "B"], "RGBA"),  # a tRNS colour key becomes real alpha
    ("gray16-37x29.png", "luma", ["L"], "L"),
    ("bilevel-45x23.png", "gray", ["L"], "L"),
    ("cmyk-31x17.jpg", "luma", ["Y"], "RGB"),
])
def test_output_modes(name: str, mode: str, channels: list[str], out_mode: str) -> None:
    ref = equalize.equalize_single(_input(name), mode)
    assert ref.channels == channels
    assert Image.open(io.BytesIO(ref.image)).mode == out_mode


def test_alpha_is_carried_unchanged_and_luma_keeps_chroma() -> None:
    src = _rgba(129, 97)
    ref = equalize.equalize_single(_save(src, "PNG"), "luma")
    out = Image.open(io.BytesIO(ref.image))
    assert out.getchannel("A").tobytes() == src.getchannel("A").tobytes()
    # only Y moved: Cb/Cr survive up to the YCbCr<->RGB round trip
    cb_in = src.convert("RGB").convert("YCbCr").getchannel("Cb")
    cb_out = out.convert("RGB").convert("YCbCr").getchannel("Cb")
    diffs = [abs(a - b) for a, b in zip(cb_in.tobytes(), cb_out.tobytes())]
    assert sum(diffs) / len(diffs) < 3


def test_equalization_spreads_a_narrow_range() -> None:
    narrow = Image.linear_gradient("L").resize((64, 64)).point(lambda v: 100 + v // 8)  # 100..131
    ref = equalize.equalize_single(_save(narrow, "PNG"), "gray")
    used = [v for v, c in enumerate(ref.hist_after["L"]) if c]
    assert used[0] == 0 and used[-1] == 255


def test_jpeg_input_drops_alpha_and_encode_is_deterministic() -> None:
    img = _rgb(33, 21)
    assert encode(img, "PNG") == encode(img, "PNG")
    assert encode(img, "JPEG") == encode(img, "JPEG")
    assert Image.open(io.BytesIO(encode(img, "JPEG"))).format == "JPEG"
    prepared = equalize.prepare(_rgba(8, 8), "JPEG", "rgb")
    assert prepared.alpha is None and prepared.finish(prepared.work).mode == "RGB"
    with pytest.raises(ValueError):
        encode(img, "GIF")


def test_prepare_refuses_bad_modes() -> None:
    with pytest.raises(ImageError) as e:
        equalize.prepare(_rgb(4, 4), "PNG", "sepia")
    assert (e.value.status, e.value.code) == (400, "bad_mode")
    with pytest.raises(ImageError) as e:  # checked before any decoding
        equalize.equalize_single(b"not even an image", "sepia")
    assert e.value.code == "bad_mode"
    with pytest.raises(ImageError) as e:
        equalize.prepare(Image.new("La", (2, 2)), "PNG", "luma")  # premultiplied: no decoder gives it
    assert (e.value.status, e.value.code) == (400, "bad_image")


def test_channel_names() -> None:
    assert equalize.channel_names("gray") == ["L"]
    assert equalize.channel_names("luma") == ["Y"]
    assert equalize.channel_names("rgb") == ["R", "G", "B"]
    assert equalize.DEFAULT_MODE == "luma" and equalize.MODES == ("gray", "luma", "rgb")
    with pytest.raises(ImageError):
        equalize.channel_names("hsv")


# -- the lookup table ---------------------------------------------------------------------------

def test_lut_known_example_by_hand() -> None:
    hist = [0] * 256
    hist[10], hist[20], hist[30] = 1, 2, 1  # cdf 1, 3, 4; cdf_min 1; total - cdf_min = 3
    lut = equalize.lut_from_histogram(hist)
    assert lut[10] == 0                      # (1-1)*255/3
    assert lut[20] == 170                    # (3-1)*255/3 = 170
    assert lut[30] == 255                    # (4-1)*255/3
    assert lut[:10] == [0] * 10              # cdf 0 below the first value: clamped to 0
    assert lut[11:20] == [0] * 9 and lut[21:30] == [170] * 9 and lut[31:] == [255] * 225


def test_lut_rounds_half_up() -> None:
    hist = [0] * 256
    hist[0] = hist[1] = hist[2] = 1  # cdf 1, 2, 3: lut[1] = 1 * 255 / 2 = 127.5
    assert equalize.lut_from_histogram(hist)[:3] == [0, 128, 255]


def test_lut_properties() -> None:
    rnd = random.Random(3)
    for _ in range(50):
        hist = [rnd.choice((0, 0, 1, 5, 1000, 10**9)) for _ in range(256 * 3)]
        lut = equalize.lut_from_histogram(hist)
        assert len(lut) == 768
        for band in range(3):
            part = lut[band * 256:(band + 1) * 256]
            assert all(0 <= v <= 255 for v in part)
            assert all(a <= b for a, b in zip(part, part[1:]))
            h = hist[band * 256:(band + 1) * 256]
            if sum(1 for c in h if c) > 1:  # the top used value always maps to 255
                assert part[max(v for v, c in enumerate(h) if c)] == 255


def test_lut_flat_and_uniform_are_identity() -> None:
    flat = [0] * 256
    flat[77] = 50
    assert equalize.lut_from_histogram(flat) == list(range(256))
    assert equalize.lut_from_histogram([0] * 256) == list(range(256))  # no pixel at all
    assert equalize.lut_from_histogram([4] * 256) == list(range(256))  # already uniform


def test_lut_bands_are_independent() -> None:
    flat, ramp = [0] * 256, [1] * 256
    flat[9] = 3
    lut = equalize.lut_from_histogram(flat + ramp + flat)
    assert lut[:256] == list(range(256)) == lut[512:]
    assert lut[256:512] == equalize.lut_from_histogram(ramp)


def test_lut_refuses_bad_lengths() -> None:
    for bad in ([], [1] * 100, [1] * 257):
        with pytest.raises(ValueError):
            equalize.lut_from_histogram(bad)


def test_merge_and_split_histograms() -> None:
    assert equalize.merge_histograms([[1, 2, 3], (4, 5, 6), [0, 0, 1]]) == [5, 7, 10]
    assert equalize.merge_histograms(iter([[1, 2]])) == [1, 2]
    with pytest.raises(ValueError):
        equalize.merge_histograms([[1, 2], [1, 2, 3]])
    with pytest.raises(ValueError):
        equalize.merge_histograms([])
    hist = list(range(768))
    parts = equalize.split_histogram(hist, 3)
    assert [p[0] for p in parts] == [0, 256, 512] and all(len(p) == 256 for p in parts)
    with pytest.raises(ValueError):
        equalize.split_histogram(hist, 1)


# -- tiles ------------------------------------------------------------------------------------

@pytest.mark.parametrize("height", [1, 2, 3, 5, 16, 17, 480, 517])
@pytest.mark.parametrize("parts", [1, 2, 3, 7, 16, 1000])
def test_row_ranges_cover_without_gaps(height: int, parts: int) -> None:
    rr = tiles.row_ranges(height, parts)
    assert len(rr) == min(parts, height)
    assert rr[0][0] == 0 and rr[-1][1] == height
    assert all(a[1] == b[0] for a, b in zip(rr, rr[1:]))
    sizes = [r1 - r0 for r0, r1 in rr]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_row_ranges_refuses_empty_image() -> None:
    with pytest.raises(ValueError):
        tiles.row_ranges(0, 3)
    assert tiles.row_ranges(5, 0) == [(0, 5)]


def test_split_rows_is_zero_copy_and_assemble_round_trips() -> None:
    img = _rgb(13, 11)
    raw = bytearray(img.tobytes())
    ranges = tiles.row_ranges(11, 4)
    strips = tiles.split_rows(raw, 13, 3, ranges)
    assert [len(s) for s in strips] == [(r1 - r0) * 13 * 3 for r0, r1 in ranges]
    raw[0] ^= 0xFF  # a view, not a copy
    assert strips[0][0] == raw[0]
    raw[0] ^= 0xFF
    assert tiles.assemble(strips, "RGB", (13, 11)).tobytes() == img.tobytes()
    with pytest.raises(ValueError):
        tiles.split_rows(raw, 13, 3, [(0, 12)])
    with pytest.raises(ValueError):
        tiles.assemble(strips[:-1], "RGB", (13, 11))


def test_tile_operations_match_whole_image() -> None:
    img = _rgb(17, 9)
    raw = img.tobytes()
    assert tiles.tile_image(raw, "RGB", 17, 9).tobytes() == raw
    assert tiles.tile_histogram(raw, "RGB", 17, 9) == img.histogram()
    lut = equalize.lut_from_histogram(img.histogram())
    assert tiles.tile_apply(memoryview(raw), "RGB", 17, 9, lut) == img.point(lut).tobytes()
    assert tiles.bands_of("L") == 1 and tiles.bands_of("RGB") == 3


def test_tile_operations_refuse_inconsistent_input() -> None:
    raw = bytes(17 * 9)
    with pytest.raises(ValueError):
        tiles.tile_histogram(raw[:-1], "L", 17, 9)
    with pytest.raises(ValueError):
        tiles.tile_apply(raw, "L", 17, 9, list(range(255)))
    with pytest.raises(ValueError):
        tiles.tile_apply(raw, "L", 17, 9, list(range(256)) * 3)
    with pytest.raises(ValueError):
        tiles.bands_of("RGBA")


# -- imageio: refusals --------------------------------------------------------------------------

def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_header_only(w: int, h: int) -> bytes:
    """A valid signature and IHDR (with CRC) claiming w x h, and no pixel data at all."""
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))


def _jpeg_with_size(w: int, h: int) -> bytes:
    """A real JPEG whose SOF marker is rewritten to claim w x h."""
    data = bytearray(_save(_rgb(16, 16), "JPEG"))
    i = data.index(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def _refusal(data: bytes, max_pixels: int = 10**8) -> ImageError:
    with pytest.raises(ImageError) as e:
        decode(data, max_pixels)
    err = e.value
    assert str(err) == err.message and "/" not in err.message and "Traceback" not in err.message
    return err


@pytest.mark.parametrize("data", [b"", b"hello", b"<svg xmlns='x'/>", b"%PDF-1.7", b"\x89PNX\r\n\x1a\n" + bytes(40),
                                  b"\xff\xd8", b"RIFF\x00\x00\x00\x00WEBPVP8 "])
def test_not_an_image_is_415(data: bytes) -> None:
    err = _refusal(data)
    assert (err.status, err.code) == (415, "unsupported_type")


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "WEBP", "ICO"])
def test_other_real_formats_are_415(fmt: str) -> None:
    try:
        data = _save(_rgb(16, 16), fmt)
    except (KeyError, OSError):
        pytest.skip(f"this Pillow cannot write {fmt}")
    assert _refusal(data).status == 415


def test_format_comes_from_magic_bytes_only() -> None:
    assert sniff_format(_save(_rgb(4, 4), "PNG")) == "PNG"
    assert sniff_format(memoryview(_save(_rgb(4, 4), "JPEG"))) == "JPEG"
    assert imageio.SUPPORTED == {"JPEG", "PNG"}


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_images_are_400(fmt: str) -> None:
    data = _save(_rgb(64, 64), fmt)
    for cut in (30, len(data) // 2, len(data) * 9 // 10):  # cut inside the header, then the pixels
        err = _refusal(data[:cut])
        assert (err.status, err.code) == (400, "bad_image"), cut


def test_corrupt_png_data_is_400() -> None:
    data = bytearray(_save(_rgb(64, 64), "PNG"))
    i = data.index(b"IDAT") + 40
    data[i:i + 8] = b"\x00" * 8  # the chunk's CRC no longer matches
    assert _refusal(bytes(data)).status == 400


def test_mangled_inputs_never_escape_as_other_errors() -> None:
    rnd = random.Random(11)
    for fmt in ("JPEG", "PNG"):
        good = _save(_rgb(40, 30), fmt)
        for _ in range(40):
            data = bytearray(good)
            for _ in range(rnd.randint(1, 6)):
                data[rnd.randrange(len(data))] = rnd.randrange(256)
            try:
                img, got = decode(bytes(data[:rnd.randint(8, len(data))]), 10**6)
            except ImageError as e:
                assert e.status in (400, 413, 415)
            else:
                assert got == fmt and img.width * img.height <= 10**6


def test_bomb_header_is_413_before_pillow_opens_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*_a: object, **_k: object) -> NoReturn:
        raise AssertionError("Pillow must not be asked to open a bomb")
    monkeypatch.setattr(Image, "open", never)  # the PIL.Image module that imageio uses
    for data in (_png_header_only(50000, 50000), _jpeg_with_size(65000, 65000)):
        err = _refusal(data, 64_000_000)
        assert (err.status, err.code) == (413, "too_many_pixels")


def test_header_size_reads_png_and_jpeg() -> None:
    assert imageio.header_size(_png_header_only(50000, 3), "PNG") == (50000, 3)
    assert imageio.header_size(_jpeg_with_size(1234, 567), "JPEG") == (1234, 567)
    assert imageio.header_size(_save(_rgb(31, 17), "JPEG"), "JPEG") == (31, 17)
    assert imageio.header_size(b"\xff\xd8\xff", "JPEG") is None


def test_pixels_over_the_limit_are_413_and_at_the_limit_pass() -> None:
    png = _save(_rgb(100, 100), "PNG")
    err = _refusal(png, 9_999)
    assert (err.status, err.code) == (413, "too_many_pixels")
    img, fmt = decode(png, 10_000)
    assert (img.size, fmt) == ((100, 100), "PNG")
    assert _refusal(_save(_rgb(100, 100), "JPEG"), 5000).status == 413


def test_pillows_own_bomb_guard_is_413(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 100x100 > 2x the limit: DecompressionBombError
    err = _refusal(_save(_rgb(100, 100), "PNG"), 10**8)
    assert err.status == 413


def test_zero_size_image_is_400() -> None:
    err = _refusal(_png_header_only(0, 10) + _png_chunk(b"IEND", b""))
    assert (err.status, err.code) == (400, "bad_image")
    assert _refusal(_jpeg_with_size(16, 0)).status == 400


def test_decode_loads_pixels_and_applies_exif_orientation() -> None:
    img, fmt = decode(_save(_rgb(40, 30), "PNG"), 10**6)
    assert img.im is not None and fmt == "PNG"  # loaded: the source bytes may go away
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img, fmt = decode(_save(_rgb(40, 30), "JPEG", exif=exif), 10**6)
    assert img.size == (30, 40)


def test_image_error_attributes() -> None:
    err = ImageError(413, "too_many_pixels", "too big")
    assert (err.status, err.code, err.message, str(err)) == (413, "too_many_pixels", "too big", "too big")


# -- the master's header probe (compute/imageio.py probe): what it knows without decoding ---------------
def test_probe_reads_format_size_and_work_mode_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    from histo.compute.imageio import probe
    rgb, gray = _save(_rgb(31, 17), "PNG"), _save(_rgb(31, 17).convert("L"), "JPEG")
    loaded: list[object] = []
    monkeypatch.setattr(Image.Image, "load", lambda self: loaded.append(self))  # no pixel may be decoded
    h = probe(rgb, 10**6)
    assert (h.fmt, h.width, h.height, h.pixels) == ("PNG", 31, 17, 527)
    assert [h.work_mode(m) for m in ("gray", "luma", "rgb")] == ["L", "L", "RGB"]
    assert probe(gray, 10**6).work_mode("rgb") == "L"
    assert not loaded


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_probe_refuses_what_decode_refuses(fmt: str) -> None:
    from histo.compute.imageio import probe
    data = _save(_rgb(64, 64), fmt)
    for cut in (30, len(data) // 2, len(data) * 9 // 10):
        with pytest.raises(ImageError) as e:
            probe(data[:cut], 10**6)
        assert (e.value.status, e.value.code) == (400, "bad_image"), cut
    with pytest.raises(ImageError) as e:
        probe(data, 4095)
    assert (e.value.status, e.value.code) == (413, "too_many_pixels")
    with pytest.raises(ImageError) as e:
        probe(b"GIF89a" + data, 10**6)
    assert e.value.status == 415


def test_probe_size_is_the_decoded_size_after_exif_orientation() -> None:
    from histo.compute.imageio import probe
    exif = Image.Exif()
    exif[0x0112] = 6
    for fmt in ("JPEG", "PNG"):
        buf = io.BytesIO()
        _rgb(40, 30).save(buf, format=fmt, exif=exif.tobytes())
        h = probe(buf.getvalue(), 10**6)
        assert (h.width, h.height) == decode(buf.getvalue(), 10**6)[0].size == (30, 40)


@pytest.mark.parametrize("mode", ["gray", "luma", "rgb"])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_workers_task_is_bit_identical_to_one_process(mode: str, fmt: str) -> None:
    from histo.compute import frame
    from histo.compute.imageio import probe
    from histo.compute.work import equalize_upload
    data = _save(_rgb(57, 33), fmt)
    h = probe(data, 10**6)
    result, plot = frame.unpack_result(equalize_upload(data, mode, h.width, h.height, h.work_mode(mode), "j"))
    single = equalize.equalize_single(data, mode)
    assert (result.image, result.hist_before) == (single.image, single.hist_before)
    assert result.hist_after == single.hist_after
    # what the master checks without a pixel: the after-histogram follows from the before-histogram
    before = [v for c in result.channels for v in result.hist_before[c]]
    assert [v for c in result.channels for v in result.hist_after[c]] == equalize.equalized_histogram(before)
    assert plot.startswith(b"\x89PNG")
    with pytest.raises(ImageError):  # not the size its header said
        equalize_upload(data, mode, h.width + 1, h.height, h.work_mode(mode), "j")
    with pytest.raises(ImageError):  # not the work mode its header said
        equalize_upload(data, mode, h.width, h.height, "RGB" if h.work_mode(mode) == "L" else "L", "j")


def test_frame_round_trips_and_refuses_truncation() -> None:
    from histo.compute import frame
    result = equalize.Result(image=b"\xff\xd8pixels", fmt="JPEG", width=3, height=2, channels=["Y"],
                             hist_before={"Y": [1] * 256}, hist_after={"Y": [2] * 256})
    framed = frame.pack_result(result, b"\x89PNGplot")
    assert frame.unpack_result(framed) == (result, b"\x89PNGplot")
    for cut in (0, 3, 10, len(framed) - 1):
        with pytest.raises(frame.FrameError):
            frame.unpack_result(framed[:cut])


@pytest.mark.parametrize("mode", equalize.MODES)
@pytest.mark.parametrize("name", ["rgb-640x480.jpg", "rgba-129x97.png", "gray-alpha-50x41.png", "cmyk-31x17.jpg"])
def test_consuming_frees_the_planes_and_changes_no_byte(name: str, mode: str) -> None:
    """A worker frees each plane once it is copied (its peak memory); the bytes are those of the
    path that keeps everything."""
    def run(consume: bool) -> tuple[equalize.Result, Image.Image, equalize.Prepared]:
        img, fmt = decode(_input(name), 10**9)
        prepared = equalize.prepare(img, fmt, mode, consume=consume)
        hist = prepared.work.histogram()
        equalized = prepared.work.point(equalize.lut_from_histogram(hist))
        return equalize.finish_result(prepared, equalized, hist, consume=consume), img, prepared
    kept, img, prepared = run(False)
    assert img.getpixel((0, 0)) is not None and prepared.work.getpixel((0, 0)) is not None
    freed, img, prepared = run(True)
    assert freed == kept
    if prepared.chroma is not None:  # luma of a colour image: the decoded image, Y, Cb, Cr all released
        for im in (img, prepared.work, *prepared.chroma):
            with pytest.raises(ValueError, match="closed"):
                im.getpixel((0, 0))


def test_a_side_longer_than_a_task_can_name_is_refused_at_upload() -> None:
    """70000x1 is few pixels but more than a task header may carry (protocol.py): refused by the header
    read (413), not sent to every worker in turn; 65536x1 passes."""
    from histo.compute.imageio import MAX_SIDE, probe
    for width, ok in ((MAX_SIDE + 4464, False), (MAX_SIDE, True)):
        data = _save(Image.new("RGB", (width, 1)), "PNG")
        if ok:
            assert probe(data, 10**6).width == width
        else:
            with pytest.raises(ImageError) as err:
                probe(data, 10**6)
            assert err.value.status == 413 and "a side may have at most" in err.value.message


@pytest.mark.parametrize("mode", equalize.MODES)
@pytest.mark.parametrize("name", sorted(INPUTS))
def test_a_workers_task_in_strips_is_bit_identical_to_one_process(name: str, mode: str) -> None:
    """Row strips in threads (equalize.equalize_strips): every input kind, every mode, strip counts that
    do not divide the height, more strips than some images have rows; the same bytes and histograms."""
    from concurrent.futures import ThreadPoolExecutor

    from histo.compute import frame
    from histo.compute.imageio import probe
    from histo.compute.work import equalize_upload
    data = _input(name)
    h = probe(data, 10**9)
    single = equalize.equalize_single(data, mode)
    with ThreadPoolExecutor(2) as pool:
        for parts in (2, 3, 8):
            result, plot = frame.unpack_result(
                equalize_upload(data, mode, h.width, h.height, h.work_mode(mode), "j", pool=pool, parts=parts))
            assert result == single, f"{parts} strips"
            assert plot == frame.unpack_result(equalize_upload(data, mode, h.width, h.height, h.work_mode(mode),
                                                               "j"))[1]
        with pytest.raises(ImageError):  # not the work mode its header said: refused in strips too
            equalize_upload(data, mode, h.width, h.height, "RGB" if h.work_mode(mode) == "L" else "L", "j",
                            pool=pool, parts=3)
