"""Processes started by local mode and the tests (OpenBao, ZooKeeper, the services), tracked by pid
files so `down` stops exactly what `up` started."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .files import write_private


def read_pid(pid_path: Path) -> int | None:
    try:
        return int(pid_path.read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pid_path: Path, marker: str) -> int | None:
    """The pid in `pid_path` if that process still runs and its command line contains `marker`
    (a stale pid file left by a crash may point at a recycled pid: never trust it blindly)."""
    pid = read_pid(pid_path)
    if pid is None:
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    return pid if marker in cmdline else None


def started(pid_path: Path) -> bool:
    """Whether the process we just spawned still lives (right after fork its command line is still
    the parent's, so do not match a marker here)."""
    pid = read_pid(pid_path)
    return pid is not None and _running(pid)


def spawn(argv: list[str], log_path: Path, pid_path: Path, env: dict[str, str] | None = None) -> int:
    log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.STDOUT,
                            start_new_session=True, env=env or clean_env(), close_fds=True)
    os.close(fd)
    write_private(pid_path, f"{proc.pid}\n")
    return proc.pid


def clean_env() -> dict[str, str]:
    """A minimal environment for children: nothing secret is ever passed through it."""
    keep = ("PATH", "LANG", "LC_ALL", "HOME", "TZ", "JAVA_HOME")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def stop(pid_path: Path, marker: str, timeout: float = 10.0) -> bool:
    pid = alive(pid_path, marker)
    if pid is None:
        pid_path.unlink(missing_ok=True)
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.time() + wait
        while time.time() < deadline:
            if not _running(pid):
                break
            time.sleep(0.05)
        if not _running(pid):
            break
    pid_path.unlink(missing_ok=True)
    return True


def gone(pid: int) -> bool:
    """Whether no thread of process `pid` is left. Not the same as its main thread being a zombie: after
    a SIGKILL the main thread often ends first, and the process's files — a listening socket among them,
    which the kernel still hands new connections to (and resets when it closes) — are closed only by the
    last of its threads to exit, milliseconds later."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    for tid in tasks:
        try:
            state = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:  # that thread was reaped in between
            continue
        if state not in ("Z", "X"):
            return False
    return True


def _running(pid: int) -> bool:
    return not gone(pid)
