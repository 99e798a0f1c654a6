"""Runs a study can trust, end to end under Ray: same seed same bytes, paired benches,
a SIGKILLed run that resumes to the same results, and failures that count.

Every run here is a real simulation (tiny model, synthetic data), through the same
entry points a user calls.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from fedhei.config.scenario import Scenario
from fedhei.experiments.plain import run_plain
from fedhei.federation.faults import Fault, fault_for
from strategies.fedhei import FedHEI
from strategies.simulation import bench_command, run_scenario

SCENARIO_TOML = """
name = "trust"
strategy = "fedhei"
data-source = "synthetic"
model = "vit-micro"
num-clients = 4
fraction-train = 0.5
num-server-rounds = 3
dirichlet-alpha = 0.5
pretrain-epochs = 1.0
local-epochs = 0.25
max-local-steps = 4
finetune-steps = 4
batch-size = 32
pruning-steps = 2
calibration-batches = 1
# A server optimizer with state of its own, so resume and the plain loop must carry it exactly.
server-optimizer = "adam"
server-lr = 0.01
"""


def _files(run_dir: Path) -> dict[str, bytes]:
    """What must repeat exactly: results.json and every client's model and manifest (not timings, not state)."""
    paths = [run_dir / "results.json", *sorted((run_dir / "clients").glob("*/*"))]
    return {str(path.relative_to(run_dir)): path.read_bytes() for path in paths}


def _fedhei(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "fedhei.cli", *arguments]


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trust") / "trust.toml"
    path.write_text(SCENARIO_TOML)
    return path


@pytest.fixture(scope="module")
def bench_dir(scenario_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fedhei and local-only side by side, as `fedhei bench` runs them."""
    out = tmp_path_factory.mktemp("bench")
    assert bench_command(scenario_file, [], ["fedhei", "local"], out, quiet=True) == 0
    return out


def test_the_same_seed_gives_byte_identical_results_and_models(scenario_file: Path, bench_dir: Path, tmp_path: Path) -> None:
    scenario = Scenario.from_toml(scenario_file)
    run_scenario(scenario, tmp_path / "again", quiet=True)
    first, second = _files(bench_dir / "fedhei"), _files(tmp_path / "again")
    assert len(first) == 1 + 2 * scenario.num_clients
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []
    other_seed = run_scenario(scenario.replace(seed=1), tmp_path / "seed-1", quiet=True)
    assert other_seed["rounds"] != json.loads(first["results.json"])["rounds"]


def test_every_strategy_of_a_bench_samples_the_same_clients_in_every_round(bench_dir: Path) -> None:
    rounds = {name: json.loads((bench_dir / name / "results.json").read_text())["rounds"] for name in ("fedhei", "local")}
    sampled = {name: [record["sampled"] for record in records] for name, records in rounds.items()}
    assert sampled["fedhei"] == sampled["local"]
    assert all(len(clients) == 2 for clients in sampled["fedhei"])
    # Not a trivially fixed set: the draw changes from round to round.
    assert len({tuple(clients) for clients in sampled["fedhei"]}) > 1


def test_the_plain_loop_gives_every_client_the_simulations_accuracies_and_model_files(scenario_file: Path, bench_dir: Path,
                                                                                      tmp_path: Path) -> None:
    """benchmarks/scale.py's plain loop (no Flower, no Ray) replays the same federation: same sampled clients,
    same evaluations every round, byte-identical final models."""
    scenario = Scenario.from_toml(scenario_file)
    simulated = json.loads((bench_dir / "fedhei" / "results.json").read_text())
    plain = run_plain(scenario, FedHEI.policy, tmp_path, threads=int(scenario.client_num_cpus))
    assert {int(client["client-id"]): (client["accuracy"], client["accuracy-weighted"]) for client in simulated["clients"]} == {
        client: (metrics["accuracy"], metrics["accuracy-weighted"]) for client, metrics in plain.finals.items()}
    assert {record["round"]: {row["client"]: row["accuracy"] for row in record["clients"] if row["client"] in record["evaluated"]}
            for record in simulated["rounds"]} == plain.evaluated
    for client in range(scenario.num_clients):
        model = Path("clients", str(client), "model.safetensors")
        assert (tmp_path / model).read_bytes() == (bench_dir / "fedhei" / model).read_bytes()


def test_a_run_killed_mid_round_resumes_to_the_same_results_and_models(scenario_file: Path, bench_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "killed"
    log = (tmp_path / "killed.log").open("w")
    process = subprocess.Popen(_fedhei("run", str(scenario_file), "--out", str(run_dir)), stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        # Mid-round: round 1 is checkpointed and a client has already saved its state for round 2.
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not list(run_dir.glob("state/*/client-*/round-2.safetensors")):
            assert process.poll() is None, (tmp_path / "killed.log").read_text()
            time.sleep(0.05)
        assert (run_dir / "checkpoint.safetensors").is_file()
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not (run_dir / "results.json").exists()
    resumed = subprocess.run(_fedhei("run", str(scenario_file), "--resume", str(run_dir), "--quiet"), capture_output=True, text=True,
                             check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert _files(run_dir) == _files(bench_dir / "fedhei")
    again = subprocess.run(_fedhei("run", str(scenario_file), "--resume", str(run_dir)), capture_output=True, text=True, check=False)
    assert again.returncode == 2 and "complete run" in again.stderr


FAULTS = {"fault-crash": 0.12, "fault-drop": 0.12, "fault-hang": 0.06}
FAULTY = dict(num_clients=10, fraction_train=1.0, num_server_rounds=3, fraction_evaluate=0.3, max_local_steps=2, scorer="magnitude",
              round_timeout=20.0, client_num_cpus=0.5, fault_crash=0.12, fault_drop=0.12, fault_hang=0.06)


def test_injected_faults_are_counted_by_kind_and_the_run_goes_on(scenario_file: Path, tmp_path: Path) -> None:
    scenario = Scenario.from_toml(scenario_file).replace(**FAULTY)
    expected = Counter(fault_for(scenario, r, c) for r in range(1, 4) for c in range(10))
    # The seeded schedule strikes 9 of the 30 client-rounds, every kind at least once.
    assert expected[Fault.NONE] == 21 and min(expected[kind] for kind in (Fault.CRASH, Fault.HANG, Fault.DROP)) >= 1
    payload = run_scenario(scenario, tmp_path / "faults", quiet=True)
    assert payload["status"] == "complete" and len(payload["clients"]) == 10
    counted = payload["failures"]["by-kind"]
    assert counted == {"crash": expected[Fault.CRASH], "drop": expected[Fault.DROP], "timeout": expected[Fault.HANG]}
    for record in payload["rounds"]:
        struck = {c: fault_for(scenario, record["round"], c) for c in range(10)}
        assert record["aggregated"] == [c for c, fault in struck.items() if fault is Fault.NONE]
        assert {f["client"]: f["kind"] for f in record["failures"] if f["phase"] == "train"} == {
            c: {Fault.CRASH: "crash", Fault.DROP: "drop", Fault.HANG: "timeout"}[fault] for c, fault in struck.items() if fault is not Fault.NONE}


def test_a_round_with_more_failures_than_allowed_stops_the_run_with_one_line(scenario_file: Path, tmp_path: Path) -> None:
    settings = [f"--set={key}={value}" for key, value in {**FAULTS, "num-clients": 10, "fraction-train": 1.0, "round-timeout": 20,
                                                          "client-num-cpus": 0.5, "max-local-steps": 2, "scorer": '"magnitude"',
                                                          "max-failed-fraction": 0.1}.items()]
    run_dir = tmp_path / "stopped"
    result = subprocess.run(_fedhei("run", str(scenario_file), *settings, "--out", str(run_dir), "--quiet"), capture_output=True,
                            text=True, check=False)
    assert result.returncode == 3, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "more than max-failed-fraction 0.1" in result.stderr and "most common:" in result.stderr
    partial = json.loads((run_dir / "results.json").read_text())
    assert partial["status"] == "partial" and partial["stopped"]["round"] == 1 and partial["clients"] == []
