"""Kernel figures: per-tile histogram + table apply summed over tiles vs Pillow on the whole image,
and np.histogram for scale; and what a master spends checking a worker's result without a pixel
(equalize.equalized_histogram). Pure compute, no network. A worker runs Pillow's whole-image histogram
and point (compute/work.py, one strip per job): its kernel is Pillow's, ratio 1.0 by construction; the
tiled figures measure what row strips would cost (docs/ARCHITECTURE.md)."""
from __future__ import annotations

import time
from typing import Any, Callable

from PIL import Image

from histo.compute import equalize, tiles


def best(fn: Callable[[], object], repeat: int = 5) -> float:
    t_best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        t_best = min(t_best, time.perf_counter() - t)
    return t_best


def kernel(size: int = 4096, parts: int = 8, mode: str = "RGB") -> dict[str, Any]:
    noise = Image.effect_noise((size, size), 60)
    img = Image.merge("RGB", [noise] * 3) if mode == "RGB" else noise
    raw = img.tobytes()
    ranges = tiles.row_ranges(size, parts)
    strips = tiles.split_rows(raw, size, tiles.bands_of(mode), ranges)
    hist = img.histogram()
    lut = equalize.lut_from_histogram(hist)
    whole_hist = best(lambda: img.histogram())
    whole_apply = best(lambda: img.point(lut))
    tiled_hist = best(lambda: [tiles.tile_histogram(s, mode, size, r1 - r0) for s, (r0, r1) in zip(strips, ranges)])
    tiled_apply = best(lambda: [tiles.tile_apply(s, mode, size, r1 - r0, lut) for s, (r0, r1) in zip(strips, ranges)])
    out = {"image": f"{size}x{size} {mode}", "tiles": parts,
           "pillow_histogram_s": whole_hist, "tiled_histogram_s": tiled_hist,
           "histogram_throughput_ratio": whole_hist / tiled_hist,
           "pillow_point_s": whole_apply, "tiled_apply_s": tiled_apply,
           "apply_throughput_ratio": whole_apply / tiled_apply,
           "worker_histogram_throughput_ratio": 1.0,  # the worker's call is Pillow's whole-image histogram
           "master_check_s": best(lambda: equalize.equalized_histogram(hist))}
    try:
        import numpy as np
        arr = np.asarray(img)
        planes = [arr[..., c] for c in range(3)] if mode == "RGB" else [arr]
        out["numpy_histogram_s"] = best(lambda: [np.histogram(p, bins=256, range=(0, 256)) for p in planes], repeat=2)
    except ImportError:
        pass
    return out
