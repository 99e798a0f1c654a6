"""Ditto, FedALA and FedBABU: each baseline's defining behaviour on one client, without Flower,
and the three side by side in a tiny `fedhei bench` under Ray."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from clients.state import DiskStateStore
from fedhei.config.scenario import Scenario
from fedhei.data.cifar10 import load_cifar10_cached
from fedhei.errors import FedheiError
from fedhei.federation.algorithms import LocalTraining
from fedhei.federation.algorithms.fedala import LOCAL, WEIGHTS, FedALATraining, blend, top_parameters
from fedhei.federation.algorithms.fedbabu import initial_head
from fedhei.federation.client_round import ClientJob, client_data, evaluate_round, local_round, merge
from fedhei.federation.policy import ClientPolicy, Sharing
from fedhei.models.checkpoints import load_state
from fedhei.models.registry import create_model
from fedhei.training.loops import evaluate
from fedhei.training.pretrain import base_model
from strategies import STRATEGIES
from strategies.checkpoint import ServerCheckpoint
from strategies.simulation import bench_command

SCENARIO = Scenario(data_source="synthetic", model="vit-micro", num_clients=3, dirichlet_alpha=1.0, batch_size=32,
                    max_local_steps=6, lr=5e-3)
DITTO, FEDALA, FEDBABU = (STRATEGIES[name].policy for name in ("ditto", "fedala", "fedbabu"))
# timm's ViT head (its adapter's head_parameters).
HEAD_PREFIX = "head."
# FedALA on the head and the last block (with the final norm), weights learned on 30% of the shard.
ALA = SCENARIO.replace(ala_layers=2, ala_start_epochs=2, ala_sample=0.3)
Arrays = dict[str, np.ndarray]


@pytest.fixture(scope="module")
def base_arrays() -> Arrays:
    torch.manual_seed(0)
    return {name: value.detach().numpy().copy() for name, value in create_model("vit-micro").named_parameters()}


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().cpu() for name, value in model.named_parameters()}


def _distance(first: dict[str, torch.Tensor], second: Arrays) -> float:
    return float(sum(((first[name] - torch.from_numpy(second[name])) ** 2).sum() for name in second) ** 0.5)


# -- Ditto --------------------------------------------------------------------------------------


def test_ditto_pulls_the_personal_model_toward_the_global_one_harder_as_lambda_grows(base_arrays: Arrays) -> None:
    distances = []
    for strength in (0.0, 0.1, 1.0, 10.0):
        done = local_round(ClientJob(SCENARIO.replace(ditto_lambda=strength), DITTO, 0, 1), base_arrays, None)
        distances.append(_distance(_params(done.model), base_arrays))
    assert distances[0] > 0
    assert all(later < earlier for earlier, later in zip(distances, distances[1:], strict=False)), distances


def test_ditto_sends_its_fedavg_copy_of_the_global_model_and_keeps_the_personal_one(base_arrays: Arrays) -> None:
    job = ClientJob(SCENARIO, DITTO, 1, 1)
    ditto = local_round(job, base_arrays, None)
    fedavg = local_round(replace(job, policy=STRATEGIES["fedavg"].policy), base_arrays, None)
    assert ditto.update.keys() == fedavg.update.keys() == base_arrays.keys()
    for name, value in ditto.update.items():
        np.testing.assert_array_equal(value, fedavg.update[name])
    personal = _params(ditto.model)
    assert any(not np.array_equal(personal[name].numpy(), value) for name, value in ditto.update.items())
    # The personal model is what the client keeps, evaluates between rounds and exports.
    assert all(torch.equal(ditto.state.algorithm[f"ditto-personal/{name}"], value) for name, value in personal.items())
    data = client_data(SCENARIO, 1, ditto.model)
    personal_accuracy = evaluate(ditto.model, data.test, precision=SCENARIO.eval_precision)["accuracy"]
    assert evaluate_round(job, base_arrays, ditto.state)["accuracy"] == personal_accuracy


def test_ditto_resumes_from_the_disk_state_to_the_same_next_round(base_arrays: Arrays, tmp_path: Path) -> None:
    first = local_round(ClientJob(SCENARIO, DITTO, 2, 1), base_arrays, None)
    DiskStateStore(tmp_path, 2).save(first.state, server_round=1)
    reloaded = DiskStateStore(tmp_path, 2).load(before_round=2)
    in_memory = local_round(ClientJob(SCENARIO, DITTO, 2, 2), first.update, first.state)
    resumed = local_round(ClientJob(SCENARIO, DITTO, 2, 2), first.update, reloaded)
    for name, value in _params(in_memory.model).items():
        assert torch.equal(value, _params(resumed.model)[name])


# -- FedALA -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ala_rounds(base_arrays: Arrays) -> tuple[Arrays, object]:
    """Client 0 after its first round, and a global model that moved away from its local one."""
    first = local_round(ClientJob(ALA, FEDALA, 0, 1), base_arrays, None)
    elsewhere = local_round(ClientJob(ALA, FEDALA, 1, 1), base_arrays, None)
    assert not any(key.startswith(WEIGHTS) for key in first.state.algorithm), "the first round learns no weights"
    return elsewhere.update, first.state


def _ala_work(scenario: Scenario, global_arrays: Arrays, state) -> LocalTraining:
    job = ClientJob(scenario, FEDALA, 0, 2)
    model = merge(job, global_arrays, state)
    return LocalTraining(scenario, FEDALA.head_epochs, job.seed, scenario.train_settings(job.server_round), model,
                         client_data(scenario, 0, model).train, {}, state)


def test_fedala_learns_weights_in_0_1_and_blends_only_the_top_layers(ala_rounds) -> None:
    global_arrays, state = ala_rounds
    work = _ala_work(ALA, global_arrays, state)
    top = set(top_parameters(work.model, 2))
    assert {name for name in top if not name.startswith(HEAD_PREFIX)} and all(
        name.startswith(("head.", "norm.", "blocks.3.")) for name in top)
    weights = FedALATraining().aggregate_locally(work)
    assert set(weights) == top
    assert all(0 <= float(w.min()) and float(w.max()) <= 1 for w in weights.values())
    assert any(bool((w != 1).any()) for w in weights.values()), "the weights never moved from their start at 1"
    local = {name.removeprefix(LOCAL): value for name, value in state.algorithm.items() if name.startswith(LOCAL)}
    received = {name: torch.from_numpy(global_arrays[name]) for name in top}
    expected = blend(received, local, weights)
    for name, value in _params(work.model).items():
        if name in top:
            assert torch.equal(value, expected[name])
        else:
            np.testing.assert_array_equal(value.numpy(), global_arrays[name])
    assert any(not torch.equal(_params(work.model)[name], received[name]) for name in top)


@pytest.mark.parametrize("setting", [{"ala_sample": 0.0}, {"ala_lr": 0.0}])
def test_fedala_with_no_sample_or_frozen_weights_is_plain_overwriting(ala_rounds, setting: dict) -> None:
    global_arrays, state = ala_rounds
    work = _ala_work(ALA.replace(**setting), global_arrays, state)
    weights = FedALATraining().aggregate_locally(work)
    assert weights and all(bool((w == 1).all()) for w in weights.values())
    for name, value in _params(work.model).items():
        np.testing.assert_array_equal(value.numpy(), global_arrays[name])


def test_fedala_keeps_its_local_layers_and_weights_for_the_next_round(ala_rounds) -> None:
    global_arrays, state = ala_rounds
    second = local_round(ClientJob(ALA, FEDALA, 0, 2), global_arrays, state)
    kept = second.state.algorithm
    assert {key.removeprefix(WEIGHTS) for key in kept if key.startswith(WEIGHTS)} == set(top_parameters(second.model, 2))
    for name in top_parameters(second.model, 2):
        assert torch.equal(kept[LOCAL + name], _params(second.model)[name])
    assert second.update.keys() == global_arrays.keys()


# -- FedBABU ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def babu_arrays(base_arrays: Arrays) -> Arrays:
    """The global model as the FedBABU server starts it: the base body, a random head from the run's seed."""
    head = initial_head("vit-micro", SCENARIO.seed)
    assert head.keys() == {"head.weight", "head.bias"}
    assert not np.array_equal(head["head.weight"], base_arrays["head.weight"])
    np.testing.assert_array_equal(initial_head("vit-micro", SCENARIO.seed)["head.weight"], head["head.weight"])
    return {**base_arrays, **head}


def test_fedbabu_head_stays_at_its_initialization_while_the_body_federates(babu_arrays: Arrays) -> None:
    first = local_round(ClientJob(SCENARIO, FEDBABU, 0, 1), babu_arrays, None)
    body_only = dict(first.update)
    second = local_round(ClientJob(SCENARIO, FEDBABU, 0, 2), body_only, first.state)
    for done in (first, second):
        assert not any(name.startswith(HEAD_PREFIX) for name in done.update)
        for name in ("head.weight", "head.bias"):
            np.testing.assert_array_equal(done.state.personal[name].numpy(), babu_arrays[name])
            np.testing.assert_array_equal(_params(done.model)[name].numpy(), babu_arrays[name])
    assert set(first.update) == {name for name in babu_arrays if not name.startswith(HEAD_PREFIX)}
    assert not np.array_equal(first.update["blocks.0.attn.qkv.weight"], babu_arrays["blocks.0.attn.qkv.weight"])


@pytest.mark.parametrize("body_too", [True, False])
def test_fedbabu_fine_tunes_the_head_only_in_the_final_round(babu_arrays: Arrays, body_too: bool) -> None:
    scenario = SCENARIO.replace(babu_finetune_body=body_too)
    final = local_round(ClientJob(scenario, FEDBABU, 1, 3, complete_schedule=True), babu_arrays, None)
    params = _params(final.model)
    assert not np.array_equal(params["head.weight"].numpy(), babu_arrays["head.weight"])
    body_moved = not np.array_equal(params["blocks.0.attn.qkv.weight"].numpy(), babu_arrays["blocks.0.attn.qkv.weight"])
    assert body_moved == body_too


def test_a_policy_naming_an_unknown_algorithm_or_head_epochs_without_fedrep_is_refused() -> None:
    with pytest.raises(FedheiError, match="client algorithm 'ditt'"):
        ClientPolicy(Sharing.ALL, algorithm="ditt")
    with pytest.raises(FedheiError, match="head-epochs"):
        ClientPolicy(Sharing.BODY, algorithm="fedbabu", head_epochs=1.0)


@pytest.mark.parametrize("key, value", [("ditto-lambda", -1.0), ("ala-layers", 0), ("ala-sample", 1.5), ("ala-lr", -0.1),
                                        ("ala-start-epochs", 0), ("babu-finetune-body", 1)])
def test_bad_baseline_settings_fail_at_parse_time(key: str, value: object) -> None:
    with pytest.raises(FedheiError, match=key):
        Scenario.from_mapping({key: value})


# -- the three in `fedhei bench` ------------------------------------------------------------------

BENCH_TOML = """
name = "baselines"
data-source = "synthetic"
model = "vit-micro"
num-clients = 4
fraction-train = 0.5
num-server-rounds = 2
dirichlet-alpha = 0.5
pretrain-epochs = 1.0
local-epochs = 0.25
max-local-steps = 4
finetune-steps = 4
batch-size = 32
ala-start-epochs = 2
"""
NEW = ("ditto", "fedala", "fedbabu")


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Scenario]:
    folder = tmp_path_factory.mktemp("baselines")
    (folder / "baselines.toml").write_text(BENCH_TOML)
    assert bench_command(folder / "baselines.toml", [], list(NEW), folder / "bench", quiet=True) == 0
    return folder / "bench", Scenario.from_toml(folder / "baselines.toml")


def _exported(run_dir: Path, client: int) -> dict[str, torch.Tensor]:
    return load_state(run_dir / "clients" / str(client) / "model.safetensors")[0]


def test_bench_runs_the_three_baselines_with_a_row_each(bench) -> None:
    bench_dir, _ = bench
    assert set(NEW) <= set(STRATEGIES)
    rows = [line.split(" | ")[0].strip("| ") for line in (bench_dir / "bench.md").read_text().splitlines()]
    assert [row for row in rows if row in NEW] == list(NEW)
    for name in NEW:
        results = json.loads((bench_dir / name / "results.json").read_text())
        assert results["status"] == "complete" and results["failures"]["total"] == 0
        assert results["policy"]["algorithm"] == name and results["summary"]["clients"] == 4
        assert all(r["aggregated"] and r["bytes-up"] > 0 for r in results["rounds"])


def test_bench_fedbabu_global_head_is_its_initialization_and_only_the_exported_heads_moved(bench) -> None:
    bench_dir, scenario = bench
    run_dir = bench_dir / "fedbabu"
    final_global = ServerCheckpoint.load(run_dir).arrays
    head = initial_head(scenario.model, scenario.seed)
    for name, value in head.items():
        np.testing.assert_array_equal(final_global[name], value)
    start = base_model(load_cifar10_cached("synthetic"), scenario.pretrain_spec(), device=scenario.device)
    assert not np.array_equal(final_global["blocks.0.attn.qkv.weight"], _params(start)["blocks.0.attn.qkv.weight"].numpy())
    for client in range(scenario.num_clients):
        assert not np.array_equal(_exported(run_dir, client)["head.weight"].numpy(), head["head.weight"])


def test_bench_ditto_exports_personal_models_that_differ_from_the_global_one(bench) -> None:
    bench_dir, scenario = bench
    final_global = ServerCheckpoint.load(bench_dir / "ditto").arrays
    for client in range(scenario.num_clients):
        exported = _exported(bench_dir / "ditto", client)
        assert exported.keys() == final_global.keys()
        assert any(not np.array_equal(exported[name].numpy(), final_global[name]) for name in final_global)
