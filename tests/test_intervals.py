"""The two-stage bootstrap of fedhei.reporting.intervals on cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from fedhei.reporting.intervals import BETTER, NOT_RESOLVED, WORSE, bootstrap, worst_decile


def test_a_constant_difference_gives_a_zero_width_interval_at_that_value() -> None:
    interval = bootstrap([np.full(20, 0.25), np.full(30, 0.25), np.full(10, 0.25)])
    assert interval.estimate == interval.low == interval.high == 0.25
    assert interval.verdict() == BETTER
    assert (interval.groups, interval.units) == (3, 60)


def test_symmetric_noise_around_zero_is_not_resolved() -> None:
    noise = np.random.default_rng(4).normal(0.0, 0.05, size=40)
    interval = bootstrap([np.concatenate([noise, -noise]), np.concatenate([-noise, noise])])
    assert interval.estimate == pytest.approx(0.0, abs=1e-12)
    assert interval.low < 0 < interval.high
    assert interval.verdict() == NOT_RESOLVED


def test_a_clear_shift_is_resolved_in_its_direction() -> None:
    rng = np.random.default_rng(5)
    better = bootstrap([rng.normal(0.05, 0.01, size=25) for _ in range(3)])
    worse = bootstrap([rng.normal(-0.05, 0.01, size=25) for _ in range(3)])
    assert 0 < better.low < better.estimate < better.high and better.verdict() == BETTER
    assert worse.low < worse.estimate < worse.high < 0 and worse.verdict() == WORSE


def test_the_same_inputs_and_seed_give_the_same_interval_and_another_seed_another() -> None:
    groups = [np.random.default_rng(6).normal(0.0, 1.0, size=15) for _ in range(2)]
    assert bootstrap(groups, seed=3) == bootstrap(groups, seed=3)
    assert bootstrap(groups, seed=3) != bootstrap(groups, seed=4)


def test_seeds_are_resampled_so_disagreeing_seeds_widen_the_interval() -> None:
    """Two seeds whose clients agree within each seed but not across: resampling clients alone would
    give a narrow interval around the midpoint; resampling seeds spans both seeds' values."""
    groups = [np.full(50, 0.10) + np.linspace(-1e-3, 1e-3, 50), np.full(50, -0.02) + np.linspace(-1e-3, 1e-3, 50)]
    interval = bootstrap(groups)
    assert interval.estimate == pytest.approx(0.04)
    assert interval.low == pytest.approx(-0.02, abs=2e-3) and interval.high == pytest.approx(0.10, abs=2e-3)
    assert interval.verdict() == NOT_RESOLVED


def test_the_statistic_is_averaged_over_seeds() -> None:
    groups = [np.arange(10, dtype=float), np.arange(10, 30, dtype=float)]
    interval = bootstrap(groups, worst_decile)
    assert interval.estimate == pytest.approx((np.percentile(groups[0], 10) + np.percentile(groups[1], 10)) / 2)
    assert interval.low <= interval.estimate <= interval.high


@pytest.mark.parametrize("groups", [[], [np.array([])], [np.ones((2, 2))]])
def test_empty_or_malformed_groups_are_refused(groups: list) -> None:
    with pytest.raises(ValueError, match="non-empty 1-D"):
        bootstrap(groups)
