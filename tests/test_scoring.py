"""Layer scorers and role rules: seeded, side-effect free, and right on a planted signal."""

from __future__ import annotations

import re
from dataclasses import asdict

import numpy as np
import pytest
import torch
from conftest import scorer_settings
from torch import nn

from fedhei import seeding
from fedhei.config.scenario import Scenario
from fedhei.errors import FedheiError
from fedhei.method.roles import GENERIC, PERSONALIZED, RoleMap, classify, random_roles, uniform_roles
from fedhei.method.scoring import SCORER_NAMES, FusionExample, LayerScores, SensingScorer, build_scorer
from fedhei.method.scoring.perturbation import measurement_count, sensing_matrix
from fedhei.models.registry import create_model, linear_layers


@pytest.fixture(scope="module")
def micro() -> nn.Module:
    torch.manual_seed(0)
    return create_model("vit-micro")


@pytest.fixture(scope="module")
def calibration() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 3, 32, 32, generator=generator), torch.randint(0, 10, (16,), generator=generator))
            for _ in range(2)]


@pytest.fixture(scope="module")
def fusion_training(calibration: list) -> list[FusionExample]:
    """Two other micro ViTs, measured, for the fused scorers to be fitted on."""
    examples = []
    for seed in (1, 2):
        with seeding.torch_seeded(seed, "test-other-model"):
            other = create_model("vit-micro")
        examples.append(FusionExample.measure(other, calibration, seed, build_scorer("exhaustive", scorer_settings())))
    return examples


class Branches(nn.Module):
    """Logits are the sum of parallel linear branches; only the planted ones carry weight,
    so the true sensitivity is sparse and known. With ``per_block``, the branches sit in
    ``blocks.<b>.<i>`` as a ViT's layers do, so the layer inventory sees blocks."""

    def __init__(self, planted: set[int], count: int = 16, features: int = 24, classes: int = 10,
                 per_block: int = 0) -> None:
        super().__init__()
        generator = seeding.torch_generator(0, "test-branches")
        branches = [nn.Linear(features, classes, bias=False) for _ in range(count)]
        with torch.no_grad():
            for index, branch in enumerate(branches):
                scale = 1.0 if index in planted else 1e-3
                branch.weight.copy_(scale * torch.randn(classes, features, generator=generator))
        if per_block:
            self.blocks = nn.ModuleList(nn.ModuleList(branches[start:start + per_block])
                                        for start in range(0, count, per_block))
        else:
            self.branches = nn.ModuleList(branches)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.stack([branch(features) for branch in self.modules() if isinstance(branch, nn.Linear)]).sum(dim=0)


def planted_calibration(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    features = torch.randn(128, 24, generator=seeding.torch_generator(0, "test-planted-calibration"))
    with torch.no_grad():
        labels = model(features).argmax(dim=1)
    return [(features[:64], labels[:64]), (features[64:], labels[64:])]


def planted_truth(model: nn.Module) -> tuple[list, int, LayerScores, RoleMap]:
    """The planted model's calibration, layer count, exhaustive scores and roles (2 personalized)."""
    calibration = planted_calibration(model)
    layers = len(linear_layers(model))
    exhaustive = build_scorer("exhaustive", scorer_settings())(model, calibration, seed=0)
    return calibration, layers, exhaustive, classify(exhaustive, "top-fraction", 2 / layers)


def test_random_design_recovers_planted_roles_with_half_the_measurements() -> None:
    model = Branches(planted={2, 9})
    calibration, layers, exhaustive, truth = planted_truth(model)
    assert truth.personalized() == ["branches.2", "branches.9"]
    for seed in range(3):
        sensed = build_scorer("sensing", scorer_settings(measurements=0.5, design="random"))(model, calibration, seed=seed)
        measurements = sensed.forward_passes // len(calibration) - 1
        assert measurements <= layers // 2
        assert sensed.forward_passes < exhaustive.forward_passes / 2 + len(calibration)
        assert classify(sensed, "top-fraction", 2 / layers).roles == truth.roles


def test_block_design_recovers_planted_roles_with_fewer_passes() -> None:
    # 4 blocks of 4 branches; the sensitive branches sit in blocks 0 and 2.
    model = Branches(planted={2, 9}, per_block=4)
    calibration, layers, exhaustive, truth = planted_truth(model)
    assert truth.personalized() == ["blocks.0.2", "blocks.2.1"]
    for seed in range(3):
        # 4 block measurements, then the two blocks that changed most, layer by layer.
        sensed = build_scorer("sensing", scorer_settings(measurements=12))(model, calibration, seed=seed)
        assert sensed.forward_passes == (1 + 4 + 4 + 4) * len(calibration) < exhaustive.forward_passes
        assert classify(sensed, "top-fraction", 2 / layers).roles == truth.roles
    # With 8 measurements only the block of the larger change is split; the other
    # block's layers share its change, so its first layer stands in for its sensitive one.
    sensed = build_scorer("sensing", scorer_settings(measurements=8))(model, calibration, seed=0)
    assert sensed.forward_passes == (1 + 4 + 4) * len(calibration)
    scores = dict(zip(sensed.layers, sensed.scores, strict=True))
    split, shared = ("blocks.0", "blocks.2") if scores["blocks.0.2"] > scores["blocks.2.1"] else ("blocks.2", "blocks.0")
    assert len({scores[f"{shared}.{index}"] for index in range(4)}) == 1
    assert len({scores[f"{split}.{index}"] for index in range(4)}) == 4


def test_block_design_merges_blocks_when_the_budget_is_short(micro: nn.Module, calibration: list) -> None:
    # vit-micro: 4 blocks and the head, 5 units; 3 measurements merge them into 3 groups.
    sensed = build_scorer("sensing", scorer_settings(measurements=3))(micro, calibration, seed=0)
    assert sensed.forward_passes == (1 + 3) * len(calibration)
    groups = [sensed.scores[0:8], sensed.scores[8:16], sensed.scores[16:17]]
    assert all(len(set(group.tolist())) == 1 for group in groups)
    assert len({group[0] for group in groups}) == 3


@pytest.mark.parametrize("name", SCORER_NAMES)
def test_scorers_are_seeded_and_leave_the_model_as_it_was(
    name: str, micro: nn.Module, calibration: list, fusion_training: list[FusionExample]
) -> None:
    before = {key: value.clone() for key, value in micro.state_dict().items()}
    micro.train()
    scorer = build_scorer(name, scorer_settings(measurements=0.5), fusion_training=fusion_training)
    first, again = scorer(micro, calibration, seed=3), scorer(micro, calibration, seed=3)
    np.testing.assert_array_equal(first.scores, again.scores)
    assert first.layers == tuple(layer.name for layer in linear_layers(micro))
    assert np.isfinite(first.scores).all() and first.scorer == name
    assert micro.training
    assert all(torch.equal(before[key], value) for key, value in micro.state_dict().items())
    assert all(param.grad is None for param in micro.parameters())


def test_perturbation_scorers_depend_on_the_seed(micro: nn.Module, calibration: list) -> None:
    for name in ("exhaustive", "sensing"):
        scorer = build_scorer(name, scorer_settings())
        assert not np.array_equal(scorer(micro, calibration, seed=0).scores, scorer(micro, calibration, seed=1).scores)


def test_forward_passes_are_counted(micro: nn.Module, calibration: list) -> None:
    layers, batches = len(linear_layers(micro)), len(calibration)

    def passes(name: str, **changes: object) -> int:
        return build_scorer(name, scorer_settings(**changes))(micro, calibration, 0).forward_passes

    assert passes("exhaustive") == (layers + 1) * batches
    assert passes("sensing", measurements=0.25, design="random") == (4 + 1) * batches
    assert passes("sensing", measurements=6, design="random") == (6 + 1) * batches
    # signed: complement pairs, two measurements each
    assert passes("sensing", measurements=6, design="signed") == (6 + 1) * batches
    # blocks: the 5 units (4 blocks, the head), then no block fits in 4 more
    assert passes("sensing", measurements=8) == (5 + 1) * batches
    assert passes("sensing", measurements=9) == (9 + 1) * batches
    # one batch per measurement, in turn: the unperturbed pass on every batch, then one each
    rotating = SensingScorer(**asdict(scorer_settings(design="random", measurements=6)), rotate_batches=True, level="shared")
    assert rotating(micro, calibration, 0).forward_passes == batches + 6
    assert passes("fisher") == batches
    assert passes("activation") == batches
    assert passes("magnitude") == 0


def test_single_signal_scorers_see_what_they_measure(calibration: list) -> None:
    torch.manual_seed(0)
    model = create_model("vit-micro")
    names = [layer.name for layer in linear_layers(model)]
    modules = dict(model.named_modules())
    with torch.no_grad():
        modules["blocks.2.mlp.fc1"].weight.mul_(20.0)
        modules["blocks.1.attn.qkv"].weight.fill_(0.01)
        modules["blocks.1.mlp.fc2"].weight.zero_()
    magnitude = build_scorer("magnitude", scorer_settings())(model, calibration, 0).scores
    entropy = build_scorer("weight-entropy", scorer_settings())(model, calibration, 0).scores
    activation = build_scorer("activation", scorer_settings())(model, calibration, 0).scores
    fisher = build_scorer("fisher", scorer_settings())(model, calibration, 0).scores
    assert names[int(np.argmax(magnitude))] == "blocks.2.mlp.fc1"
    assert names[int(np.argmax(activation))] == "blocks.2.mlp.fc1"
    # All weights equal (or zero): one histogram bin, no information.
    flat = [names.index("blocks.1.attn.qkv"), names.index("blocks.1.mlp.fc2")]
    assert (entropy[flat] == 0.0).all() and (np.delete(entropy, flat) > 4.0).all()
    # fc2 zeroed: nothing that fc1 computes reaches the loss, so its gradient is zero.
    assert fisher[names.index("blocks.1.mlp.fc1")] == 0.0 and (np.delete(fisher, names.index("blocks.1.mlp.fc1")) > 0).all()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"scorer": "nope"}, "scorer is 'nope'; choose one of: exhaustive, sensing"),
        ({"scorer": "fused-linear"}, "scorer is 'fused-linear'"),
        ({"signal": "accuracy"}, "signal is 'accuracy'"),
        ({"sensing-solver": "magic"}, "sensing-solver is 'magic'"),
        ({"sensing-design": "magic"}, "sensing-design is 'magic'; choose one of: blocks"),
        ({"prob": 1.0}, "prob is 1.0; it must be in [0, 1)"),
        ({"scorer": "exhaustive", "prob": 0.0}, "perturbs each layer by random pruning at ratio prob"),
        ({"sensing-measurements": 2.5}, "sensing-measurements is 2.5"),
        ({"sensing-measurements": 0.0}, "sensing-measurements is 0.0; it must be > 0"),
    ],
)
def test_bad_scorer_settings_are_refused_by_the_scenario(settings: dict[str, object], message: str) -> None:
    with pytest.raises(FedheiError, match=re.escape(message)):
        Scenario.from_mapping(settings)


def test_a_scorer_that_does_not_perturb_takes_a_prob_of_zero() -> None:
    assert Scenario.from_mapping({"scorer": "magnitude", "prob": 0.0}).prob == 0.0


def test_empty_calibration_is_a_user_error(micro: nn.Module) -> None:
    with pytest.raises(FedheiError, match="calibration"):
        build_scorer("exhaustive", scorer_settings())(micro, [], seed=0)


def test_measurement_count_and_sensing_matrix() -> None:
    assert measurement_count(0.5, 17) == 8
    assert measurement_count(0.01, 17) == 1
    assert measurement_count(1.0, 25) == 25
    assert measurement_count(30, 25) == 30
    matrix = sensing_matrix(8, 16, 0.25, np.random.default_rng(0))
    assert set(np.unique(matrix)) <= {0.0, 1.0}
    assert (matrix.sum(axis=0) == 2).all()
    assert len({tuple(column) for column in matrix.T}) == 16


def test_role_rules() -> None:
    scores = LayerScores(("a", "b", "c", "d"), np.array([0.2, 1.0, -0.5, 0.6]), 0, "test")
    assert classify(scores, "top-fraction", 0.5).personalized() == ["b", "d"]
    assert classify(scores, "relative", 0.5).personalized() == ["b", "d"]
    assert classify(scores, "relative", 0.1).personalized() == ["a", "b", "d"]
    # Min-max normalized: the negative score counts as 0, so a sits at 0.2 and d at 0.6.
    assert classify(scores, "absolute", 0.5).personalized() == ["b", "d"]
    assert classify(scores, "absolute", 0.1).personalized() == ["a", "b", "d"]
    nothing = LayerScores(("a", "b"), np.array([-1.0, 0.0]), 0, "test")
    assert classify(nothing, "relative", 0.0).personalized() == []
    with pytest.raises(FedheiError, match="role rule"):
        classify(scores, "median", 0.5)
    with pytest.raises(FedheiError, match="threshold"):
        classify(scores, "relative", 1.5)


def test_role_maps_round_trip_and_baselines() -> None:
    scores = LayerScores(("a", "b", "c", "d"), np.array([0.2, 1.0, 0.1, 0.6]), 0, "test")
    roles = classify(scores, "top-fraction", 0.25)
    assert RoleMap.from_dict(roles.to_dict()) == roles
    assert roles.generic() == ["a", "c", "d"] and roles.roles["b"] == PERSONALIZED
    drawn = random_roles(roles.layers, 2, seed=4)
    assert len(drawn.personalized()) == 2 and drawn == random_roles(roles.layers, 2, seed=4)
    assert set(uniform_roles(roles.layers).roles.values()) == {GENERIC}
    with pytest.raises(FedheiError, match="role map"):
        RoleMap.from_dict({"layers": ["a"], "scores": [1.0], "rule": "x", "threshold": 0.1, "roles": {"a": "odd"}})
