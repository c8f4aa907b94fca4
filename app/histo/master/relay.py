"""What the leader accepts from a worker's status to put on the SecOps stream. A worker may be
compromised: it chooses nothing but which of a fixed set of events it reports and their short
details; the event is attributed to the certificate that sent it, never to a `service` or an
`audience` the worker names, and a status reply carries a bounded number of them."""
from __future__ import annotations

from typing import Any

# kind -> the detail fields a worker may report with it (every value a short string or a number)
WORKER_EVENTS: dict[str, tuple[str, ...]] = {
    "mtls_rejected": ("reason", "peer", "path"),
    "tls_handshake_refused": ("reason", "peer", "listener", "suppressed"),
    # a connection over the worker's caps (edge/conncap.py ReportThrottle): refused before TLS
    "connection_refused": ("where", "reason"),
    "cert_rotated": ("serial", "not_after"),
    "vault_unavailable": ("reason",),
    "vault_recovered": (),
}
SEVERITY = {"mtls_rejected": "warning", "tls_handshake_refused": "warning", "connection_refused": "warning",
            "cert_rotated": "info",
            "vault_unavailable": "warning", "vault_recovered": "info"}
MAX_EVENTS = 20  # per status reply (the worker keeps at most 50 between two collections)
MAX_VALUE = 200  # characters of one detail


def accept(events: Any, sender: str) -> tuple[list[dict[str, Any]], int]:
    """The events to publish (each with kind, severity, service=sender and known details only),
    and how many were refused (unknown kind, not an object, or beyond MAX_EVENTS)."""
    if not isinstance(events, list):
        return [], 1 if events else 0
    out: list[dict[str, Any]] = []
    refused = max(0, len(events) - MAX_EVENTS)
    for ev in events[:MAX_EVENTS]:
        kind = ev.get("kind") if isinstance(ev, dict) else None
        if not isinstance(kind, str) or kind not in WORKER_EVENTS:
            refused += 1
            continue
        fields: dict[str, Any] = {"kind": kind, "severity": SEVERITY[kind], "service": sender,
                                  "relayed_from": sender}
        for key in WORKER_EVENTS[kind]:
            value = ev.get(key)
            if isinstance(value, str):
                fields[key] = value[:MAX_VALUE]
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                fields[key] = value
        out.append(fields)
    return out, refused
