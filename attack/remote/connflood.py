"""The socket-holding client of the `connection flood` drill: it runs on the controller inside a network
namespace of its own on histo-br0 (attack/availability.py). It reads one JSON line from stdin (host,
port, source address a, how many sockets n), opens n plain TCP connections from a without ever
starting TLS, and prints as one JSON line how many the server closed at once and how many it still
held open once the handshake timeout has passed: {"opened", "closed_at_once", "open_after"}."""
from __future__ import annotations

import json
import socket
import sys
import time


def closed(s: socket.socket) -> bool:
    s.settimeout(0.05)
    try:
        return s.recv(1) == b""
    except (socket.timeout, BlockingIOError):
        return False
    except OSError:
        return True


def main() -> None:
    p = json.loads(sys.stdin.readline())
    held = []
    for _ in range(p["n"]):
        try:
            held.append(socket.create_connection((p["host"], p["port"]), timeout=5, source_address=(p["a"], 0)))
        except OSError:
            break
    time.sleep(0.5)
    at_once = [s for s in held if closed(s)]
    time.sleep(p.get("wait", 12))
    left = [s for s in held if s not in at_once and not closed(s)]
    print(json.dumps({"opened": len(held), "closed_at_once": len(at_once), "open_after": len(left)}))
    for s in held:
        s.close()


if __name__ == "__main__":
    main()
