"""The one parser of durations in configuration and on command lines: '900', '90s', '15m',
'24h', '30d', or compound ('1h30m'), to whole seconds."""
from __future__ import annotations

import re

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str | int) -> int:
    """Seconds in `value`; ValueError, with the accepted forms, for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"bad duration {value!r} (use e.g. 900, 90s, 15m, 24h, 30d)")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"bad duration {value!r}: must not be negative")
        return value
    text = str(value).strip()
    if not re.fullmatch(r"(\d+[smhd]?)+", text):
        raise ValueError(f"bad duration {value!r} (use e.g. 900, 90s, 15m, 24h, 30d)")
    return sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([smhd]?)", text))
