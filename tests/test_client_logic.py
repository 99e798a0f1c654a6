"""The client's round logic without Flower: schedule, masks, what leaves the client."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from clients.client_app import worker_model
from fedhei.config.scenario import Scenario
from fedhei.errors import FedheiError
from fedhei.federation.client_round import ClientJob, blank_copy, evaluate_round, train_round
from fedhei.federation.export import finalize
from fedhei.federation.policy import ClientPolicy, Pruning, Sharing, download_parameters
from fedhei.federation.server import FederationServer
from fedhei.federation.wire import VALUES_SUFFIX
from fedhei.models.adapters import adapter_for
from fedhei.models.registry import create_model
from strategies import STRATEGIES
from strategies.fedper import FedPer

SCENARIO = Scenario(
    data_source="synthetic", model="vit-micro", num_clients=3, dirichlet_alpha=1.0, local_epochs=0.1,
    batch_size=32, pruning_steps=3, prob=0.6, calibration_batches=1, scorer="magnitude",
)
FEDHEI = ClientPolicy(Sharing.GENERIC, Pruning.ROLES)


@pytest.fixture(scope="module")
def base_arrays() -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    return {name: value.detach().numpy().copy() for name, value in create_model("vit-micro").named_parameters()}


def _pruned_fraction(state, name: str) -> float:
    return 1.0 - float(state.masks[name].float().mean())


def test_the_schedule_steps_up_each_round_and_masks_only_grow(base_arrays) -> None:
    _, first_metrics, first = train_round(ClientJob(SCENARIO, FEDHEI, 0, 1), base_arrays, None)
    _, second_metrics, second = train_round(ClientJob(SCENARIO, FEDHEI, 0, 2), base_arrays, first)
    assert (first.step, second.step) == (1, 2)
    assert first_metrics["scoring-forward-passes"] == second_metrics["scoring-forward-passes"] == 0
    assert second.roles == first.roles and second.classified_round == 1
    generic = first.roles.generic()[0] + ".weight"
    assert _pruned_fraction(second, generic) > _pruned_fraction(first, generic) > 0
    assert torch.all(second.masks[generic] <= first.masks[generic])


def test_personal_layers_stay_home_and_pruned_layers_travel_sparse(base_arrays) -> None:
    update, _, state = train_round(ClientJob(SCENARIO, FEDHEI, 1, 1), base_arrays, None)
    personal_layers = set(state.roles.personalized())
    assert personal_layers
    sent_layers = {key.removesuffix(VALUES_SUFFIX).split("::")[0].rsplit(".", 1)[0] for key in update}
    assert not sent_layers & personal_layers
    assert all(f"{layer}.weight" in state.personal for layer in personal_layers)
    assert any(key.endswith(VALUES_SUFFIX) for key in update)


def test_reclassify_every_rescores_on_schedule(base_arrays) -> None:
    scenario = SCENARIO.replace(reclassify_every=2)
    _, _, state = train_round(ClientJob(scenario, FEDHEI, 0, 1), base_arrays, None)
    _, _, kept = train_round(ClientJob(scenario, FEDHEI, 0, 2), base_arrays, state)
    _, _, rescored = train_round(ClientJob(scenario, FEDHEI, 0, 3), base_arrays, kept)
    assert (state.classified_round, kept.classified_round, rescored.classified_round) == (1, 1, 3)


def test_final_export_reaches_the_target_even_for_a_client_never_sampled(tmp_path: Path, base_arrays) -> None:
    metrics = finalize(ClientJob(SCENARIO, FEDHEI, 2, 5), base_arrays, None, tmp_path)
    # Generic layers at 0.6, personalized at 0.3: the linear layers lose between the two.
    assert 0.3 <= metrics["linear-compression"] <= 0.6
    assert (tmp_path / "clients" / "2" / "model.safetensors").is_file()
    assert metrics["rounds-trained"] == 1


def test_a_partial_model_without_local_state_is_refused(base_arrays) -> None:
    partial = {name: value for name, value in base_arrays.items() if not name.startswith("head.")}
    with pytest.raises(FedheiError, match="no local value"):
        train_round(ClientJob(SCENARIO, ClientPolicy(Sharing.BODY), 0, 1), partial, None)


def test_the_plain_loop_sends_what_the_server_sends_a_head_splitting_strategy() -> None:
    """FedPer's returning client gets the body only, in the simulation's server and in the plain loop alike
    (both ask ``download_parameters``; the plain loop once forgot the head and refused FedPer)."""
    model = create_model("vit-micro")
    head = adapter_for(model).head_parameters(model)
    arrays = {name: value.detach().numpy() for name, value in model.named_parameters()}
    server = FederationServer(FedPer.policy, arrays, head, SCENARIO.server_settings())
    assert list(server.download(0)) == list(arrays)
    server.joined(0, ())
    body = [name for name in arrays if name not in head]
    assert list(server.download(0)) == body == download_parameters(FedPer.policy, list(arrays), (), head)


def _round_bytes(update: dict, metrics: dict, state) -> tuple:
    tensors = {**state.personal, **{f"mask:{k}": v for k, v in state.masks.items()}, **{f"alg:{k}": v for k, v in state.algorithm.items()}}
    return ({name: np.asarray(value).tobytes() for name, value in update.items()}, metrics,
            {name: value.numpy().tobytes() for name, value in tensors.items()}, state.roles, state.step)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_one_model_reused_for_every_client_gives_the_rounds_fresh_models_give(strategy: str, base_arrays) -> None:
    """What a worker does with its one model (load each client into it) changes no byte of any client's round."""
    policy = STRATEGIES[strategy].policy
    scenario = SCENARIO.replace(max_local_steps=2, ala_sample=0.1, ala_start_epochs=1)
    schedule = [(0, 1), (1, 1), (0, 2)]
    results = []
    for into in (None, blank_copy("vit-micro")):
        states: dict[int, object] = {}
        rounds = []
        for client, server_round in schedule:
            job = ClientJob(scenario, policy, client, server_round)
            update, metrics, states[client] = train_round(job, base_arrays, states.get(client), into=into)
            rounds.append(_round_bytes(update, metrics, states[client]))
            rounds.append(evaluate_round(job, base_arrays, states[client], into=into))
        results.append(rounds)
    assert results[0] == results[1]


def test_a_worker_keeps_its_model_across_clients_and_drops_it_when_a_round_raises() -> None:
    job = ClientJob(SCENARIO, FEDHEI, 0, 1)
    with worker_model(job) as first:
        pass
    with worker_model(job) as again:
        assert again is first
    with pytest.raises(RuntimeError), worker_model(job) as failing:
        assert failing is first
        raise RuntimeError("a round that raised halfway")
    with worker_model(job) as fresh:
        assert fresh is not first
