"""Bad input through the real command line: one line saying what is wrong, exit 2, nothing written.

Each case calls the CLI's entry point with real arguments, in this process, so the
forty cases cost one import of torch and Flower rather than forty; a few run as
real subprocesses too (here, tests/test_data.py, tests/test_trust.py).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
from conftest import free_ports
from flwr.app import Context, RecordDict
from flwr.serverapp import Grid

from fedhei.cli import main
from fedhei.errors import FedheiError
from fedhei.models.checkpoints import save_checkpoint
from fedhei.models.registry import create_model
from strategies.checkpoint import ServerCheckpoint
from strategies.server_app import app as server_app
from strategies.simulation import RAY_HEAD_WAIT_S

SCENARIO = """
name = "bad"
data-source = "synthetic"
model = "vit-micro"
num-clients = 4
pretrain-epochs = 1.0
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad-input")
    scenario = root / "ok.toml"
    scenario.write_text(SCENARIO)
    (root / "broken.toml").write_text("name = \n")
    (root / "nested.toml").write_text(SCENARIO + "[tool]\nx = 1\n")
    (root / "corrupt.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    (root / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    (root / "a-file").write_text("not a folder")
    save_checkpoint(create_model("vit-tiny-c10"), root / "tiny.safetensors", {"model": "vit-tiny-c10"})
    stale = root / "stale-run"
    ServerCheckpoint(completed_round=1, run_token="0" * 32, scenario={"name": "other"}, strategy_state={}, arrays={},
                     optimizer={}).save(stale)
    (root / "garbage.toml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary, not a scenario")
    (root / "old-bench" / "local").mkdir(parents=True)
    (root / "old-bench" / "local" / "results.json").write_text('{"status": "partial"}')
    # The user's own strategy modules live outside root: a module that imports writes its __pycache__.
    modules = tmp_path_factory.mktemp("user-modules")
    (modules / "doors_syntax_error.py").write_text("class Mine(\n")
    (modules / "doors_raises.py").write_text("raise RuntimeError('needs the lab cluster')\n")
    return {"root": root, "scenario": scenario, "stale": stale, "modules": modules}


def _run(files: dict[str, Path], *settings: str, scenario: str = "") -> list[str]:
    return ["run", scenario or str(files["scenario"]), "--out", str(files["root"] / "out"), *settings]


CASES: dict[str, tuple[Callable[[dict[str, Path]], list[str]], str]] = {
    "missing scenario": (lambda f: _run(f, scenario=str(f["root"] / "nowhere.toml")), "does not exist"),
    "scenario not TOML": (lambda f: _run(f, scenario=str(f["root"] / "broken.toml")), "not valid TOML"),
    "scenario with tables": (lambda f: _run(f, scenario=str(f["root"] / "nested.toml")), "flat run-config keys"),
    "unknown setting": (lambda f: _run(f, "--set", "num-rounds=3"), "unknown setting 'num-rounds'"),
    "malformed --set": (lambda f: _run(f, "--set", "prob"), "is not key=value"),
    "wrong type": (lambda f: _run(f, "--set", 'prob="high"'), "prob is 'high'"),
    "prob out of range": (lambda f: _run(f, "--set", "prob=1.5"), "prob is 1.5"),
    "unknown partition": (lambda f: _run(f, "--set", 'partition="random"'), "partition is 'random'"),
    "unknown model": (lambda f: _run(f, "--set", 'model="resnet18"'), "unknown model 'resnet18'"),
    "unknown strategy": (lambda f: _run(f, "--strategy", "fedprox-typo"), "unknown strategy 'fedprox-typo'"),
    "unknown scorer (a worker used to fail)": (lambda f: _run(f, "--set", 'scorer="nope"'), "scorer is 'nope'; choose one of"),
    "sensing with prob 0 (a worker used to fail)": (lambda f: _run(f, "--set", "prob=0.0"), "needs a prob in (0, 1)"),
    "relative threshold 5 (every client used to crash)": (
        lambda f: _run(f, "--set", 'role-rule="relative"', "--set", "role-threshold=5.0"), "role-threshold is 5.0"),
    "device quantum": (lambda f: _run(f, "--set", 'device="quantum"'), "device is 'quantum'"),
    "device cuda without a GPU (used to hang)": (lambda f: _run(f, "--set", 'device="cuda"'), "torch sees no CUDA GPU"),
    "more clients than images (used to hang)": (lambda f: _run(f, "--set", "num-clients=7000"), "num-clients is 7000"),
    "missing data path": (lambda f: _run(f, "--data", str(f["root"] / "nowhere")), "does not exist"),
    "corrupt data tarball": (lambda f: _run(f, "--data", str(f["root"] / "corrupt.tar.gz")), "cannot read tarball"),
    "missing base checkpoint": (lambda f: _run(f, "--set", f'base-model="{f["root"] / "none.safetensors"}"'), "does not exist"),
    "corrupt base checkpoint": (lambda f: _run(f, "--set", f'base-model="{f["root"] / "corrupt.safetensors"}"'),
                                "not a readable safetensors checkpoint"),
    "checkpoint of another model": (lambda f: _run(f, "--set", f'base-model="{f["root"] / "tiny.safetensors"}"'), "does not fit"),
    "unwritable --out": (lambda f: ["run", str(f["scenario"]), "--out", str(f["root"] / "a-file" / "run")],
                         "cannot write the run directory"),
    "unwritable state-dir": (lambda f: _run(f, "--set", f'state-dir="{f["root"] / "a-file" / "state"}"'),
                             "cannot write the client state directory"),
    "faults above 1": (lambda f: _run(f, "--set", "fault-crash=0.6", "--set", "fault-drop=0.6"), "must not exceed 1"),
    "hangs with an hour's timeout": (lambda f: _run(f, "--set", "fault-hang=0.1"), "set round-timeout to at most"),
    "max-failed-fraction above 1": (lambda f: _run(f, "--set", "max-failed-fraction=2.0"), "max-failed-fraction is 2.0"),
    "round-timeout 0": (lambda f: _run(f, "--set", "round-timeout=0"), "round-timeout is 0"),
    "client-num-cpus 0": (lambda f: _run(f, "--set", "client-num-cpus=0"), "client-num-cpus is 0"),
    "resume without a checkpoint": (lambda f: ["run", str(f["scenario"]), "--resume", str(f["root"] / "never-ran")],
                                    "holds no checkpoint"),
    "resume with another scenario": (lambda f: ["run", str(f["scenario"]), "--resume", str(f["stale"])],
                                     "differs from the one this run was started with"),
    "unwritable data plot (the table used to print first)": (
        lambda f: ["data", "--data", "synthetic", "--num-clients", "4", "--plot", str(f["root"] / "a-file" / "x.png")], "cannot write"),
    "data plot into /sys": (lambda f: ["data", "--data", "synthetic", "--num-clients", "4", "--plot", "/sys/fedhei-plot.png"],
                            "cannot write the label distribution plot /sys/fedhei-plot.png"),
    "binary scenario file (used to be a UnicodeDecodeError)": (lambda f: _run(f, scenario=str(f["root"] / "garbage.toml")),
                                                               "is not a text file"),
    "own strategy with a syntax error (used to be a SyntaxError)": (
        lambda f: _run(f, "--set", 'strategy="doors_syntax_error:Mine"'),
        "cannot import strategy 'doors_syntax_error:Mine': module 'doors_syntax_error' raised SyntaxError"),
    "own strategy that raises on import": (lambda f: _run(f, "--set", 'strategy="doors_raises:Mine"'),
                                           "module 'doors_raises' raised RuntimeError: needs the lab cluster"),
    "ray-address where no head listens (used to retry for minutes)": (
        lambda f: _run(f, "--set", f'ray-address="127.0.0.1:{free_ports(1)[0]}"'),
        f"(waited up to {RAY_HEAD_WAIT_S:g} s: Connection refused); start the head"),
    "ray-address without a port": (lambda f: _run(f, "--set", 'ray-address="head-node"'), "ray-address is 'head-node'"),
    "state-dir in /sys (root passes the permission bits; every client used to crash)": (
        lambda f: _run(f, "--set", 'state-dir="/sys/fedhei-state"'), "cannot write the client state directory (state-dir) /sys"),
    "run into a killed run's directory": (lambda f: ["run", str(f["scenario"]), "--out", str(f["stale"])],
                                          "holds an earlier run (checkpoint.safetensors); choose another --out"),
    "bench into an earlier bench": (
        lambda f: ["bench", str(f["scenario"]), "--strategy", "fedhei", "--strategy", "local", "--out", str(f["root"] / "old-bench")],
        "holds an earlier run (results.json, status partial); choose another --out, continue a partial run with --resume"),
    "resume and overwrite at once": (lambda f: ["run", str(f["scenario"]), "--resume", str(f["stale"]), "--overwrite"],
                                     "give one of them"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case: str, files: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    arguments, message = CASES[case]
    monkeypatch.syspath_prepend(str(files["modules"]))
    before = sorted(path.relative_to(files["root"]) for path in files["root"].rglob("*"))
    start = time.monotonic()
    code = main(arguments(files))
    seconds = time.monotonic() - start
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert message in captured.err and "Traceback" not in captured.err + captured.out
    assert captured.err.strip().count("\n") == 0 and captured.err.startswith("fedhei: error: "), captured.err
    assert captured.out == ""
    assert seconds < 60, f"refused only after {seconds:.0f} s"
    assert sorted(path.relative_to(files["root"]) for path in files["root"].rglob("*")) == before


TINY = """
name = "again"
data-source = "synthetic"
model = "vit-micro"
num-clients = 2
fraction-train = 1.0
num-server-rounds = 1
pretrain-epochs = 1.0
local-epochs = 0.25
max-local-steps = 4
finetune-steps = 4
batch-size = 32
calibration-batches = 1
scorer = "magnitude"
"""


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_second_run_into_a_finished_run_is_refused_unless_overwrite(tmp_path: Path,
                                                                      fedhei_cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """The refusal reads only what a finished run leaves (results.json, status complete), so the earlier run
    here is those files; the replacement is a real run."""
    scenario, run_dir = tmp_path / "again.toml", tmp_path / "run"
    scenario.write_text(TINY)
    (run_dir / "clients" / "0").mkdir(parents=True)
    (run_dir / "results.json").write_text('{"status": "complete", "scenario": {"seed": 0}}')
    (run_dir / "clients" / "0" / "model.safetensors").write_bytes(b"an earlier model")
    finished = _snapshot(run_dir)

    again = fedhei_cli("run", str(scenario), "--out", str(run_dir))
    assert again.returncode == 2 and again.stdout == "", again.stdout + again.stderr
    assert again.stderr == (f"fedhei: error: {run_dir} holds an earlier run (results.json, status complete); choose another "
                            f"--out, continue a partial run with --resume {run_dir}, or replace it with --overwrite\n")
    assert _snapshot(run_dir) == finished

    replaced = fedhei_cli("run", str(scenario), "--out", str(run_dir), "--overwrite", "--set", "seed=1", "--quiet")
    assert replaced.returncode == 0, replaced.stderr
    payload = json.loads((run_dir / "results.json").read_text())
    assert payload["status"] == "complete" and payload["scenario"]["seed"] == 1
    assert (run_dir / "clients" / "0" / "model.safetensors").read_bytes() != finished["clients/0/model.safetensors"]


def test_flwr_run_refuses_a_directory_holding_a_run_in_one_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`flwr run` cannot pass --overwrite (a run config holds only the scenario's keys): the ServerApp refuses."""
    run_dir = tmp_path / "runs" / "flwr" / "fedhei"
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text('{"status": "complete"}')
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                      run_config={"name": "flwr", "out-dir": str(tmp_path / "runs"), "data-source": "synthetic"})
    with pytest.raises(FedheiError, match="holds an earlier run"):
        server_app(cast(Grid, None), context)
    errors = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert errors == [f"fedhei: error: {run_dir} holds an earlier run (results.json, status complete); flwr run does not "
                      "replace it: give another out-dir or name in --run-config, or move it away"]
    assert _snapshot(run_dir) == {"results.json": b'{"status": "complete"}'}
