"""Attention entropy and the fused scorers: finite, per layer, and right on planted signals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import scorer_settings
from scipy.stats import spearmanr
from torch import nn

from fedhei import seeding
from fedhei.errors import FedheiError
from fedhei.method.roles import classify
from fedhei.method.scoring import FEDERATED_SCORERS, SCORER_NAMES, LayerScores, build_scorer
from fedhei.method.scoring.attention import attention_entropy
from fedhei.method.scoring.fusion import FUSED_SIGNALS, FusionExample, layer_features, leave_one_out
from fedhei.models.registry import create_model, linear_layers


def micro(seed: int) -> nn.Module:
    return create_model("vit-micro", seed=seeding.seed_for(seed, "test-model"))


@pytest.fixture(scope="module")
def calibration() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = seeding.torch_generator(0, "test-calibration")
    return [(torch.randn(16, 3, 32, 32, generator=generator), torch.randint(0, 10, (16,), generator=generator))
            for _ in range(2)]


def test_attention_entropy_matches_timm_and_maps_blocks_to_layers(calibration: list) -> None:
    model = micro(0).eval()
    attention = model.blocks[1].attn
    seen: dict[str, torch.Tensor] = {}
    attention.fused_attn = False
    attention.qkv.register_forward_hook(lambda module, inputs, output: seen.setdefault("qkv", output))
    attention.attn_drop.register_forward_hook(lambda module, inputs, output: seen.setdefault("probs", output))
    with torch.no_grad():
        model(calibration[0][0])
    probs = seen["probs"]
    expected = -(probs * probs.clamp_min(1e-30).log()).sum(dim=-1)
    torch.testing.assert_close(attention_entropy(attention, seen["qkv"]), expected, atol=1e-5, rtol=1e-5)

    scores = build_scorer("attention-entropy", scorer_settings())(micro(0), calibration, seed=0)
    assert np.isfinite(scores.scores).all() and ((scores.scores > 0) & (scores.scores <= 1)).all()
    assert scores.forward_passes == 2
    by_layer = dict(zip(scores.layers, scores.scores, strict=True))
    for layer in linear_layers(micro(0)):
        block = layer.block if layer.block >= 0 else len(model.blocks) - 1
        assert by_layer[layer.name] == by_layer[f"blocks.{block}.attn.qkv"]


def test_attention_entropy_reacts_to_a_planted_sharp_block(calibration: list) -> None:
    model = micro(0)
    before = build_scorer("attention-entropy", scorer_settings())(model, calibration, seed=0).scores
    qkv = model.blocks[2].attn.qkv
    width = qkv.out_features // 3
    with torch.no_grad():  # larger queries and keys: sharper softmax, lower entropy in block 2
        qkv.weight[: 2 * width].mul_(12.0)
    after = build_scorer("attention-entropy", scorer_settings())(model, calibration, seed=0)
    entropy, earlier = dict(zip(after.layers, after.scores, strict=True)), dict(zip(after.layers, before, strict=True))
    assert entropy["blocks.2.attn.qkv"] < 0.5 * earlier["blocks.2.attn.qkv"]
    assert {layer for layer, score in entropy.items() if score == min(entropy.values())} == {
        f"blocks.2.{name}" for name in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")}
    # Blocks before the planted one see the same inputs as before.
    assert entropy["blocks.0.attn.qkv"] == earlier["blocks.0.attn.qkv"]


def planted_examples(models: int, calibration: list, relation) -> list[FusionExample]:
    """Random micro ViTs whose "measured" sensitivity is a planted function of their features."""
    examples = []
    for seed in range(models):
        features = layer_features(micro(seed), calibration, seed)
        examples.append(FusionExample(features, relation(features.matrix)))
    return examples


def leave_one_client_out(regressor: str, relation, calibration: list) -> tuple[float, float]:
    """Mean Spearman and role agreement of fused scores with the planted sensitivity on
    each held-out model, the regressor fitted on the others."""
    examples = planted_examples(4, calibration, relation)
    correlations, agreements = [], []
    for held_out, scorer in enumerate(leave_one_out(examples, regressor, f"fused-{regressor}")):
        assert len(scorer.training) == 3 and all(other is not examples[held_out] for other in scorer.training)
        predicted = scorer(micro(held_out), calibration, seed=held_out)
        assert predicted.forward_passes == sum(signal(micro(0), calibration, 0).forward_passes for signal in FUSED_SIGNALS)
        truth = LayerScores(predicted.layers, examples[held_out].sensitivity, 0, "planted")
        ours, theirs = classify(predicted, "top-fraction", 0.25), classify(truth, "top-fraction", 0.25)
        correlations.append(spearmanr(predicted.scores, truth.scores).statistic)
        agreements.append(np.mean([ours.roles[name] == theirs.roles[name] for name in predicted.layers]))
    return float(np.mean(correlations)), float(np.mean(agreements))


# Feature columns: 0 magnitude, 1 weight entropy, 2 fisher, 3 activation, 4 attention, 5 depth, then the kind.
@pytest.mark.parametrize(("regressor", "relation"), [
    ("linear", lambda x: 2.0 * x[:, 2] - x[:, 3]),
    # a step in depth plus fisher: a shape a forest can learn
    ("forest", lambda x: np.where(x[:, 5] < 0.5, 3.0, 0.0) + x[:, 2]),
])
def test_fused_scorers_recover_a_planted_relation_leave_one_client_out(calibration: list, regressor: str, relation) -> None:
    correlation, agreement = leave_one_client_out(regressor, relation, calibration)
    assert correlation >= 0.85 and agreement >= 0.85


def test_fused_scorers_find_nothing_where_nothing_was_planted(calibration: list) -> None:
    def unrelated(features: np.ndarray) -> np.ndarray:
        return seeding.rng(int(1e6 * abs(features[0, 0])), "test-unrelated").random(len(features))

    correlation, _ = leave_one_client_out("linear", unrelated, calibration)
    assert correlation < 0.5


def test_fused_scorers_are_not_federated_and_need_training() -> None:
    assert {"fused-linear", "fused-forest"} <= set(SCORER_NAMES) - set(FEDERATED_SCORERS)
    assert {"sensing", "exhaustive", "attention-entropy"} <= set(FEDERATED_SCORERS)
    with pytest.raises(FedheiError, match="needs weights fitted"):
        build_scorer("fused-linear", scorer_settings())


def test_a_scenario_refuses_a_scorer_a_client_cannot_build_in_one_line() -> None:
    from fedhei.config.scenario import Scenario

    with pytest.raises(FedheiError, match="scorer is 'fused-linear'; choose one of: ") as caught:
        Scenario.from_mapping({"scorer": "fused-linear"})
    assert "\n" not in str(caught.value) and "sensing" in str(caught.value)
    with pytest.raises(FedheiError, match="scorer is 'nope'"):
        Scenario.from_mapping({"scorer": "nope"})
    assert Scenario.from_mapping({"scorer": "attention-entropy"}).scorer == "attention-entropy"
    with pytest.raises(FedheiError, match="sensing-design is 'magic'"):
        Scenario.from_mapping({"sensing-design": "magic"})
