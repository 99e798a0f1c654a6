"""One client's work in a round, without Flower: merge, classify, prune, train, reply.

The Flower ClientApp (``clients/``) only moves records in and out; everything a
client decides lives here, so it runs the same under the simulation engine, the
deployment engine and in plain unit tests.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice

import numpy as np
import torch
from torch import nn

from fedhei import seeding
from fedhei.config.scenario import Scenario
from fedhei.data.cifar10 import load_cifar10_cached
from fedhei.data.partition import Partition, PartitionSpec, majority_class_rate, make_partition
from fedhei.data.text import TokenBatches, TopicTextSpec, client_batches
from fedhei.errors import FedheiError
from fedhei.federation.algorithms import LocalTraining, algorithm_for
from fedhei.federation.policy import ClientPolicy, Pruning, personal_parameters
from fedhei.federation.state import ClientState
from fedhei.federation.wire import encode
from fedhei.method.pruning import compression, cubic_ratio, layer_ratios, magnitude_masks
from fedhei.method.roles import GENERIC, PERSONALIZED, RoleMap, classify, uniform_roles
from fedhei.method.scoring import build_scorer
from fedhei.models.adapters import adapter_for
from fedhei.models.language import tokenizer_for
from fedhei.models.registry import create_model, linear_layers
from fedhei.models.tasks import PERPLEXITY, Batches
from fedhei.training.device import pick_device
from fedhei.training.label_weighted import weighted_metrics
from fedhei.training.loops import TRAINED_EXAMPLES, apply_masks, batches_for, evaluate

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class ClientJob:
    """Everything the server asked of this client in this round."""

    scenario: Scenario
    policy: ClientPolicy
    client_id: int
    server_round: int
    # With shared-layers = "consensus": the generic layers every client agreed on.
    consensus_generic: tuple[str, ...] | None = None
    # The final export: take the schedule's remaining steps at once, so every user's
    # model reaches its target ratio even if the server sampled it too rarely.
    complete_schedule: bool = False

    @property
    def seed(self) -> int:
        """This client's stream in this round, the same in every run whatever the order of clients."""
        purpose = "client-export" if self.complete_schedule else "client-round"
        return seeding.seed_for(self.scenario.seed, purpose, self.server_round, self.client_id)


@dataclass(frozen=True)
class ClientData:
    """A client's training and test batches: labelled images, or token sequences of its topic's text."""

    train: Batches
    test: Batches
    # Class labels of the training shard and of the test split; None for text, which has no label mix.
    train_labels: np.ndarray | None = None
    test_labels: np.ndarray | None = None

    def label_metrics(self, model: nn.Module, scenario: Scenario, weighted: bool) -> dict[str, float]:
        """The test split's majority-class rate and, when ``weighted``, the label-weighted accuracy on the
        whole test set; nothing for text."""
        if self.train_labels is None or self.test_labels is None:
            return {}
        figures = {"majority-class-rate": majority_class_rate(self.test_labels)}
        if weighted:
            figures.update(weighted_metrics(model, scenario.data_source, self.train_labels, scenario.eval_precision))
        return figures


@lru_cache(maxsize=4)
def _partition(source: str, fingerprint: str, spec: PartitionSpec) -> Partition:
    data = load_cifar10_cached(source or None)
    return make_partition(data.train.labels, data.test.labels, spec)


@lru_cache(maxsize=64)
def _text(spec: TopicTextSpec, client_id: int, model: str, sequence_length: int) -> tuple[TokenBatches, TokenBatches]:
    return client_batches(spec, client_id, tokenizer_for(model), sequence_length)


def prepare(scenario: Scenario) -> None:
    """Load the data set and the split into this worker's memory before the first round.

    A worker that does this on its first training message may overrun a short
    round-timeout; the server's roll call gives every worker the chance first. Topic
    text is generated per client in milliseconds: only its tokenizer is read here.
    """
    if scenario.is_language_model:
        tokenizer_for(scenario.model)
        return
    data = load_cifar10_cached(scenario.data_source or None)
    _partition(scenario.data_source, data.fingerprint, scenario.partition_spec())


def client_data(scenario: Scenario, client_id: int, model: nn.Module) -> ClientData:
    """This client's training shard and test split (loaded once per worker process), or the
    training and test text of its topic for a language model."""
    if not 0 <= client_id < scenario.num_clients:
        raise FedheiError(f"client id {client_id} is outside 0..{scenario.num_clients - 1}; "
                          "partition-id must be below num-clients")
    if scenario.is_language_model:
        train, test = _text(scenario.text_spec(), client_id, scenario.model, scenario.text_sequence_length)
        return ClientData(train, test)
    data = load_cifar10_cached(scenario.data_source or None)
    partition = _partition(scenario.data_source, data.fingerprint, scenario.partition_spec())
    train_indices, test_indices = partition.train_indices[client_id], partition.test_indices[client_id]
    return ClientData(
        train=batches_for(model, data.train, train_indices),
        test=batches_for(model, data.test, test_indices),
        train_labels=data.train.labels[train_indices],
        test_labels=data.test.labels[test_indices],
    )


def pooled_training_data(scenario: Scenario, model: nn.Module) -> Batches:
    """Every client's training shard in one set (the public slice left out): what centralized training on the
    federation's own examples trains on."""
    data = load_cifar10_cached(scenario.data_source or None)
    partition = _partition(scenario.data_source, data.fingerprint, scenario.partition_spec())
    return batches_for(model, data.train, np.sort(np.concatenate(partition.train_indices)))


@lru_cache(maxsize=2)
def _blank_model(name: str) -> nn.Module:
    """One freshly built model per name and process, never trained: copying it costs less than building
    a model per client, whose every weight the client's round overwrites anyway."""
    return create_model(name)


def blank_copy(name: str) -> nn.Module:
    """A model of ``name`` as built, to train on: a copy of this process's blank one."""
    return copy.deepcopy(_blank_model(name))


def _refill(model: nn.Module, name: str) -> nn.Module:
    """``model`` (of model ``name``) made ready to take another client's weights, as a copy of the blank model
    would be: no gradients left, every parameter's ``requires_grad`` as built. Its weights are all overwritten next."""
    built = dict(_blank_model(name).named_parameters())
    for parameter_name, parameter in model.named_parameters():
        parameter.grad = None
        parameter.requires_grad_(built[parameter_name].requires_grad)
    return model


def merge(job: ClientJob, global_arrays: Arrays, state: ClientState | None, into: nn.Module | None = None) -> nn.Module:
    """The global model with this client's personal parameters restored and its masks applied.

    A returning client receives only the shared parameters; whatever the server left out
    must come from this client's state, or the model would hold random weights.

    ``into``: a model of the same name to load into instead of copying a blank one (7 ms a
    client for the default model, as much as a cross-device client's whole step takes). The
    caller owns it and must not hold on to what an earlier merge into it returned: the
    Flower client reuses one per worker, since every weight is overwritten and nothing of a
    round outlives its reply.
    """
    model = blank_copy(job.scenario.model) if into is None else _refill(into, job.scenario.model)
    received = {name: torch.from_numpy(np.array(value, copy=True)) for name, value in global_arrays.items()}
    missing, unexpected = model.load_state_dict(received, strict=False)
    if unexpected:
        raise FedheiError(f"the server sent parameters {unexpected[:3]} that {job.scenario.model} does not have")
    uncovered = set(missing) - set(state.personal if state is not None else ())
    if uncovered:
        raise FedheiError(f"client {job.client_id} has no local value for {sorted(uncovered)[:3]}: the server sent a "
                          "partial model but this client's state is missing (was its state store cleared?)")
    if state is not None:
        with torch.no_grad():
            params = dict(model.named_parameters())
            for name, value in state.personal.items():
                params[name].copy_(value)
        apply_masks(model, state.masks)
    return model.to(pick_device(job.scenario.device))


@dataclass(frozen=True)
class RoleDecision:
    roles: RoleMap
    # Forward passes the scorer spent; 0 when the roles were reused or given.
    forward_passes: int
    # True when the layers were scored this round (restarts the reclassify-every clock).
    scored: bool


def _roles(job: ClientJob, model: nn.Module, data: ClientData, state: ClientState | None) -> RoleDecision:
    layers = [layer.name for layer in linear_layers(model)]
    if job.policy.pruning is Pruning.UNIFORM:
        return RoleDecision(uniform_roles(layers), 0, scored=False)
    if job.consensus_generic is not None:
        generic = set(job.consensus_generic)
        roles = {name: GENERIC if name in generic else PERSONALIZED for name in layers}
        last_scores = state.roles.scores if state and state.roles else tuple(0.0 for _ in layers)
        return RoleDecision(RoleMap(tuple(layers), tuple(last_scores), "consensus", 0.0, roles), 0, scored=False)
    every = job.scenario.reclassify_every
    due = state is None or state.roles is None or (every > 0 and job.server_round - state.classified_round >= every)
    if not due:
        assert state is not None and state.roles is not None
        return RoleDecision(state.roles, 0, scored=False)
    scenario = job.scenario
    scorer = build_scorer(scenario.scorer, scenario.scorer_settings())
    calibration = list(islice(data.train.batches(scenario.batch_size, shuffle=True, seed=job.seed), scenario.calibration_batches))
    scores = scorer(model, calibration, seed=job.seed)
    return RoleDecision(classify(scores, scenario.role_rule, scenario.role_threshold), scores.forward_passes, scored=True)


@dataclass
class LocalRound:
    # The model the user keeps and exports: the trained one, or the algorithm's own (Ditto's personal model).
    model: nn.Module
    update: Arrays
    metrics: dict[str, float]
    state: ClientState


def train_round(job: ClientJob, global_arrays: Arrays, state: ClientState | None,
                into: nn.Module | None = None) -> tuple[Arrays, dict[str, float], ClientState]:
    """Merge, (re)classify, take the next pruning step, train; return the update to send.

    The update holds only the shared parameters: personal ones never leave this function.
    With ``into`` (see :func:`merge`), the update's arrays may share memory with it: send them before the next merge.
    """
    done = local_round(job, global_arrays, state, into)
    return done.update, done.metrics, done.state


def local_round(job: ClientJob, global_arrays: Arrays, state: ClientState | None, into: nn.Module | None = None) -> LocalRound:
    model = merge(job, global_arrays, state, into)
    data = client_data(job.scenario, job.client_id, model)
    decision = _roles(job, model, data, state) if job.policy.uses_roles else None
    roles = decision.roles if decision else None
    forward_passes = decision.forward_passes if decision else 0
    masks: dict[str, torch.Tensor] = {}
    step = 0
    if job.policy.pruning is not Pruning.NONE and roles is not None:
        step = job.scenario.pruning_steps if job.complete_schedule else min((state.step if state else 0) + 1, job.scenario.pruning_steps)
        targets = layer_ratios(roles, job.scenario.prob, job.scenario.personal_factor)
        ratios = {name: cubic_ratio(target, step, job.scenario.pruning_steps) for name, target in targets.items()}
        masks = magnitude_masks(model, ratios)
    algorithm = algorithm_for(job.policy.algorithm)
    teacher = copy.deepcopy(model) if job.complete_schedule and job.scenario.distill and masks else None
    settings = job.scenario.finetune_settings() if job.complete_schedule else job.scenario.train_settings(job.server_round)
    work = LocalTraining(job.scenario, job.policy.head_epochs, job.seed, settings, model, data.train, masks, state, teacher)
    trained = algorithm.finetune(work) if job.complete_schedule else algorithm.train(work)
    metrics = dict(trained.metrics)
    personalized = roles.personalized() if roles is not None else []
    param_names = [name for name, _ in model.named_parameters()]
    personal = personal_parameters(job.policy, param_names, personalized, head=adapter_for(model).head_parameters(model))
    params = {name: value.detach().cpu() for name, value in model.named_parameters()}
    shared = {name: params[name].numpy() for name in param_names if name not in personal}
    update = encode(shared, {name: masks[name].cpu().numpy() for name in shared if name in masks},
                    job.scenario.upload_precision, reference=global_arrays)
    new_state = ClientState(
        personal={name: params[name].clone() for name in personal},
        masks={name: mask.cpu().bool() for name, mask in masks.items()},
        roles=roles,
        step=step,
        classified_round=job.server_round if decision is None or decision.scored or state is None else state.classified_round,
        rounds_trained=(state.rounds_trained if state else 0) + 1,
        algorithm=trained.tensors,
    )
    report = compression(model, masks)
    metrics.update(
        {
            # The update's weight in the server's average: the distinct examples this client trained on.
            "num-examples": metrics.get(TRAINED_EXAMPLES, float(len(data.train))),
            "compression": report["compression"],
            "scoring-forward-passes": float(forward_passes),
            "personalized-layers": float(len(personalized)),
        }
    )
    return LocalRound(model if trained.kept is None else trained.kept, update, metrics, new_state)


def evaluate_round(job: ClientJob, global_arrays: Arrays, state: ClientState | None, into: nn.Module | None = None) -> dict[str, float]:
    """Accuracy of this client's current model on its own test split (and label-weighted when asked),
    or next-token accuracy and perplexity on its own test text. ``into``: see :func:`merge`."""
    model = algorithm_for(job.policy.algorithm).kept_model(merge(job, global_arrays, state, into), job.scenario, state)
    data = client_data(job.scenario, job.client_id, model)
    result = evaluate(model, data.test, precision=job.scenario.eval_precision)
    return {
        "accuracy": result["accuracy"],
        "loss": result["loss"],
        **task_figures(result),
        "test-examples": float(len(data.test)),
        **data.label_metrics(model, job.scenario, weighted=job.scenario.weighted_eval == "every-round"),
    }


def task_figures(result: dict[str, float]) -> dict[str, float]:
    """What an evaluation reports beyond accuracy and loss: a language model's perplexity."""
    return {key: result[key] for key in (PERPLEXITY,) if key in result}
