"""Real CIFAR-10 end to end (marked slow: minutes of CPU; run with ``pytest -m slow``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
QUICKSTART = Path(__file__).resolve().parents[1] / "scenarios" / "quickstart.toml"


def test_quickstart_runs_on_real_cifar10_and_prints_its_summary(real_tarball: Path, tmp_path: Path, fedhei_cli) -> None:
    result = fedhei_cli("run", str(QUICKSTART), "--set", "num-server-rounds=1", "--set", "num-clients=4",
                        "--set", "pretrain-epochs=1.0", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "mean client accuracy" in result.stdout and "of FedAvg's" in result.stdout
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]
    assert summary["clients"] == 4
    assert 0.0 < summary["compression-mean"] < 1.0
