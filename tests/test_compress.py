"""``fedhei compress`` end to end on the synthetic set with vit-micro, tiny budgets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from fedhei.cli import main
from fedhei.method.scoring import SCORER_NAMES
from fedhei.models.checkpoints import load_structured, save_checkpoint
from fedhei.models.registry import create_model, linear_layers


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("base") / "micro.safetensors"
    save_checkpoint(create_model("vit-micro"), path, {"model": "vit-micro"})
    return path


def compress(base: Path, out: Path, *extra: str) -> int:
    return main(["compress", "--base", str(base), "--data", "synthetic", "--finetune-epochs", "0.5",
                 "--recovery-epochs", "0.2", "--max-train", "300", "--calibration-batches", "1",
                 "--out", str(out), *extra])


def test_compress_compares_hei_with_its_baselines(base: Path, tmp_path: Path) -> None:
    out, models = tmp_path / "results.json", tmp_path / "models"
    assert compress(base, out, "--client", "1", "--prob", "0.3", "--prob", "0.6", "--pruning-steps", "2", "--structured",
                    "--save-models", str(models), "--fusion-clients", "2") == 0
    report = json.loads(out.read_text())
    rows = report["results"]
    assert len(rows) == 2 * 3 * 2 * 2  # probs x role maps x schedules x (masked, structured)
    assert {row["method"] for row in rows} == {"hei", "random", "uniform"}
    assert {row["schedule"] for row in rows} == {"one-shot", "2-step"}
    layers = [layer.name for layer in linear_layers(create_model("vit-micro"))]
    hei_roles = report["scoring"]["roles"]
    assert hei_roles["layers"] == layers and report["scoring"]["scorer"] == "sensing"
    personalized = math.ceil(0.25 * len(layers))
    # sensing's default design measures the 4 blocks and the head, one batch each, after the unperturbed pass
    assert report["scoring"]["forward-passes"] == (1 + 4 + 1) * 1
    for row in rows:
        assert 0.0 <= row["accuracy-after"] <= 1.0 and 0.0 <= row["accuracy-pruned"] <= 1.0
        assert row["accuracy-before"] == report["personal-accuracy"]
        assert set(row["roles"]) == set(layers)
        expected_count = 0 if row["method"] == "uniform" else personalized
        assert len(row["personalized"]) == expected_count
        assert row["scoring-forward-passes"] == (report["scoring"]["forward-passes"] if row["method"] == "hei" else 0)
    masked = {(row["prob"], row["method"], row["schedule"]): row for row in rows if row["pruning"] == "masked"}
    structured = {(row["prob"], row["method"], row["schedule"]): row for row in rows if row["pruning"] == "structured"}
    for key, row in masked.items():
        assert row["compression"] > 0 and structured[key]["bytes"] < row["bytes"]
        # Uniform pruning is matched to HEI's fraction of linear weights.
        hei = masked[(key[0], "hei", key[2])]
        assert masked[(key[0], "uniform", key[2])]["linear-compression"] == pytest.approx(hei["linear-compression"], abs=1e-3)
    assert masked[(0.6, "hei", "one-shot")]["compression"] > masked[(0.3, "hei", "one-shot")]["compression"]
    one_shot, buffered = masked[(0.6, "hei", "one-shot")], masked[(0.6, "hei", "2-step")]
    assert one_shot["params-kept"] == buffered["params-kept"]
    saved = structured[(0.6, "hei", "2-step")]["checkpoint"]
    assert saved and Path(saved).is_file()
    model = load_structured(saved)
    assert sum(param.numel() for param in model.parameters()) == structured[(0.6, "hei", "2-step")]["params-kept"]


    # Every scorer beside HEI's, against the exhaustive roles on the same model.
    compared = {row["scorer"]: row for row in report["scorers"]}
    assert set(compared) == {*SCORER_NAMES, "random roles"}
    # The next clients after the user whose shards fill the calibration batches.
    fusion = report["fusion-clients"]
    assert len(fusion) == 2 and fusion == sorted(fusion) and fusion[0] > 1
    exhaustive = compared["exhaustive"]
    assert exhaustive["agreement-with-exhaustive"] == 1.0 and exhaustive["spearman-with-exhaustive"] == pytest.approx(1.0)
    assert exhaustive["forward-passes"] == len(layers) + 1 and compared["magnitude"]["forward-passes"] == 0
    assert compared["fused-forest"]["forward-passes"] == 3 and compared["attention-entropy"]["forward-passes"] == 1
    for row in compared.values():
        assert 0.0 <= row["agreement-with-exhaustive"] <= 1.0 and len(row["personalized"]) == personalized
        assert [entry["prob"] for entry in row["pruning"]] == [0.3, 0.6]
        for entry in row["pruning"]:
            # Without --compare-recovery, nothing is fine-tuned after the prune.
            assert 0.0 <= entry["accuracy-pruned"] == entry["accuracy-after"] <= 1.0
    hei_one_shot = masked[(0.3, "hei", "one-shot")]["accuracy-pruned"]
    assert compared["sensing"]["pruning"][0]["accuracy-pruned"] == hei_one_shot


def test_compress_on_a_class_subset_with_another_scorer(base: Path, tmp_path: Path) -> None:
    out = tmp_path / "classes.json"
    assert compress(base, out, "--classes", "0,3,5", "--scorer", "fisher", "--role-rule", "relative",
                    "--role-threshold", "0.5", "--pruning-steps", "2", "--no-one-shot",
                    "--compare-scorers", "fisher,attention-entropy", "--compare-recovery") == 0
    report = json.loads(out.read_text())
    assert report["user"]["description"] == "classes 0,3,5" and report["user"]["train"] == 300
    assert {row["schedule"] for row in report["results"]} == {"2-step"}
    assert report["scoring"]["scorer"] == "fisher" and report["scoring"]["forward-passes"] == 1
    assert [row["scorer"] for row in report["scorers"]] == ["fisher", "attention-entropy", "random roles"]
    assert report["fusion-clients"] == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--prob", "1.5"], "prob is 1.5; it must be in [0, 1)"),
        (["--client", "99"], "--client"),
        (["--scorer", "nope"], "scorer is 'nope'"),
        (["--compare-scorers", "magnitude,nope"], "unknown scorer 'nope'"),
        (["--compare-scorers", "fused-linear", "--fusion-clients", "0"], "--fusion-clients"),
        (["--role-rule", "median"], "role-rule is 'median'"),
        (["--finetune-epochs", "0"], "finetune-epochs is 0.0; it must be > 0"),
        (["--classes", "4,12"], "--classes"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    assert compress(base, tmp_path / "bad.json", *arguments) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("fedhei: error:") and message in error and "\n" not in error
    assert not (tmp_path / "bad.json").exists()
