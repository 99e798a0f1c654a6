"""Distillation after pruning: the pruned student learns from its unpruned teacher and stays pruned."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import train_settings

from fedhei.cli import main
from fedhei.config.scenario import Scenario
from fedhei.data.cifar10 import make_synthetic
from fedhei.errors import FedheiError
from fedhei.federation.client_round import ClientJob, local_round
from fedhei.federation.policy import ClientPolicy, Pruning, Sharing
from fedhei.method.pruning import magnitude_masks
from fedhei.models.checkpoints import save_checkpoint
from fedhei.models.registry import create_model, linear_layers
from fedhei.training.distill import DistillSettings, distill, distillation_loss, teacher_divergence
from fedhei.training.loops import batches_for


def _micro(seed: int) -> torch.nn.Module:
    return create_model("vit-micro", seed=seed)


def test_the_loss_mixes_scaled_soft_targets_with_hard_labels() -> None:
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(8, 10, generator=generator), torch.randn(8, 10, generator=generator)
    labels = torch.randint(0, 10, (8,), generator=generator)
    hard = DistillSettings(temperature=3.0, alpha=0.0)
    torch.testing.assert_close(distillation_loss(student, teacher, labels, hard), F.cross_entropy(student, labels))
    soft = DistillSettings(temperature=3.0, alpha=1.0)
    expected = F.kl_div(F.log_softmax(student / 3, 1), F.softmax(teacher / 3, 1), reduction="batchmean") * 9
    torch.testing.assert_close(distillation_loss(student, teacher, labels, soft), expected)
    assert distillation_loss(teacher, teacher, labels, soft).item() == pytest.approx(0.0, abs=1e-6)
    half = distillation_loss(student, teacher, labels, DistillSettings(temperature=3.0, alpha=0.5))
    torch.testing.assert_close(half, 0.5 * expected + 0.5 * F.cross_entropy(student, labels))


def test_distillation_keeps_masks_and_moves_the_student_toward_its_teacher() -> None:
    data = make_synthetic(num_train=400, num_test=10)
    teacher = _micro(0)
    student = copy.deepcopy(teacher)
    ratios = {layer.name: 0.6 for layer in linear_layers(student)}
    masks = magnitude_masks(student, ratios)
    batches = batches_for(student, data.train)
    # The student starts pruned, and its divergence from the teacher is what distillation must shrink.
    with torch.no_grad():
        for name, param in student.named_parameters():
            if name in masks:
                param.mul_(masks[name])
    before = teacher_divergence(student, teacher, batches)
    settings = train_settings(epochs=2, batch_size=50, lr=1e-3, augment=False)
    stats = distill(student, teacher, batches, settings, DistillSettings(temperature=2.0, alpha=1.0), masks=masks, seed=0)
    assert stats["examples"] == 800
    after = teacher_divergence(student, teacher, batches)
    assert after < 0.5 * before, (before, after)
    params = dict(student.named_parameters())
    for name, mask in masks.items():
        assert torch.count_nonzero(params[name][~mask]) == 0, name
    # The teacher is left as it was.
    for name, value in _micro(0).state_dict().items():
        torch.testing.assert_close(teacher.state_dict()[name], value)


def test_distillation_repeats_with_the_same_seed() -> None:
    data = batches_for(_micro(0), make_synthetic(num_train=200, num_test=10).train)
    settings = train_settings(epochs=1, batch_size=50, lr=1e-3)
    students = []
    for _ in range(2):
        student = _micro(1)
        distill(student, _micro(0), data, settings, Scenario().distill_settings(), seed=5)
        students.append(student)
    for name, value in students[0].state_dict().items():
        assert torch.equal(value, students[1].state_dict()[name]), name


@pytest.mark.parametrize(("temperature", "alpha"), [(0.0, 0.5), (2.0, 1.5), (2.0, -0.1)])
def test_bad_settings_are_refused(temperature: float, alpha: float) -> None:
    with pytest.raises(FedheiError, match="distill"):
        Scenario(distill=True, distill_temperature=temperature, distill_alpha=alpha)


def test_compress_distills_on_request(tmp_path: Path) -> None:
    base = tmp_path / "micro.safetensors"
    save_checkpoint(_micro(0), base, {"model": "vit-micro"})
    reports = {}
    for flag in ([], ["--distill", "--distill-temperature", "2", "--distill-alpha", "0.7"]):
        out = tmp_path / f"{len(flag)}.json"
        assert main(["compress", "--base", str(base), "--data", "synthetic", "--finetune-epochs", "0.5",
                     "--recovery-epochs", "0.3", "--max-train", "300", "--calibration-batches", "1", "--client", "1",
                     "--prob", "0.5", "--pruning-steps", "1", "--out", str(out), "--save-models", str(tmp_path / str(len(flag))),
                     *flag]) == 0
        reports[bool(flag)] = json.loads(out.read_text())
    assert reports[True]["settings"]["distill"] and reports[True]["settings"]["distill-alpha"] == 0.7
    plain, distilled = reports[False]["results"], reports[True]["results"]
    assert [row["method"] for row in plain] == [row["method"] for row in distilled]
    for without, with_teacher in zip(plain, distilled, strict=True):
        # Same pruning on the same fine-tuned model; only the recovery differs.
        assert without["accuracy-before"] == with_teacher["accuracy-before"]
        assert without["accuracy-pruned"] == with_teacher["accuracy-pruned"]
        assert without["params-kept"] == with_teacher["params-kept"]
        assert with_teacher["nonzero-params"] <= with_teacher["params-kept"]
        assert Path(without["checkpoint"]).read_bytes() != Path(with_teacher["checkpoint"]).read_bytes()


def test_bad_distill_option_is_one_line(expect_one_line_error) -> None:
    expect_one_line_error("compress", "--data", "synthetic", "--distill", "--distill-alpha", "2", message="distill-alpha")


def test_the_final_local_round_distills_from_the_model_before_its_last_pruning_step() -> None:
    scenario = Scenario(data_source="synthetic", model="vit-micro", num_clients=3, dirichlet_alpha=1.0, local_epochs=0.2,
                        batch_size=32, pruning_steps=2, prob=0.6, calibration_batches=1, scorer="magnitude")
    policy = ClientPolicy(Sharing.GENERIC, Pruning.ROLES)
    global_arrays = {name: value.detach().numpy().copy() for name, value in _micro(0).named_parameters()}
    final = ClientJob(scenario, policy, 1, 3, complete_schedule=True)
    plain = local_round(final, global_arrays, None)
    distilled = local_round(ClientJob(scenario.replace(distill=True, distill_alpha=1.0), policy, 1, 3, complete_schedule=True),
                            global_arrays, None)
    # Same masks (the pruning step does not depend on the loss), different training: the soft targets moved it.
    assert {n: m.sum().item() for n, m in distilled.state.masks.items()} == {n: m.sum().item() for n, m in plain.state.masks.items()}
    assert distilled.metrics["train-loss"] != plain.metrics["train-loss"]
    weights = dict(distilled.model.named_parameters())
    for name, mask in distilled.state.masks.items():
        assert torch.count_nonzero(weights[name].detach()[~mask]) == 0
    # Distillation never runs before the final round: a middle round ignores the setting.
    middle = local_round(ClientJob(scenario.replace(distill=True), policy, 1, 1), global_arrays, None)
    again = local_round(ClientJob(scenario, policy, 1, 1), global_arrays, None)
    assert middle.metrics["train-loss"] == again.metrics["train-loss"]
