"""The SuperLink that ``flwr run`` leaves behind after a simulation: found and stopped, nothing else.

Flower 1.41 (``flwr/cli/local_superlink.py``) starts it on first use, detached in a
session of its own, as ``flower-superlink --simulation ... --host 127.0.0.1 --port
39091 --log-file $FLWR_HOME/local-superlink/superlink.log``; the port comes from
``FLWR_LOCAL_SUPERLINK_HTTP_API_PORT`` when set. It records no PID and Flower has no
command to stop it. It is found here the one way that cannot reach someone else's
process: a process of this user, a ``flower-superlink --simulation``, listening on
that port (the port is what ``flwr`` itself checks to decide one is running).
"""

from __future__ import annotations

import os
import socket
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import psutil

from fedhei.errors import FedheiError
from fedhei.processes import process_tree, stop

PORT_VARIABLE = "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"
DEFAULT_PORT = 39091
EXECUTABLE = "flower-superlink"


@dataclass(frozen=True)
class LocalSuperLink:
    process: psutil.Process
    port: int
    flwr_home: Path | None

    def describe(self) -> str:
        home = f", FLWR_HOME {self.flwr_home}" if self.flwr_home else ""
        return f"PID {self.process.pid}, 127.0.0.1:{self.port}{home}"


def local_port(port: int | None = None) -> int:
    """``port`` if given, else the one ``flwr`` uses for its local SuperLink, read from the environment as it does."""
    if port is not None:
        if not 0 < port < 65536:
            raise FedheiError(f"--port is {port}; give a port number (1-65535)")
        return port
    text = os.environ.get(PORT_VARIABLE, str(DEFAULT_PORT))
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise FedheiError(f"{PORT_VARIABLE} is '{text}'; set it to a port number (1-65535) or unset it")
    return int(text)


def _is_simulation_superlink(cmdline: list[str]) -> bool:
    """``flower-superlink --simulation ...``, run directly or as a script by its Python."""
    return any(Path(part).name == EXECUTABLE for part in cmdline[:2]) and "--simulation" in cmdline


def _flwr_home(cmdline: list[str]) -> Path | None:
    """The FLWR_HOME it was started for: its log file is ``$FLWR_HOME/local-superlink/superlink.log``."""
    if "--log-file" in cmdline[:-1]:
        return Path(cmdline[cmdline.index("--log-file") + 1]).parent.parent
    return None


def _listens_on(process: psutil.Process, port: int) -> bool:
    try:
        return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in process.net_connections(kind="tcp"))
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def find_local_superlink(port: int) -> LocalSuperLink | None:
    """This user's simulation SuperLink listening on ``port``, or None when nothing is listening there.

    Other users' processes are never inspected beyond their owner's name.
    """
    me = psutil.Process().username()
    for process in psutil.process_iter(["username"]):
        if process.info["username"] != me:
            continue
        with suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            cmdline = process.cmdline()
            if _is_simulation_superlink(cmdline) and _listens_on(process, port):
                return LocalSuperLink(process, port, _flwr_home(cmdline))
    if _port_taken(port):
        raise FedheiError(f"127.0.0.1:{port} is held by a process that is not a simulation SuperLink of yours; fedhei "
                          f"stops only your own (on a shared machine, give flwr a port of your own with {PORT_VARIABLE})")
    return None


def stop_local_superlink(superlink: LocalSuperLink, grace: float = 5.0) -> int:
    """Stop the SuperLink and every process it started (SuperExec, simulations); returns how many of those it had."""
    tree = process_tree(superlink.process)
    survivors = stop(tree, grace)
    if survivors:
        raise FedheiError(f"could not stop PIDs {', '.join(str(p.pid) for p in survivors)} even with SIGKILL; "
                          "check them with ps")
    return max(len(tree) - 1, 0)


def superlink_command(action: str, port: int | None) -> int:
    """``fedhei superlink status|stop``: one line saying what runs, or what was stopped."""
    port = local_port(port)
    superlink = find_local_superlink(port)
    if superlink is None:
        print(f"no local SuperLink of yours is listening on 127.0.0.1:{port}")
    elif action == "status":
        print(f"local SuperLink running: {superlink.describe()}")
    else:
        helpers = stop_local_superlink(superlink)
        print(f"stopped the local SuperLink ({superlink.describe()}) and {helpers} process(es) it had started")
    return 0
