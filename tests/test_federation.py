"""End to end through Flower's simulation engine (Ray): 2 rounds, 4 clients, synthetic data.

The strategy under test is FedHEI itself, subclassed only to record what crossed the
wire, and plugged in by import path exactly as a user's own strategy would be.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from flwr.app import ArrayRecord, Message, MetricRecord

from fedhei.config.scenario import Scenario
from fedhei.federation.wire import MASK_SUFFIX, VALUES_SUFFIX
from fedhei.models.checkpoints import load_state
from strategies.fedhei import FedHEI
from strategies.simulation import run_scenario


class RecordingFedHEI(FedHEI):
    """FedHEI that keeps, per round, the global model it sent, the replies, and the result
    (a subclass with a ``log`` of its own records apart)."""

    log: ClassVar[list[dict]] = []

    def aggregate_train(self, server_round: int, replies) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        assert self.server is not None
        sent = dict(self.server.current)
        arrays, metrics = super().aggregate_train(server_round, replies)
        self.log.append(
            {
                "round": server_round,
                "sent": sent,
                "replies": [_unpack(reply) for reply in replies],
                "result": {name: array.numpy() for name, array in arrays.items()} if arrays is not None else None,
            }
        )
        return arrays, metrics


def _unpack(reply: Message) -> dict:
    content = reply.content
    return {
        "arrays": {name: array.numpy() for name, array in content.array_records["arrays"].items()},
        "weight": float(content.metric_records["metrics"]["num-examples"]),
        "personalized": list(content.config_records["roles"]["personalized"]),
    }


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    RecordingFedHEI.log.clear()
    scenario = Scenario(
        name="e2e",
        strategy=f"{__name__}:RecordingFedHEI",
        data_source="synthetic",
        model="vit-micro",
        num_clients=4,
        fraction_train=1.0,
        num_server_rounds=2,
        dirichlet_alpha=0.5,
        pretrain_epochs=1.0,
        local_epochs=0.25,
        max_local_steps=4,
        finetune_steps=4,
        batch_size=32,
        pruning_steps=2,
        prob=0.5,
        calibration_batches=1,
    )
    run_dir = tmp_path_factory.mktemp("e2e")
    payload = run_scenario(scenario, run_dir)
    return run_dir, payload


def test_personalized_layers_never_leave_the_client(federation) -> None:
    assert len(RecordingFedHEI.log) == 2
    for round_log in RecordingFedHEI.log:
        assert len(round_log["replies"]) == 4
        for reply in round_log["replies"]:
            assert reply["personalized"], "the classifier found no personalized layer to keep home"
            sent_layers = {key.removesuffix(VALUES_SUFFIX).removesuffix(MASK_SUFFIX).rsplit(".", 1)[0] for key in reply["arrays"]}
            assert not sent_layers & set(reply["personalized"])


def _hand_average(before: dict, replies: list[dict], name: str) -> np.ndarray:
    """The masked weighted average written out weight by weight, independently of fedhei.federation.wire."""
    expected = before[name].astype(np.float64).reshape(-1).copy()
    numerator = np.zeros_like(expected)
    denominator = np.zeros_like(expected)
    for reply in replies:
        arrays = reply["arrays"]
        if name in arrays:
            values, keep = arrays[name].reshape(-1), np.ones(expected.size, dtype=bool)
        elif name + VALUES_SUFFIX in arrays:
            keep = np.unpackbits(arrays[name + MASK_SUFFIX], count=expected.size).astype(bool)
            values = np.zeros(expected.size)
            values[keep] = arrays[name + VALUES_SUFFIX]
        else:
            continue
        for index in range(expected.size):
            if keep[index]:
                numerator[index] += reply["weight"] * values[index]
                denominator[index] += reply["weight"]
    counted = denominator > 0
    expected[counted] = numerator[counted] / denominator[counted]
    return expected.reshape(before[name].shape)


def test_aggregated_generic_weights_equal_the_hand_computed_masked_average(federation) -> None:
    checked_sparse = 0
    for round_log in RecordingFedHEI.log:
        replies, before, result = round_log["replies"], round_log["sent"], round_log["result"]
        sparse_names = {key.removesuffix(VALUES_SUFFIX) for reply in replies for key in reply["arrays"] if key.endswith(VALUES_SUFFIX)}
        for name in sorted(sparse_names)[:6] + ["pos_embed", "norm.weight"]:
            np.testing.assert_allclose(result[name], _hand_average(before, replies, name), rtol=1e-5, atol=1e-6)
            checked_sparse += name in sparse_names
        personal_everywhere = set.intersection(*(set(reply["personalized"]) for reply in replies))
        for layer in personal_everywhere:
            np.testing.assert_array_equal(result[f"{layer}.weight"], before[f"{layer}.weight"])
    assert checked_sparse >= 6


def test_every_client_ends_with_its_own_model_matching_its_manifest(federation) -> None:
    run_dir, payload = federation
    assert len(payload["clients"]) == 4
    for client in range(4):
        folder = run_dir / "clients" / str(client)
        manifest = json.loads((folder / "manifest.json").read_text())
        tensors, _ = load_state(folder / "model.safetensors")
        assert sum(int(t.count_nonzero()) for t in tensors.values()) == manifest["params-nonzero"]
        assert sum(t.numel() for t in tensors.values()) == manifest["params-total"]
        assert manifest["bytes-on-disk"] == (folder / "model.safetensors").stat().st_size < manifest["bytes-dense"]
        assert 0.3 < manifest["compression"] < 0.6
        assert set(manifest["roles"].values()) == {"generic", "personalized"}
    results = json.loads((run_dir / "results.json").read_text())
    assert results["summary"]["clients"] == 4 and len(results["rounds"]) == 2
    assert all(r["bytes-up"] > 0 and r["failures"] == [] and r["aggregated"] == [0, 1, 2, 3] for r in results["rounds"])
    assert results["status"] == "complete" and results["failures"]["total"] == 0
    assert (run_dir / "report.md").read_text().startswith("# e2e")
