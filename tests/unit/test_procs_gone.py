"""procs.gone: a process is gone when its last thread is, not when its main thread is a zombie.

What made test_faults.py::test_public_address_survives_a_master fail now and then: after the SIGKILL of
a master, its main thread was already a zombie while other threads were still exiting, and the master's
SO_REUSEPORT listener on HISTO_URL stayed open until the last of them had: the kernel still gave it new
connections and reset them when it closed. Here a child's main thread ends on its own (the exit system
call, not exit_group) while another thread holds a listening socket, as such a master's do."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from histo import procs

EXIT_THREAD = {"x86_64": 60, "aarch64": 93}.get(os.uname().machine)  # SYS_exit: this thread only

CHILD = f"""
import ctypes, os, socket, sys, threading, time
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(16)
print(srv.getsockname()[1], flush=True)
def last_thread():
    sys.stdin.readline()  # until the test says so
    os._exit(0)
threading.Thread(target=last_thread).start()
time.sleep(0.3)
ctypes.CDLL(None).syscall({EXIT_THREAD}, 0)  # the main thread ends; the other one and the socket live on
"""


def _main_thread_state(pid: int) -> str:
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[-1].split()[0]


@pytest.mark.skipif(EXIT_THREAD is None or not os.path.isdir("/proc/self/task"), reason="Linux x86_64/aarch64")
def test_a_process_whose_main_thread_is_a_zombie_is_not_gone_while_a_thread_holds_its_socket() -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        port = int(child.stdout.readline())
        deadline = time.monotonic() + 10
        while _main_thread_state(child.pid) != "Z":
            assert time.monotonic() < deadline, "the child's main thread did not end"
            time.sleep(0.01)
        # the old test's condition holds, yet the process is not gone: its listener still takes connections
        assert not procs.gone(child.pid)
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        child.stdin.write("\n")
        child.stdin.flush()
        deadline = time.monotonic() + 10
        while not procs.gone(child.pid):
            assert time.monotonic() < deadline, "the child did not end"
            time.sleep(0.01)
        with pytest.raises(ConnectionRefusedError):  # gone means its socket is closed
            socket.create_connection(("127.0.0.1", port), timeout=2)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


def test_a_pid_that_does_not_exist_is_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert procs.gone(child.pid)
