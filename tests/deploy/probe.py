"""The segmentation probe: TCP connects in parallel, each answered "open", "refused" (reached the host,
nothing listening) or "timeout" (dropped). It runs inside a machine (its system python3, through
lxc-attach), on the controller and in the test's own namespace, as `python3 -c <this file> SRC TIMEOUT
TARGETS` (SRC: the address to bind, or ""; TARGETS: JSON [[address, port], ...]); prints the answers as
one JSON list. Standard library only."""
import json
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def probe(src: str, timeout: float, target: list[Any]) -> str:
    s = socket.socket()
    s.settimeout(timeout)
    try:
        if src:
            s.bind((src, 0))
        s.connect((target[0], target[1]))
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except (socket.timeout, TimeoutError):
        return "timeout"
    except OSError as e:
        return "error:" + str(e)
    finally:
        s.close()


def main() -> None:
    src, timeout, targets = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3])
    with ThreadPoolExecutor(32) as ex:
        print(json.dumps(list(ex.map(lambda t: probe(src, timeout, t), targets))))


if __name__ == "__main__":
    main()
