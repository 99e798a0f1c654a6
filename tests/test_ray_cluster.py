"""A scenario on an existing Ray cluster, through `ray-address`: a study that outgrows one
machine moves to a cluster without code changes. Here the cluster is a one-node head on
loopback that the test starts itself, as its own process tree, and stops by PID."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import free_ports

from fedhei.config.scenario import Scenario
from fedhei.processes import process_tree, running, stop
from strategies.simulation import run_scenario

RAY = shutil.which("ray", path=str(Path(sys.executable).parent))
CURRENT_CLUSTER = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"


@pytest.fixture
def ray_current_cluster_restored() -> Iterator[None]:
    """`ray start` records its head as the machine's current cluster; put back what was there."""
    before = CURRENT_CLUSTER.read_bytes() if CURRENT_CLUSTER.exists() else None
    yield
    if before is None:
        CURRENT_CLUSTER.unlink(missing_ok=True)
    else:
        CURRENT_CLUSTER.write_bytes(before)


def _wait_for_port(port: int, head: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert head.poll() is None, "the Ray head exited before it listened"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"the Ray head did not listen on {port} within {timeout:g} s")


@pytest.mark.cluster
@pytest.mark.usefixtures("ray_current_cluster_restored")
@pytest.mark.skipif(RAY is None, reason="the ray command is not installed beside this Python")
def test_a_scenario_runs_on_an_existing_ray_cluster_and_the_head_is_stopped(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    log = (tmp_path / "ray-head.log").open("w")
    head = subprocess.Popen([RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false", "--disable-usage-stats"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    tree: list[psutil.Process] = []
    try:
        _wait_for_port(port, head)
        tree = process_tree(psutil.Process(head.pid))
        scenario = Scenario(name="on-cluster", data_source="synthetic", model="vit-micro", num_clients=3, fraction_train=1.0,
                            num_server_rounds=1, pretrain_epochs=1.0, local_epochs=0.25, batch_size=32, calibration_batches=1,
                            scorer="magnitude", max_local_steps=4, finetune_steps=4, ray_address=f"127.0.0.1:{port}")
        payload = run_scenario(scenario, tmp_path / "run", quiet=True)
        assert payload["status"] == "complete" and payload["rounds"][0]["aggregated"] == [0, 1, 2]
        # Joining the head leaves it running: the cluster outlives the run, as a shared one must.
        assert head.poll() is None
    finally:
        tree = process_tree(psutil.Process(head.pid)) if head.poll() is None else tree
        survivors = stop(tree)
        head.wait(timeout=30)
    assert survivors == [] and running(tree) == []
