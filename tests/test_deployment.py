"""Flower's deployment engine on loopback, as real processes, and nothing of it left behind.

A SuperLink and two SuperNodes run as separate processes on 127.0.0.1 (insecure, on
ports picked here), `flwr run` submits the app to them, and the run's results.json is
checked. Every process the test starts, and every process those start in turn
(SuperExecs, the ServerApp, ClientApps; some in sessions of their own), carries a token
in its environment, so the test can stop all of them and prove that none is left,
without ever matching processes by name.

The second test does the same for the SuperLink that `flwr` starts by itself for
simulations: `fedhei superlink stop` must stop it and what it started, and nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import psutil
import pytest
from conftest import free_ports

from fedhei.processes import process_tree, running, stop

REPO = Path(__file__).resolve().parents[1]
# The venv's own executables first: SuperLinks and SuperNodes find SuperExec and the apps on PATH.
SEARCH_PATH = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
FLOWER_EXECUTABLES = ("flwr", "flower-superlink", "flower-supernode", "flower-superexec", "flwr-serverapp", "flwr-clientapp")
TOKEN_VARIABLE = "FEDHEI_TEST_PROCESS_TOKEN"
RUN_TIMEOUT_S = 600.0
GRACE_S = 5.0


def _executable(name: str) -> str:
    found = shutil.which(name, path=SEARCH_PATH)
    assert found, name
    return found


def _toml(values: dict[str, object]) -> str:
    """A flat TOML table; JSON's quoting of strings, numbers and booleans is valid TOML."""
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())


class Sandbox:
    """Starts Flower processes with logs in a temporary folder, and stops every one it caused."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.token = uuid.uuid4().hex
        self.env = {
            **os.environ,
            "PATH": SEARCH_PATH,
            TOKEN_VARIABLE: self.token,
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "OMP_NUM_THREADS": "1",
        }
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def home(self, name: str) -> Path:
        """A FLWR_HOME of its own per process, as on separate machines."""
        path = self.root / "homes" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def start(self, name: str, *command: str, home: Path, extra_env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [_executable(command[0]), *command[1:]],
            env={**self.env, "FLWR_HOME": str(home), **(extra_env or {})},
            cwd=cwd or self.root,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.started.append((name, process))
        return process

    def run(self, name: str, *command: str, home: Path, timeout: float = 120.0, extra_env: dict[str, str] | None = None,
            cwd: Path | None = None, returncode: int = 0) -> str:
        """Start, wait, and return the output of a short command; another exit status than ``returncode`` fails the test."""
        process = self.start(name, *command, home=home, extra_env=extra_env, cwd=cwd)
        process.wait(timeout=timeout)
        output = (self.root / f"{name}.log").read_text(errors="replace")
        assert process.returncode == returncode, f"{' '.join(command)} exited {process.returncode}:\n{output}"
        return output

    def tagged(self) -> list[psutil.Process]:
        """Every live process of ours with the token: those started here and all they spawned, wherever they went."""
        found = []
        for process in psutil.process_iter(["environ"]):
            if (process.info["environ"] or {}).get(TOKEN_VARIABLE) == self.token and process.pid != os.getpid():
                found.append(process)
        return running(found)

    def stop_all(self) -> list[psutil.Process]:
        """SIGTERM each started process group and every descendant, SIGKILL after a grace; returns what survived."""
        everything = {process.pid: process for process in self.tagged()}
        for _, started in self.started:
            with suppress(psutil.NoSuchProcess):
                everything.update((p.pid, p) for p in process_tree(psutil.Process(started.pid)))
        self._signal_groups(signal.SIGTERM)
        survivors = stop(list(everything.values()), GRACE_S)
        self._signal_groups(signal.SIGKILL)
        for _, started in self.started:
            with suppress(subprocess.TimeoutExpired):
                started.wait(timeout=GRACE_S)
        return running([*survivors, *self.tagged()])

    def _signal_groups(self, signum: signal.Signals) -> None:
        for _, started in self.started:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(started.pid, signum)

    def tails(self, lines: int = 40) -> str:
        parts = []
        for name in dict.fromkeys(name for name, _ in self.started):
            text = (self.root / f"{name}.log").read_text(errors="replace").splitlines()
            parts.append(f"--- {name}.log (last {lines} lines) ---\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    missing = [name for name in FLOWER_EXECUTABLES if shutil.which(name, path=SEARCH_PATH) is None]
    if missing:
        pytest.skip(f"Flower's executables are not installed next to this Python or on PATH: {', '.join(missing)}")
    box = Sandbox(tmp_path)
    yield box
    # A test that failed half-way still leaves nothing running; pytest shows these logs only when it failed.
    box.stop_all()
    print(box.tails())


def _command_name(process: psutil.Process) -> str:
    """``flwr-clientapp`` for ``python .../bin/flwr-clientapp ...``: what ps would show as the command."""
    with suppress(psutil.NoSuchProcess):
        for part in process.cmdline()[:2]:
            if Path(part).name.startswith(("flwr", "flower")):
                return Path(part).name
    return ""


def _wait_for_nodes(box: Sandbox, home: Path, count: int, timeout: float = 120.0) -> None:
    """Until the SuperLink answers and lists ``count`` SuperNodes online, so the first round samples them all."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listing = box.run("flwr-supernode-ls", "flwr", "supernode", "ls", "loopback", "--format", "json", home=home)
        nodes = json.loads(listing[listing.index("{"):]).get("nodes", [])
        if sum(node["status"] == "online" for node in nodes) >= count:
            return
        time.sleep(1.0)
    raise AssertionError(f"{count} SuperNodes did not come online in {timeout:.0f} s")


def test_two_supernodes_run_two_rounds_on_loopback_and_leave_no_process(sandbox: Sandbox) -> None:
    link_port, *node_ports = free_ports(3)
    sandbox.start("superlink", "flower-superlink", "--insecure", "--host", "127.0.0.1", "--port", str(link_port),
                  "--disable-runtime-dependency-installation", home=sandbox.home("superlink"))
    for partition, port in enumerate(node_ports):
        sandbox.start(f"supernode-{partition}", "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{link_port}",
                      "--host", "127.0.0.1", "--port", str(port), "--node-config", f"partition-id={partition} num-partitions=2",
                      home=sandbox.home(f"supernode-{partition}"))
    cli_home = sandbox.home("cli")
    (cli_home / "config.toml").write_text(
        f'[superlink]\ndefault = "loopback"\n\n[superlink.loopback]\naddress = "127.0.0.1:{link_port}"\ninsecure = true\n'
    )
    out_dir = sandbox.root / "runs"
    scenario = sandbox.root / "loopback.toml"
    scenario.write_text(_toml({
        "name": "loopback", "strategy": "fedhei", "num-clients": 2, "fraction-train": 1.0, "num-server-rounds": 2,
        "fraction-evaluate": 0.5, "model": "vit-micro", "data-source": "synthetic", "dirichlet-alpha": 0.5,
        "pretrain-epochs": 1.0, "local-epochs": 0.25, "max-local-steps": 4, "finetune-steps": 4, "batch-size": 32, "pruning-steps": 2,
        "calibration-batches": 1, "out-dir": str(out_dir),
    }))

    _wait_for_nodes(sandbox, cli_home, count=2)
    sandbox.run("flwr-run", "flwr", "run", ".", "loopback", "--run-config", str(scenario), "--stream",
                home=cli_home, cwd=REPO, timeout=RUN_TIMEOUT_S)
    listing = sandbox.run("flwr-ls", "flwr", "ls", "loopback", "--format", "json", home=cli_home)
    runs = json.loads(listing[listing.index("{"):])["runs"]
    daemons = sandbox.tagged()

    results_file = out_dir / "loopback" / "fedhei" / "results.json"
    assert [run["status"] for run in runs] == ["finished:completed"], runs
    assert results_file.is_file()
    results = json.loads(results_file.read_text())
    assert [entry["round"] for entry in results["rounds"]] == [1, 2]
    assert all(entry["aggregated"] == [0, 1] and entry["failures"] == [] for entry in results["rounds"]), results["rounds"]
    # Each SuperNode's ClientApp took its partition from the node config: two users, two different shards.
    clients = sorted(results["clients"], key=lambda client: client["client-id"])
    assert [client["client-id"] for client in clients] == [0, 1]
    assert clients[0]["train-examples"] != clients[1]["train-examples"]
    for client in (0, 1):
        assert (out_dir / "loopback" / "fedhei" / "clients" / str(client) / "model.safetensors").is_file()

    # The SuperLink's SuperExec runs in a session of its own, so killing process groups alone would miss it.
    assert sorted(_command_name(process) for process in daemons) == sorted(
        ["flower-superlink", "flower-supernode", "flower-supernode", *["flower-superexec"] * 3])
    # Nothing listened on a port we did not pick, and nothing was allowed to `uv sync` the app.
    listening = {c.laddr.port for process in daemons for c in process.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN}
    assert listening == {link_port, *node_ports}, listening
    assert not any("--allow-runtime-dependency-installation" in process.cmdline() for process in daemons)
    left = sandbox.stop_all()
    assert not left, [(process.pid, _command_name(process)) for process in left]
    assert all(started.poll() is not None for _, started in sandbox.started)


def _fedhei(box: Sandbox, name: str, *arguments: str, home: Path, env: dict[str, str], returncode: int = 0) -> str:
    return box.run(name, sys.executable, "-m", "fedhei.cli", *arguments, home=home, extra_env=env, returncode=returncode)


def test_superlink_stop_stops_what_flwr_started_for_simulations_and_nothing_else(sandbox: Sandbox) -> None:
    port, control_port, decoy_port = free_ports(3)
    home = sandbox.home("user")
    # flwr reads its local SuperLink's ports from these; the defaults would collide with anyone else's.
    env = {"FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(port), "FLWR_LOCAL_CONTROL_API_PORT": str(control_port)}
    # Our own process, listening on a port and named like a SuperLink on its command line: `pkill -f` would hit it.
    decoy = sandbox.start("decoy", sys.executable, "-c",
                          f"import socket, time; s = socket.create_server(('127.0.0.1', {decoy_port})); time.sleep(600)",
                          "flower-superlink", "--simulation", home=home)
    assert "no local SuperLink of yours" in _fedhei(sandbox, "status-before", "superlink", "status", home=home, env=env)

    # Any flwr command on the default `local` connection starts the SuperLink exactly as `flwr run` does.
    sandbox.run("flwr-ls", "flwr", "ls", home=home, extra_env=env)
    status = _fedhei(sandbox, "status", "superlink", "status", home=home, env=env)
    assert f"127.0.0.1:{port}, FLWR_HOME {home}" in status, status
    superlink = psutil.Process(int(status.split("PID ")[1].split(",")[0]))
    tree = process_tree(superlink)
    assert [_command_name(process) for process in tree] == ["flower-superlink", "flower-superexec"], tree

    refused = _fedhei(sandbox, "stop-decoy", "superlink", "stop", "--port", str(decoy_port), home=home, env=env, returncode=2)
    assert "not a simulation SuperLink of yours" in refused and refused.count("\n") == 1, refused
    stopped = _fedhei(sandbox, "stop", "superlink", "stop", home=home, env=env)
    assert f"stopped the local SuperLink (PID {superlink.pid}" in stopped and "1 process(es)" in stopped, stopped

    assert not running(tree)
    assert running([psutil.Process(decoy.pid)]), "the decoy named flower-superlink was stopped too"
    assert "no local SuperLink of yours" in _fedhei(sandbox, "status-after", "superlink", "status", home=home, env=env)
    assert not sandbox.stop_all()
