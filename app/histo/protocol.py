"""The master<->worker task protocol: the task's identity in headers, bytes in the body.

A task is one upload's whole pixel work, in one exchange: the body is the upload as the client sent
it; the worker decodes it, counts its histogram, derives the table, applies it, encodes the output and
draws the plot, and posts the framed result (compute/frame.py) to `reply_to`. The master accepts it only
if its after-histogram is what the table the master derives from its before-histogram makes of it
(master/scheduler.py). Pixel data never travels as JSON or base64; each message names exactly one task
attempt, so a result can be bound to it and a replay recognised."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from .compute.equalize import MODES
from .compute.tiles import WORK_MODES

PHASES = ("equalize",)  # one step: why not two (histogram, then the table), docs/ARCHITECTURE.md
IMAGE_MODES = WORK_MODES  # the work image modes (compute.tiles owns the table)
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_URL = re.compile(r"^https://[A-Za-z0-9.\-\[\]:]+$")


class ProtocolError(ValueError):
    pass


@dataclass(frozen=True)
class TaskHeader:
    job: str
    task: int
    attempt: str
    phase: str
    image_mode: str
    width: int
    rows: int
    reply_to: str
    mode: str = "luma"  # the equalization mode (gray, luma, rgb); image_mode is its work image's mode

    @property
    def bands(self) -> int:
        return IMAGE_MODES[self.image_mode]

    def to_headers(self) -> dict[str, str]:
        return {
            "X-Histo-Job": self.job, "X-Histo-Task": str(self.task), "X-Histo-Attempt": self.attempt,
            "X-Histo-Phase": self.phase, "X-Histo-Image-Mode": self.image_mode,
            "X-Histo-Width": str(self.width), "X-Histo-Rows": str(self.rows),
            "X-Histo-Reply-To": self.reply_to, "X-Histo-Mode": self.mode,
        }

    @classmethod
    def from_headers(cls, h: Mapping[str, str]) -> "TaskHeader":
        try:
            hdr = cls(job=h["X-Histo-Job"], task=int(h["X-Histo-Task"]), attempt=h["X-Histo-Attempt"],
                      phase=h["X-Histo-Phase"], image_mode=h["X-Histo-Image-Mode"],
                      width=int(h["X-Histo-Width"]), rows=int(h["X-Histo-Rows"]),
                      reply_to=h["X-Histo-Reply-To"], mode=h.get("X-Histo-Mode", "luma"))
        except (KeyError, ValueError) as exc:
            raise ProtocolError(f"missing or malformed task header: {exc}") from None
        if not (_ID.match(hdr.job) and _ID.match(hdr.attempt)):
            raise ProtocolError("malformed job or attempt id")
        if hdr.phase not in PHASES or hdr.image_mode not in IMAGE_MODES or hdr.mode not in MODES:
            raise ProtocolError("unknown phase or image mode")
        if not (0 <= hdr.task < 4096 and 0 < hdr.width <= 1 << 16 and 0 < hdr.rows <= 1 << 16):
            raise ProtocolError("task dimensions out of range")
        if not _URL.match(hdr.reply_to):
            raise ProtocolError("malformed reply address")
        return hdr
