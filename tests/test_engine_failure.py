"""When Flower's simulation engine fails (here: it cannot start), the run ends at once with one
line, and no server thread is left waiting for replies that will never come."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from flwr.server.superlink.fleet import vce

from fedhei.config.scenario import Scenario
from fedhei.errors import RunFailed
from strategies.simulation import run_scenario


def test_an_engine_that_cannot_start_fails_the_run_in_one_line_without_a_lingering_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def engine_that_cannot_start(**_: object) -> None:
        raise ConnectionError("could not reach the Ray cluster at 192.0.2.2:50275\n(a second line of detail)")

    monkeypatch.setattr(vce, "start_vce", engine_that_cannot_start)
    scenario = Scenario(name="no-engine", data_source="synthetic", model="vit-micro", num_clients=2, num_server_rounds=1,
                        pretrain_epochs=1.0, local_epochs=0.25, batch_size=32, calibration_batches=1, scorer="magnitude")
    before = set(threading.enumerate())
    started = time.monotonic()
    with pytest.raises(RunFailed, match=r"^the simulation engine stopped: could not reach the Ray cluster at 192\.0\.2\.2:50275$"):
        run_scenario(scenario, tmp_path / "run", quiet=True)
    lingering = [thread for thread in set(threading.enumerate()) - before if not thread.daemon]
    for thread in lingering:
        thread.join(timeout=10)
    assert [thread.name for thread in lingering if thread.is_alive()] == []
    # Far below the roll call's 900 s: nothing waited for the clients that never came.
    assert time.monotonic() - started < 120
