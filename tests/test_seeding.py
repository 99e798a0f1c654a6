from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from fedhei import seeding


def test_a_stream_is_fixed_by_its_name_alone() -> None:
    first = seeding.rng(3, "client", 2, 7).random(5)
    seeding.rng(3, "other", 1).random(100)
    np.testing.assert_array_equal(first, seeding.rng(3, "client", 2, 7).random(5))


def test_streams_with_different_names_differ() -> None:
    draws = {
        name: tuple(seeding.rng(*name).integers(0, 2**31, size=3))
        for name in [(0, "client", 1, 2), (0, "client", 2, 1), (1, "client", 1, 2), (0, "fault", 1, 2), (0, "client", 1)]
    }
    assert len(set(draws.values())) == len(draws)


def test_seeds_are_the_same_in_another_process() -> None:
    code = "from fedhei import seeding; print(seeding.seed_for(5, 'sample-train', 3))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert int(other) == seeding.seed_for(5, "sample-train", 3)
    assert 0 <= seeding.seed_for(5, "sample-train", 3) < 2**63


def test_torch_seeded_restores_the_global_generator() -> None:
    torch.manual_seed(11)
    expected_next = torch.rand(3)
    torch.manual_seed(11)
    with seeding.torch_seeded(0, "init"):
        inside = torch.rand(3)
    with seeding.torch_seeded(0, "init"):
        again = torch.rand(3)
    torch.testing.assert_close(inside, again)
    torch.testing.assert_close(torch.rand(3), expected_next)


def test_torch_generators_repeat_per_stream() -> None:
    first = torch.randperm(50, generator=seeding.torch_generator(0, "drops", 4))
    torch.testing.assert_close(first, torch.randperm(50, generator=seeding.torch_generator(0, "drops", 4)))
    assert not torch.equal(first, torch.randperm(50, generator=seeding.torch_generator(0, "drops", 5)))


def test_all_seeded_repeats_every_global_generator_and_restores_them() -> None:
    import random

    def draw() -> tuple[float, float, float]:
        return float(torch.rand(1)), float(np.random.rand()), random.random()

    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    expected_next = draw()
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    with seeding.all_seeded(0, "augment", 2):
        inside = draw()
    with seeding.all_seeded(0, "augment", 2):
        assert draw() == inside
    with seeding.all_seeded(0, "augment", 3):
        assert draw() != inside
    assert draw() == expected_next
