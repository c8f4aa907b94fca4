"""A result as one byte string: the worker writes it, the master checks and seals it, and the stored
result blob holds it (master/envelope.py). Meta (JSON) first, then the encoded image and the plot."""
from __future__ import annotations

import json

from .equalize import Result

MAX_META = 256 * 1024  # the meta's JSON: histograms of at most 3 bands (~30 kB), never megabytes


class FrameError(ValueError):
    """Bytes that are not a framed result."""


def pack_result(result: Result, plot: bytes) -> bytes:
    meta = json.dumps({"fmt": result.fmt, "width": result.width, "height": result.height,
                       "channels": result.channels, "hist_before": result.hist_before,
                       "hist_after": result.hist_after, "image": len(result.image), "plot": len(plot)},
                      separators=(",", ":")).encode()
    # joined, the image is copied once (chained "+" copied it twice)
    return b"".join((len(meta).to_bytes(4, "big"), meta, result.image, plot))


def unpack_result(data: bytes) -> tuple[Result, bytes]:
    try:
        size = int.from_bytes(data[:4], "big")
        if size > MAX_META:
            raise FrameError(f"result meta of {size} bytes")
        meta = json.loads(data[4:4 + size])
        start = 4 + size
        n_image, n_plot = int(meta["image"]), int(meta["plot"])
        image = data[start:start + n_image]
        plot = data[start + n_image:start + n_image + n_plot]
        result = Result(image=image, fmt=str(meta["fmt"]), width=int(meta["width"]), height=int(meta["height"]),
                        channels=list(meta["channels"]), hist_before=dict(meta["hist_before"]),
                        hist_after=dict(meta["hist_after"]))
    except FrameError:
        raise
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise FrameError(f"unreadable result ({type(exc).__name__})") from None
    if len(image) != n_image or len(plot) != n_plot:
        raise FrameError("truncated result")
    return result, plot
