"""The drills' plumbing that needs no cluster: how a task reaches a machine, which tasks the drills ask
for, the TLS-record walk of the capture, and the deployed cluster's container names."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from attack import deployed, network
from attack.remote import inside
from attack.target import BOOT

ATTACK = Path(deployed.__file__).resolve().parent


def test_boot_runs_the_program_with_the_request_line_as_its_stdin() -> None:
    program = "import sys\nprint('got ' + sys.stdin.readline().strip() + ' as ' + __name__)\n"
    out = subprocess.run([sys.executable, "-c", BOOT], input='{"task": "x"}\n' + program, capture_output=True,
                         text=True, timeout=30, check=True)
    assert out.stdout == 'got {"task": "x"} as __main__\n'


def test_every_task_a_drill_asks_for_exists_inside() -> None:
    asked = {m for f in ATTACK.glob("*.py") for m in re.findall(r'\.inside\([^,]+, "(\w+)"', f.read_text())}
    assert asked and asked <= set(inside.TASKS), asked - set(inside.TASKS)


def test_tls_coverage_tells_records_from_plaintext() -> None:
    record = bytes([23, 3, 3, 0, 16]) + bytes(16)
    assert network._tls_coverage(record * 8) == 1.0
    assert network._tls_coverage(b"GET /api/v1/jobs HTTP/1.1\r\nAuthorization: Bearer x\r\n\r\n" * 4) < 0.1
    # a capture that starts mid-record resyncs on the next two chained records
    assert network._tls_coverage(record[7:] + record * 8) > 0.9


def test_container_names_of_this_checkout() -> None:
    name = deployed.container_pattern(Path("/src/histo"), {"worker1", "zk1"})
    assert name.match("histo_worker1_1796153384417_92504")  # vagrant-lxc: _<timestamp>_<random>
    assert name.match("histo_zk1_1796153384417")
    assert not name.match("histo_worker10_1796153384417_92504")
    assert not name.match("other_worker1_1796153384417_92504")


def test_private_files_leave_nothing_behind_even_on_error() -> None:
    try:
        with inside.private_files(inside.tls_files("c", "k", "a")) as d:
            held = sorted(p.name for p in d.iterdir())
            raise RuntimeError("the drill failed")
    except RuntimeError:
        pass
    assert held == ["ca.pem", "cert.pem", "key.pem"] and not d.exists()
