"""Evaluation at bfloat16: the forward pass really runs in it, scores what float32 scores, and every
evaluation of a run (clients, export, the server's global model) follows eval-precision while training stays float32."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from conftest import train_settings
from torch import nn

from fedhei import seeding
from fedhei.config.scenario import Scenario
from fedhei.data.cifar10 import Cifar10, make_synthetic
from fedhei.errors import FedheiError
from fedhei.federation.client_round import ClientJob, evaluate_round, local_round
from fedhei.federation.export import export_model
from fedhei.federation.policy import ClientPolicy, Pruning, Sharing
from fedhei.federation.server import evaluate_global
from fedhei.models.registry import create_model
from fedhei.training.label_weighted import label_weighted_accuracy
from fedhei.training.loops import BFLOAT16, FLOAT32, batches_for, correct_per_example, evaluate, train

# 400 test images: bfloat16 may flip a borderline image or two, not more than this share.
TOLERANCE = 0.02


@contextmanager
def linear_output_dtypes() -> Iterator[set[torch.dtype]]:
    """The dtypes every linear layer of any model puts out while inside: what the forward pass computes in."""
    seen: set[torch.dtype] = set()

    def record(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        if isinstance(module, nn.Linear):
            seen.add(output.dtype)

    handle = nn.modules.module.register_module_forward_hook(record)
    try:
        yield seen
    finally:
        handle.remove()


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, Cifar10]:
    """vit-micro trained briefly, so that it is right on some images and wrong on others."""
    data = make_synthetic(num_train=600, num_test=400)
    with seeding.torch_seeded(0, "test-model"):
        model = create_model("vit-micro")
    train(model, batches_for(model, data.train), train_settings(epochs=1.0, batch_size=32, lr=2e-3), seed=1)
    return model, data


def test_bfloat16_evaluation_computes_in_bfloat16_and_scores_what_float32_scores(trained) -> None:
    model, data = trained
    test = batches_for(model, data.test)
    results = {}
    for precision, dtype in ((FLOAT32, torch.float32), (BFLOAT16, torch.bfloat16)):
        with linear_output_dtypes() as seen:
            results[precision] = evaluate(model, test, batch_size=64, precision=precision)
        assert seen == {dtype}, precision
    exact, fast = results[FLOAT32], results[BFLOAT16]
    assert 0.2 < exact["accuracy"] < 0.95, "the model should be neither hopeless nor perfect"
    assert fast["accuracy"] == pytest.approx(exact["accuracy"], abs=TOLERANCE)
    assert fast["loss"] == pytest.approx(exact["loss"], rel=0.02)
    assert fast["examples"] == exact["examples"] == len(data.test)


def test_per_image_correctness_and_the_label_weighted_accuracy_follow_the_precision(trained) -> None:
    model, data = trained
    test = batches_for(model, data.test)
    with linear_output_dtypes() as seen:
        fast = correct_per_example(model, test, precision=BFLOAT16)
        weighted_fast = label_weighted_accuracy(model, data.test, np.array([3] * 50 + [0] * 20 + [7] * 10), precision=BFLOAT16)
    assert seen == {torch.bfloat16}
    exact = correct_per_example(model, test)
    assert fast.shape == exact.shape == (len(data.test),)
    assert np.mean(fast != exact) <= TOLERANCE
    weighted_exact = label_weighted_accuracy(model, data.test, np.array([3] * 50 + [0] * 20 + [7] * 10))
    assert weighted_fast.accuracy == pytest.approx(weighted_exact.accuracy, abs=3 * TOLERANCE)


SCENARIO = Scenario(data_source="synthetic", model="vit-micro", num_clients=3, dirichlet_alpha=1.0, local_epochs=0.1,
                    batch_size=32, calibration_batches=1, scorer="magnitude", weighted_eval="every-round")
POLICY = ClientPolicy(Sharing.GENERIC, Pruning.ROLES)


@pytest.fixture(scope="module")
def base_arrays() -> dict[str, np.ndarray]:
    with seeding.torch_seeded(0, "test-model"):
        return {name: value.detach().numpy().copy() for name, value in create_model("vit-micro").named_parameters()}


@pytest.mark.parametrize(("precision", "dtype"), [(FLOAT32, torch.float32), (BFLOAT16, torch.bfloat16)])
def test_every_evaluation_of_a_run_follows_eval_precision(base_arrays, tmp_path, precision: str, dtype: torch.dtype) -> None:
    scenario = SCENARIO.replace(eval_precision=precision)
    job = ClientJob(scenario, POLICY, 1, 1)
    with linear_output_dtypes() as seen:
        between_rounds = evaluate_round(job, base_arrays, None)
    assert seen == {dtype} and "accuracy-weighted" in between_rounds
    with linear_output_dtypes() as seen:
        evaluate_global(scenario, base_arrays)
    assert seen == {dtype}
    with linear_output_dtypes() as seen:
        trained = local_round(job, base_arrays, None)
    assert seen == {torch.float32}, "training and scoring stay float32"
    with linear_output_dtypes() as seen:
        exported = export_model(ClientJob(scenario.replace(weighted_eval="final"), POLICY, 1, 2), trained.model, trained.state,
                                tmp_path)
    assert seen == {dtype} and "accuracy-weighted" in exported


@pytest.mark.parametrize("value", ["float16", "bf16", ""])
def test_an_unknown_eval_precision_is_refused_in_one_line(value: str) -> None:
    with pytest.raises(FedheiError) as refused:
        Scenario.from_mapping({"eval-precision": value})
    message = str(refused.value)
    assert "\n" not in message and f"eval-precision is '{value}'" in message and "float32, bfloat16" in message
