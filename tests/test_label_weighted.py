"""The label-weighted full-test-set accuracy against a brute-force computation, image by image."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import train_settings

from fedhei import seeding
from fedhei.config.scenario import Scenario
from fedhei.data.cifar10 import make_synthetic
from fedhei.federation.client_round import ClientJob, evaluate_round
from fedhei.federation.export import finalize
from fedhei.federation.policy import ClientPolicy, Pruning, Sharing
from fedhei.models.registry import create_model
from fedhei.training.label_weighted import label_weighted_accuracy
from fedhei.training.loops import batches_for, train


@pytest.fixture(scope="module")
def trained() -> tuple[torch.nn.Module, object]:
    """vit-micro trained briefly, so that its accuracy differs from class to class."""
    data = make_synthetic(num_train=600, num_test=400)
    with seeding.torch_seeded(0, "test-model"):
        model = create_model("vit-micro")
    train(model, batches_for(model, data.train), train_settings(epochs=1.0, batch_size=32, lr=2e-3), seed=1)
    return model, data


def _brute_force(model: torch.nn.Module, test, train_labels: np.ndarray) -> float:
    """Every test image on its own; per class the share of correct ones; the sum weighted by label shares."""
    correct = []
    with torch.no_grad():
        model.eval()
        for image, label in batches_for(model, test).batches(1):
            correct.append(int(model(image).argmax(dim=1).item() == label.item()))
    correct_by_image = np.array(correct)
    total = 0.0
    for label in range(10):
        share = float(np.mean(train_labels == label))
        if share > 0:
            total += share * correct_by_image[test.labels == label].mean()
    return total


def test_weighted_accuracy_equals_the_brute_force_expectation(trained) -> None:
    model, data = trained
    # A skewed client: most of class 3, some of 0 and 7, one image of 9, none of the rest.
    train_labels = np.array([3] * 50 + [0] * 20 + [7] * 9 + [9])
    result = label_weighted_accuracy(model, data.test, train_labels, batch_size=37)
    assert result.accuracy == pytest.approx(_brute_force(model, data.test, train_labels), abs=1e-12)
    # Only the four held classes were evaluated, on all of their test images.
    assert sorted(result.per_class) == [0, 3, 7, 9]
    assert result.images == int(np.isin(data.test.labels, [0, 3, 7, 9]).sum())
    assert len(set(result.per_class.values())) > 1, "the model should not be equally good on every class"
    assert result.metrics()["majority-class-rate-weighted"] == pytest.approx(50 / 80)


def test_a_client_holding_every_class_equally_gets_the_class_balanced_accuracy(trained) -> None:
    model, data = trained
    result = label_weighted_accuracy(model, data.test, np.arange(100) % 10)
    assert result.images == len(data.test)
    assert result.accuracy == pytest.approx(np.mean(list(result.per_class.values())))


SCENARIO = Scenario(data_source="synthetic", model="vit-micro", num_clients=3, dirichlet_alpha=1.0, local_epochs=0.1,
                    batch_size=32, calibration_batches=1, scorer="magnitude")


@pytest.fixture(scope="module")
def base_arrays() -> dict[str, np.ndarray]:
    with seeding.torch_seeded(0, "test-model"):
        return {name: value.detach().numpy().copy() for name, value in create_model("vit-micro").named_parameters()}


def _job(weighted_eval: str) -> ClientJob:
    return ClientJob(SCENARIO.replace(weighted_eval=weighted_eval), ClientPolicy(Sharing.GENERIC, Pruning.ROLES), 1, 1)


def test_per_round_evaluation_stays_on_the_sampled_split_unless_every_round_is_asked(base_arrays) -> None:
    assert "accuracy-weighted" not in evaluate_round(_job("final"), base_arrays, None)
    assert {"accuracy", "accuracy-weighted"} <= set(evaluate_round(_job("every-round"), base_arrays, None))


@pytest.mark.parametrize(("setting", "weighted"), [("final", True), ("off", False)])
def test_the_final_export_keeps_both_figures_unless_weighted_eval_is_off(tmp_path, base_arrays, setting: str,
                                                                          weighted: bool) -> None:
    metrics = finalize(_job(setting), base_arrays, None, tmp_path)
    manifest = json.loads((tmp_path / "clients" / "1" / "manifest.json").read_text())
    assert "accuracy" in metrics and "accuracy" in manifest
    assert ("accuracy-weighted" in metrics) is ("accuracy-weighted" in manifest) is weighted
