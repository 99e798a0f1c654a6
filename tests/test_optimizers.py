"""The federation's optimizers: the clients' (SGD, AdamW, the rate over rounds) and the server's step, checked by hand
and against Flower's own FedAvgM, FedAdam and FedYogi on the same replies."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from conftest import train_settings
from flwr.app import Array, ArrayRecord, Message, MessageType, Metadata, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAdam, FedAvgM, FedYogi

from fedhei.config.scenario import Scenario
from fedhei.data.cifar10 import load_cifar10_cached
from fedhei.federation.algorithms import algorithm_for
from fedhei.federation.algorithms import fedrep as fedrep_module
from fedhei.federation.algorithms.base import LocalTraining
from fedhei.federation.algorithms.fedrep import phase_steps
from fedhei.federation.client_round import ClientJob, client_data, merge, train_round
from fedhei.federation.server import FederationServer
from fedhei.federation.wire import DecodedTensor
from fedhei.models.adapters import task_for
from fedhei.models.registry import create_model
from fedhei.training.loops import batches_for, train
from fedhei.training.optimizers import LrSchedule, ServerOptimizer, ServerSettings, ServerStep, round_lr
from strategies.base import RoundLog
from strategies.directory import ClientDirectory
from strategies.fedavg import FedAvgBaseline
from strategies.fedrep import FedRep

GLOBAL = {"a.weight": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), "a.bias": np.full(3, 0.5, dtype=np.float32)}


# -- the clients ------------------------------------------------------------------------------


def _one_batch() -> tuple[torch.nn.Module, object, torch.Tensor, torch.Tensor]:
    """vit-micro and a shard of exactly one batch (no augmentation), so a one-step call's gradient can be redone by hand."""
    data = load_cifar10_cached("synthetic")
    model = create_model("vit-micro", seed=3)
    shard = batches_for(model, data.train, np.arange(16))
    inputs, targets = next(shard.batches(16))
    return model, shard, inputs, targets


def _gradient(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    model = copy.deepcopy(model).train()
    model.zero_grad()
    task_for(model).loss(model, inputs, targets).backward()
    return {name: value.grad.detach().clone() for name, value in model.named_parameters()}


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_a_client_optimizer_takes_its_hand_checked_first_step(optimizer: str) -> None:
    model, shard, inputs, targets = _one_batch()
    before = {name: value.detach().clone() for name, value in model.named_parameters()}
    gradient = _gradient(model, inputs, targets)
    lr, decay = 0.05, 0.01
    settings = train_settings(epochs=1, batch_size=16, lr=lr, weight_decay=decay, augment=False, optimizer=optimizer,
                              momentum=0.9, decay_in_call=False)
    train(model, shard, settings, seed=0)
    for name, value in model.named_parameters():
        w, g = before[name], gradient[name]
        if optimizer == "sgd":
            # First SGD step: the momentum buffer is the gradient itself (L2 decay added to it).
            expected = w - lr * (g + decay * w)
        else:
            # First AdamW step: decoupled decay, then lr * m_hat / (sqrt(v_hat) + eps) = lr * g / (|g| + eps):
            # checked where the gradient is clear of rounding (the batch's order changes its last bits).
            expected = w * (1 - lr * decay) - lr * g / (g.abs() + 1e-8)
            clear = g.abs() > 1e-5
            value, expected = value[clear], expected[clear]
        torch.testing.assert_close(value.detach(), expected, rtol=1e-4, atol=1e-5, msg=name)


def test_sgd_and_adamw_train_differently_from_the_same_start() -> None:
    model, shard, _, _ = _one_batch()
    results = {}
    for optimizer in ("sgd", "adamw"):
        trained = copy.deepcopy(model)
        train(trained, shard, train_settings(epochs=2, batch_size=8, lr=0.01, optimizer=optimizer, decay_in_call=False), seed=0)
        results[optimizer] = torch.cat([value.detach().flatten() for value in trained.parameters()])
    assert not torch.allclose(results["sgd"], results["adamw"])


def test_the_lr_schedule_sets_each_rounds_rate() -> None:
    assert round_lr(0.1, LrSchedule.CONSTANT, 0.5, 7, 10) == 0.1
    assert round_lr(0.1, LrSchedule.COSINE, 0.5, 1, 10) == pytest.approx(0.1)
    assert round_lr(0.1, LrSchedule.COSINE, 0.5, 6, 10) == pytest.approx(0.05)
    assert round_lr(0.1, LrSchedule.COSINE, 0.5, 10, 10) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.9)))
    assert round_lr(0.1, LrSchedule.EXPONENTIAL, 0.5, 3, 10) == pytest.approx(0.025)
    scenario = Scenario(lr=0.2, lr_schedule="exponential", lr_decay=0.9, num_server_rounds=5, client_optimizer="sgd")
    settings = scenario.train_settings(3)
    assert settings.lr == pytest.approx(0.2 * 0.81) and settings.optimizer == "sgd" and not settings.decay_in_call
    assert scenario.finetune_settings().lr == 0.2 and scenario.finetune_settings().decay_in_call


def test_a_later_round_trains_at_its_scheduled_rate() -> None:
    """The same client, global model and seed: one SGD step in round 5 of a cosine schedule moves the model by the
    schedule's share of round 1's step (the federation's rate, not the call, sets the step)."""
    scenario = Scenario(data_source="synthetic", model="vit-micro", num_clients=3, dirichlet_alpha=1.0, batch_size=16,
                        max_local_steps=1, client_optimizer="sgd", weight_decay=0.0, lr=0.05, lr_schedule="cosine",
                        num_server_rounds=5)
    start = create_model("vit-micro", seed=1)
    moved = []
    for server_round in (1, 5):
        model = copy.deepcopy(start)
        data = client_data(scenario, 0, model)
        train(model, data.train, scenario.train_settings(server_round), seed=0)
        moved.append(sum(float((a - b).abs().sum()) for a, b in zip(model.state_dict().values(), start.state_dict().values(),
                                                                      strict=True)))
    ratio = moved[1] / moved[0]
    expected = round_lr(0.05, LrSchedule.COSINE, 0, 5, 5) / 0.05
    assert ratio == pytest.approx(expected, rel=1e-3), (ratio, expected)


def test_fedreps_two_phases_together_take_at_most_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    assert phase_steps(train_settings(epochs=1, batch_size=10, max_steps=10), 1.0, 1000) == (5, 5)
    assert phase_steps(train_settings(epochs=1, batch_size=10), 1.0, 95) == (5, 5)
    assert phase_steps(train_settings(epochs=1, batch_size=10, max_steps=1), 1.0, 95) == (1, 0)
    scenario = Scenario(data_source="synthetic", model="vit-micro", num_clients=3, dirichlet_alpha=1.0, batch_size=8,
                        max_local_steps=6, strategy="fedrep")
    steps: list[int] = []
    real_train = fedrep_module.train

    def counting(*args: object, **kwargs: object) -> dict[str, float]:
        kwargs["on_step"] = lambda step, total, loss: steps.append(step)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(fedrep_module, "train", counting)
    job = ClientJob(scenario, FedRep.policy, 0, 1)
    model = merge(job, {name: value.detach().numpy() for name, value in create_model("vit-micro").named_parameters()}, None)
    data = client_data(scenario, 0, model).train
    work = LocalTraining(scenario, FedRep.policy.head_epochs, job.seed, scenario.train_settings(1), model, data, {}, None)
    algorithm_for(FedRep.policy.algorithm).train(work)
    assert len(steps) == 6, steps


# -- the server ---------------------------------------------------------------------------------


def _received_from(node: int) -> Metadata:
    return Metadata(run_id=1, message_id=f"reply-{node}", src_node_id=node, dst_node_id=0, reply_to_message_id=f"ins-{node}",
                    group_id="1", created_at=time.time(), ttl=3600.0, message_type=MessageType.TRAIN)


def _replies(current: dict[str, np.ndarray], server_round: int) -> list[Message]:
    """Three clients' dense float32 models near ``current``, with different example counts."""
    replies = []
    for node, examples in enumerate((10.0, 30.0, 60.0)):
        rng = np.random.default_rng(100 * server_round + node)
        arrays = {name: (value + rng.normal(0, 0.1, value.shape)).astype(np.float32) for name, value in current.items()}
        content = RecordDict({"arrays": ArrayRecord({name: Array(value) for name, value in arrays.items()}),
                              "metrics": MetricRecord({"num-examples": examples, "train-loss": 1.0})})
        replies.append(Message(content=content, metadata=_received_from(node)))
    return replies


def _server(**settings: Any) -> ServerSettings:
    """The server's step a scenario with these settings takes."""
    return Scenario(**settings).server_settings()


def _fedhei_server(settings: ServerSettings) -> FedAvgBaseline:
    strategy = FedAvgBaseline(Scenario(num_clients=3), run_dir="/nonexistent")
    strategy.directory = ClientDirectory({client: client for client in range(3)})
    strategy.server = FederationServer(strategy.policy, GLOBAL, (), settings)
    return strategy


FLOWER: dict[str, tuple[ServerSettings, Callable[[], object]]] = {
    "avgm": (_server(server_optimizer="avgm", server_lr=0.7, server_momentum=0.9),
             lambda: FedAvgM(server_learning_rate=0.7, server_momentum=0.9)),
    "adam": (_server(server_optimizer="adam", server_lr=0.1, server_beta1=0.9, server_beta2=0.99, server_tau=1e-3),
             lambda: FedAdam(eta=0.1, beta_1=0.9, beta_2=0.99, tau=1e-3)),
    "yogi": (_server(server_optimizer="yogi", server_lr=0.01, server_beta1=0.9, server_beta2=0.99, server_tau=1e-3),
             lambda: FedYogi(eta=0.01, beta_1=0.9, beta_2=0.99, tau=1e-3)),
}


@pytest.mark.parametrize("kind", list(FLOWER))
def test_the_server_optimizer_with_full_masks_equals_flowers_on_the_same_replies(kind: str) -> None:
    settings, make_flower = FLOWER[kind]
    ours, flower = _fedhei_server(settings), make_flower()
    current = dict(GLOBAL)
    for server_round in (1, 2, 3):
        replies = _replies(current, server_round)
        if isinstance(flower, FedAvgM):
            flower.current_arrays = ArrayRecord({name: Array(value) for name, value in current.items()})
        else:
            flower.current_arrays = {name: value.copy() for name, value in current.items()}
        expected, _ = flower.aggregate_train(server_round, replies)
        ours.rounds[server_round] = RoundLog(server_round, sampled=[0, 1, 2])
        got, _ = ours.aggregate_train(server_round, replies)
        assert expected is not None and got is not None
        for name in GLOBAL:
            np.testing.assert_allclose(got[name].numpy(), expected[name].numpy(), rtol=1e-5, atol=1e-6, err_msg=f"{kind} {name}")
        current = {name: got[name].numpy() for name in GLOBAL}
    moved = np.abs(current["a.weight"] - GLOBAL["a.weight"]).max()
    assert moved > 1e-3, "three rounds of replies moved the model"


@pytest.mark.parametrize("kind", list(ServerOptimizer))
def test_a_weight_no_client_keeps_moves_neither_in_value_nor_in_optimizer_state(kind: ServerOptimizer) -> None:
    server = FederationServer(FedAvgBaseline.policy, GLOBAL, (), _server(server_optimizer=kind.value, server_lr=0.5))
    keep = np.ones((3, 4), dtype=bool)
    keep[0, 0] = keep[2, 3] = False
    for server_round in (1, 2, 3):
        rng = np.random.default_rng(server_round)
        updates = []
        for weight in (1.0, 2.0):
            values = {name: (server.current[name] + rng.normal(0, 0.2, value.shape)).astype(np.float32)
                      for name, value in GLOBAL.items()}
            updates.append((weight, {"a.weight": DecodedTensor(values["a.weight"], keep),
                                     "a.bias": DecodedTensor(values["a.bias"], np.ones(3, dtype=bool))}))
        before_state = {key: value.copy() for key, value in server.optimizer.state_arrays().items()}
        before = server.current["a.weight"].copy()
        server.aggregate(updates)
        after = server.current["a.weight"]
        assert after[0, 0] == before[0, 0] and after[2, 3] == before[2, 3]
        assert np.any(after[keep] != before[keep])
        for key, value in server.optimizer.state_arrays().items():
            if key.endswith("/a.weight") and key in before_state:
                assert value[0, 0] == before_state[key][0, 0] and value[2, 3] == before_state[key][2, 3], key
            if key.endswith("/a.weight"):
                assert value[0, 0] == 0 and value[2, 3] == 0, f"{key}: state of a weight never kept stays at its start"


def test_the_server_optimizers_state_round_trips_through_its_arrays() -> None:
    server = ServerStep(_server(server_optimizer="adam", server_lr=0.1))
    counted = {name: np.ones(value.shape, dtype=bool) for name, value in GLOBAL.items()}
    moved = server.step(GLOBAL, {name: value + 0.1 for name, value in GLOBAL.items()}, counted)
    again = ServerStep(_server(server_optimizer="adam", server_lr=0.1))
    again.load_state_arrays(server.state_arrays())
    target = {name: value + 0.3 for name, value in GLOBAL.items()}
    continued, resumed = server.step(moved, target, counted), again.step(moved, target, counted)
    for name, value in continued.items():
        np.testing.assert_array_equal(value, resumed[name])


def test_an_update_is_weighted_by_the_examples_its_client_trained_on() -> None:
    scenario = Scenario(data_source="synthetic", model="vit-micro", num_clients=3, dirichlet_alpha=1.0, batch_size=8,
                        max_local_steps=2, strategy="fedavg")
    job = ClientJob(scenario, FedAvgBaseline.policy, 0, 1)
    arrays = {name: value.detach().numpy() for name, value in create_model("vit-micro").named_parameters()}
    update, metrics, _ = train_round(job, arrays, None)
    assert len(client_data(scenario, 0, create_model("vit-micro")).train) > 16
    assert metrics["num-examples"] == 16.0, "two steps of 8 images, not the whole shard"
    assert set(update) == set(arrays)
