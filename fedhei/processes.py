"""Stop exactly the processes we mean to, and what they spawned: by PID, never by name.

Flower's daemons start helpers in sessions of their own (a SuperLink's SuperExec runs
detached, and so does the SuperLink ``flwr run`` starts for a simulation), so neither a
process group nor a name pattern is the right unit: the first misses helpers, the
second hits other people's processes on a shared machine. The tree of parent links
holds them all while the parents live, so it is read first and stopped second.
``psutil.Process`` objects also guard against a PID reused by an unrelated process.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from contextlib import suppress

import psutil


def is_running(process: psutil.Process) -> bool:
    """Alive and not a zombie (a zombie has exited; its parent, or init, has yet to reap it)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def process_tree(root: psutil.Process) -> list[psutil.Process]:
    """The process and every descendant still running, root first; empty when it is gone (or its PID reused)."""
    if not is_running(root):
        return []
    try:
        return [root, *running(root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def running(processes: Iterable[psutil.Process]) -> list[psutil.Process]:
    return [process for process in processes if is_running(process)]


def wait_until_stopped(processes: Sequence[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Those still running after ``timeout`` seconds; our own children are reaped on the way."""
    deadline = time.monotonic() + timeout
    while (alive := running(processes)) and time.monotonic() < deadline:
        psutil.wait_procs(alive, timeout=0.1)
    return alive


def stop(processes: Sequence[psutil.Process], grace: float = 5.0) -> list[psutil.Process]:
    """SIGTERM each, SIGKILL whatever still runs after ``grace`` seconds; returns any that survived both."""
    for process in processes:
        with suppress(psutil.NoSuchProcess):
            process.terminate()
    stubborn = wait_until_stopped(processes, grace)
    for process in stubborn:
        with suppress(psutil.NoSuchProcess):
            process.kill()
    return wait_until_stopped(stubborn, grace)
