"""A worker's pixel work on one upload, in one step: decode and prepare the image, count its
histogram, derive the table, apply it, rebuild the output, encode it and draw the plot. The same
functions as equalize_single, in the same order, so the bytes match."""
from __future__ import annotations

from concurrent.futures import Executor

from PIL import Image

from . import equalize, frame
from .imageio import ImageError, decode, encode
from .plot import plot_histograms

# Bytes per pixel a job holds at its peak on a worker: what the budget charges (worker/admission.py).
# Pillow keeps RGB and YCbCr in 4 bytes a pixel, and each step frees a plane once it is copied (the
# `consume` of equalize.prepare and finish_result), so the peak measured at 4096² is 8 in `luma` (the
# decoded RGB + its YCbCr while converting, then YCbCr + the split planes; the merged YCbCr + its RGB
# while the output is built) and in `rgb` (the work image + its equalized copy), 5 in `gray`.
# Without the early frees, `luma` peaked at 11 and 12. In row strips (equalize.equalize_strips, the
# worker's 8 per thread: 16) the strips in flight add their crops and conversions to the decoded image:
# 8.6 in `luma` and `rgb`, 5.7 in `gray` (9.75, 8.6, 6.6 with 8 strips in all).
PEAK_BYTES_PER_PIXEL = 10


def equalize_upload(data: bytes, mode: str, width: int, height: int, work_mode: str, title: str,
                    pool: Executor | None = None, parts: int = 1) -> bytes:
    """The framed result (compute/frame.py: image, histograms before and after, plot) of one upload. The
    image must be the size and work mode the master read from its header. With a `pool` and `parts` > 1
    the steps between decode and encode run on row strips in the pool's threads
    (equalize.equalize_strips), and the plot is drawn while the image is encoded: the same bytes."""
    img, fmt = decode(data, width * height)
    if img.size != (width, height):
        raise ImageError(400, "bad_image", f"the image decodes to {img.size[0]}x{img.size[1]}, its header says "
                         f"{width}x{height}")
    if pool is not None and parts > 1:
        return _in_strips(img, fmt, mode, work_mode, title, pool, parts)
    prepared = equalize.prepare(img, fmt, mode, consume=True)  # frees the decoded image once converted
    del img
    _check_work_mode(prepared.work.mode, work_mode)
    hist = prepared.work.histogram()
    equalized = prepared.work.point(equalize.lut_from_histogram(hist))
    # consumed: each plane is freed as soon as it is copied
    result = equalize.finish_result(prepared, equalized, hist, consume=True)
    plot = plot_histograms(result.hist_before, result.hist_after, title=title)
    return frame.pack_result(result, plot)


def _in_strips(img: Image.Image, fmt: str, mode: str, work_mode: str, title: str, pool: Executor,
               parts: int) -> bytes:
    done = equalize.equalize_strips(img, fmt, mode, pool, parts)
    _check_work_mode(done.work_mode, work_mode)
    before = equalize.by_channel(done.channels, done.hist_before)
    after = equalize.by_channel(done.channels, done.hist_after)
    plot = pool.submit(plot_histograms, before, after, title=title)
    out = done.image
    result = equalize.Result(image=encode(out, fmt), fmt=fmt, width=out.width, height=out.height,
                             channels=done.channels, hist_before=before, hist_after=after)
    out.close()
    return frame.pack_result(result, plot.result())


def _check_work_mode(got: str, expected: str) -> None:
    if got != expected:
        raise ImageError(400, "bad_image", "the image's pixel mode differs from its header's")


def result_bound(width: int, height: int) -> int:
    """The most bytes a framed result of a width x height image can take: the encoded image (PNG at
    level 1 of RGBA pixels, plus its framing), the histograms' JSON, the plot."""
    return width * height * 4 + height * 8 + (4 << 20)
