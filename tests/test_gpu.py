"""On a CUDA GPU, training, bfloat16 evaluation and a whole federation give what the CPU gives.

Marked ``gpu``: they run wherever torch sees a CUDA device and skip, saying why, everywhere
else (conftest.py), so the default test run never depends on a GPU.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from fedhei import seeding
from fedhei.config.scenario import Scenario
from fedhei.data.cifar10 import make_synthetic
from fedhei.models.registry import create_model
from fedhei.training.loops import BFLOAT16, FLOAT32, TrainSettings, batches_for, evaluate, train
from fedhei.training.optimizers import ADAMW, SGD
from strategies.simulation import run_scenario

pytestmark = pytest.mark.gpu

CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def exact_float32_matmuls() -> Iterator[None]:
    """TensorFloat-32 would round every matmul and convolution to 10 mantissa bits: the comparison with the CPU is of float32."""
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


def settings(optimizer: str, lr: float, max_steps: int | None) -> TrainSettings:
    return TrainSettings(epochs=1.0, batch_size=32, lr=lr, weight_decay=0.0, augment=True, max_steps=max_steps,
                         optimizer=optimizer, momentum=0.0, decay_in_call=False)


def test_sgd_steps_on_the_gpu_land_where_the_cpu_lands() -> None:
    data = make_synthetic(num_train=256, num_test=64)
    with seeding.torch_seeded(0, "gpu-test"):
        on_cpu = create_model("vit-micro")
    start = {name: value.detach().clone() for name, value in on_cpu.named_parameters()}
    on_gpu = copy.deepcopy(on_cpu)
    for model, device in ((on_cpu, torch.device("cpu")), (on_gpu, CUDA)):
        train(model, batches_for(model, data.train), settings(SGD, 0.05, 5), seed=3, device=device)
    moved = max((value.detach() - start[name]).abs().max().item() for name, value in on_cpu.named_parameters())
    apart = max((value.detach() - on_gpu.get_parameter(name).detach().cpu()).abs().max().item()
                for name, value in on_cpu.named_parameters())
    assert moved > 1e-3, "five SGD steps should move the weights"
    assert apart < 1e-4, f"the GPU's weights differ from the CPU's by up to {apart:.2e}"


def _linear_output_dtypes(model: nn.Module, run: object) -> set[torch.dtype]:
    seen: set[torch.dtype] = set()
    handles = [module.register_forward_hook(lambda _m, _i, output: seen.add(output.dtype))
               for module in model.modules() if isinstance(module, nn.Linear)]
    try:
        run()  # type: ignore[operator]
    finally:
        for handle in handles:
            handle.remove()
    return seen


def test_bfloat16_evaluation_on_the_gpu_computes_in_bfloat16_and_scores_what_float32_scores() -> None:
    data = make_synthetic(num_train=600, num_test=400)
    with seeding.torch_seeded(0, "gpu-test"):
        model = create_model("vit-micro")
    train(model, batches_for(model, data.train), settings(ADAMW, 2e-3, None), seed=1, device=CUDA)
    test = batches_for(model, data.test)
    results: dict[str, dict[str, float]] = {}
    for precision, dtype in ((FLOAT32, torch.float32), (BFLOAT16, torch.bfloat16)):
        def run(precision: str = precision) -> None:
            results[precision] = evaluate(model, test, batch_size=64, device=CUDA, precision=precision)
        assert _linear_output_dtypes(model, run) == {dtype}, precision
    assert 0.2 < results[FLOAT32]["accuracy"] < 0.95, "the model should be neither hopeless nor perfect"
    assert results[BFLOAT16]["accuracy"] == pytest.approx(results[FLOAT32]["accuracy"], abs=0.02)


def test_a_federation_on_the_gpu_ends_where_the_same_federation_on_the_cpu_ends(tmp_path: Path) -> None:
    scenario = Scenario(name="gpu", strategy="fedhei", data_source="synthetic", model="vit-micro", num_clients=2,
                        fraction_train=1.0, num_server_rounds=2, pretrain_epochs=1.0, local_epochs=0.25, batch_size=32,
                        pruning_steps=2, calibration_batches=1, device="cpu")
    on_cpu = run_scenario(scenario, tmp_path / "cpu", quiet=True)["summary"]
    on_gpu = run_scenario(scenario.replace(device="cuda", client_num_gpus=0.5), tmp_path / "gpu", quiet=True)["summary"]
    assert on_gpu["clients"] == on_cpu["clients"] == 2
    for key in ("accuracy-mean", "compression-mean"):
        assert on_gpu[key] == pytest.approx(on_cpu[key], abs=0.05), key
