"""fedhei.processes: a tree is stopped whole, by PID, with SIGKILL for what ignores SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil

from fedhei.processes import process_tree, running, stop, wait_until_stopped

# A parent that ignores SIGTERM and a child detached into a session of its own, as Flower's daemons do.
STUBBORN_PARENT = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], start_new_session=True)\n"
    "print('ready', flush=True)\n"
    "time.sleep(600)\n"
)


def test_stop_kills_what_ignores_sigterm_and_reaches_a_child_in_another_session() -> None:
    parent = subprocess.Popen([sys.executable, "-c", STUBBORN_PARENT], stdout=subprocess.PIPE, text=True)
    tree: list[psutil.Process] = []
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "ready"
        tree = process_tree(psutil.Process(parent.pid))
        assert len(tree) == 2 and tree[0].pid == parent.pid
        child = tree[1]
        assert child.ppid() == parent.pid and os.getpgid(child.pid) != os.getpgid(parent.pid)

        tree[0].send_signal(signal.SIGTERM)
        assert wait_until_stopped(tree[:1], timeout=0.5) == tree[:1], "the parent should have ignored SIGTERM"

        assert stop(tree, grace=0.5) == []
        assert not running(tree)
        assert process_tree(tree[0]) == []
    finally:
        stop(running(tree), grace=0.5)
        parent.kill()
        parent.wait()
