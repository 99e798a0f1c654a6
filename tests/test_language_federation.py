"""A language model's federation through the same harness as the ViT's: Flower's simulation
engine under Ray, 2 rounds of FedHEI with a tiny random-init Qwen2 over clients that each
hold their own topic's generated text; and the head-splitting strategies on it, without Flower."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from test_federation import RecordingFedHEI, _hand_average
from test_language import _checkpoint_folder

from fedhei.config.scenario import Scenario
from fedhei.errors import FedheiError
from fedhei.federation.algorithms.fedala import top_parameters
from fedhei.federation.client_round import ClientJob, client_data, local_round
from fedhei.federation.policy import shared_parameters
from fedhei.federation.wire import MASK_SUFFIX, VALUES_SUFFIX
from fedhei.models.checkpoints import load_checkpoint
from fedhei.models.registry import create_model
from fedhei.training.loops import evaluate
from fedhei.training.pretrain import starting_model
from strategies.fedper import FedPer
from strategies.simulation import run_scenario

# Small enough for seconds per round on one core: 3 clients on 3 topics, 20 documents each.
TINY_LM: dict[str, Any] = dict(model="qwen2-micro", data_source="topics", num_clients=3, text_topics=3, text_documents=20,
                               text_sequence_length=32, batch_size=16, max_local_steps=2, calibration_batches=1)
HEAD = "lm_head.weight"


class RecordingLanguageFedHEI(RecordingFedHEI):
    log: ClassVar[list[dict]] = []


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> tuple[Scenario, Path, dict]:
    RecordingLanguageFedHEI.log.clear()
    scenario = Scenario(name="lm-e2e", strategy=f"{__name__}:RecordingLanguageFedHEI", fraction_train=1.0, num_server_rounds=2,
                        pruning_steps=2, prob=0.5, **TINY_LM)
    run_dir = tmp_path_factory.mktemp("lm-e2e")
    return scenario, run_dir, run_scenario(scenario, run_dir)


def _layers_sent(arrays: dict[str, np.ndarray]) -> set[str]:
    return {key.removesuffix(VALUES_SUFFIX).removesuffix(MASK_SUFFIX).rsplit(".", 1)[0] for key in arrays}


def test_two_rounds_complete_and_personal_layers_stay_home(federation) -> None:
    _, run_dir, payload = federation
    assert payload["status"] == "complete" and payload["failures"]["total"] == 0
    assert [r["aggregated"] for r in payload["rounds"]] == [[0, 1, 2], [0, 1, 2]]
    assert payload["partition"]["topics"] == ["cooking", "astronomy", "sailing"]
    assert len(RecordingLanguageFedHEI.log) == 2
    kept_home = 0
    for round_log in RecordingLanguageFedHEI.log:
        replies, before, result = round_log["replies"], round_log["sent"], round_log["result"]
        for reply in replies:
            assert reply["personalized"], "the classifier found no personalized layer to keep home"
            assert not _layers_sent(reply["arrays"]) & set(reply["personalized"])
        # What the server holds for a layer some client kept home is the average of the clients that sent it.
        for layer in sorted({layer for reply in replies for layer in reply["personalized"]}):
            name = f"{layer}.weight"
            np.testing.assert_allclose(result[name], _hand_average(before, replies, name), rtol=1e-5, atol=1e-6)
            kept_home += 1
    assert kept_home >= 4
    report = (run_dir / "report.md").read_text()
    assert "perplexity" in report and "majority" not in report


def test_every_client_exports_a_model_that_loads_back_with_finite_perplexity(federation) -> None:
    scenario, run_dir, payload = federation
    assert len(payload["clients"]) == 3 and math.isfinite(payload["summary"]["perplexity-mean"])
    for client in range(3):
        folder = run_dir / "clients" / str(client)
        manifest = json.loads((folder / "manifest.json").read_text())
        assert math.isfinite(manifest["perplexity"]) and 0 < manifest["compression"] < 0.6
        assert "majority-class-rate" not in manifest and "accuracy-weighted" not in manifest
        model = load_checkpoint(folder / "model.safetensors")
        reloaded = evaluate(model, client_data(scenario, client, model).test, precision=scenario.eval_precision)
        assert reloaded["perplexity"] == pytest.approx(manifest["perplexity"], rel=1e-5)
        assert reloaded["accuracy"] == pytest.approx(manifest["accuracy"])


def test_fedper_keeps_the_language_model_head_at_home(tmp_path: Path) -> None:
    """The head is the adapter's (lm_head), on the client's side and on the server's."""
    scenario = Scenario(strategy="fedper", **TINY_LM)
    base = starting_model(scenario.pretrain_spec(), device="cpu")
    arrays = {name: value.detach().numpy() for name, value in base.named_parameters()}
    done = local_round(ClientJob(scenario, FedPer.policy, client_id=1, server_round=1), arrays, None)
    assert set(done.state.personal) == {HEAD}
    assert set(done.update) == set(arrays) - {HEAD}
    assert FedPer(scenario, str(tmp_path)).head == (HEAD,)
    assert shared_parameters(FedPer.policy, arrays, (), head=FedPer(scenario, str(tmp_path)).head) == set(arrays) - {HEAD}


def test_fedala_blends_the_language_model_head_first() -> None:
    model = create_model("qwen2-micro")
    assert top_parameters(model, 1) == [HEAD]
    assert set(top_parameters(model, 2)) - {HEAD} == {name for name, _ in model.named_parameters()
                                                      if name.startswith(("model.layers.1.", "model.norm."))}


def test_a_language_model_starts_from_its_seed_or_a_local_checkpoint(tmp_path: Path) -> None:
    scenario = Scenario(**TINY_LM)
    first, again = (starting_model(scenario.pretrain_spec(), device="cpu").state_dict() for _ in range(2))
    other = starting_model(scenario.replace(base_seed=1).pretrain_spec(), device="cpu").state_dict()
    assert all(torch.equal(first[key], again[key]) for key in first) and not torch.equal(first[HEAD], other[HEAD])
    reference = _checkpoint_folder(tmp_path / "qwen", tie=True)
    loaded = starting_model(scenario.pretrain_spec(), device="cpu", checkpoint=str(tmp_path / "qwen")).state_dict()
    assert all(torch.equal(value, loaded[key]) for key, value in reference.state_dict().items())


def test_a_language_scenario_refuses_what_cannot_work_on_text() -> None:
    with pytest.raises(FedheiError, match="cannot score a language model"):
        Scenario(scorer="attention-entropy", **TINY_LM)
    with pytest.raises(FedheiError, match="never downloads"):
        Scenario(base_model="hub", **TINY_LM)
