"""Shared fixtures: an isolated cache per test session, and the real data when this machine has it."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import torch

from fedhei.config.scenario import Scenario
from fedhei.data.cifar10 import _SHARED_TARBALL
from fedhei.method.scoring import ScorerSettings
from fedhei.training.loops import TrainSettings

REPO = Path(__file__).resolve().parents[1]
REAL_TARBALL = (REPO / _SHARED_TARBALL).resolve()


def train_settings(**changes: Any) -> TrainSettings:
    """A default scenario's fine-tuning (its optimizer, a cosine within the call) with a test's own budget."""
    return dataclasses.replace(Scenario().finetune_settings(), **changes)


def scorer_settings(**changes: Any) -> ScorerSettings:
    """A default scenario's scoring settings with a test's own changes."""
    return dataclasses.replace(Scenario().scorer_settings(), **changes)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` skip with the reason where torch sees no CUDA device, so no test depends on a GPU."""
    if torch.cuda.is_available():
        return
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU; torch.cuda.is_available() is False on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(no_gpu)


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Tests never read or write the user's ~/.cache/fedhei."""
    root = tmp_path_factory.mktemp("fedhei-cache")
    patcher = pytest.MonkeyPatch()
    patcher.setenv("FEDHEI_CACHE", str(root))
    patcher.delenv("FEDHEI_CIFAR10", raising=False)
    yield root
    patcher.undo()


@pytest.fixture(autouse=True, scope="session")
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads and lose much when the CPU is shared."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def real_tarball() -> Path:
    if not REAL_TARBALL.is_file():
        pytest.skip(f"real CIFAR-10 JPEG tarball not found at {REAL_TARBALL} (only on machines with ../shared/data)")
    return REAL_TARBALL


def _run_fedhei(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedhei.cli", *arguments], capture_output=True, text=True, check=False)


@pytest.fixture
def fedhei_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the real command line in a fresh process, as a user would."""
    return _run_fedhei


@pytest.fixture
def expect_one_line_error() -> Callable[..., None]:
    """Bad input must give exit 2 and one line naming the problem, never a traceback."""

    def check(*arguments: str, message: str) -> None:
        result = _run_fedhei(*arguments)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
        assert result.stderr.strip().count("\n") == 0, result.stderr

    return check


def free_ports(count: int) -> list[int]:
    """Ports the kernel has just handed out, so they collide with nothing already listening."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in sockets]
