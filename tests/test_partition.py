from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedhei import atomic
from fedhei.config.scenario import Scenario
from fedhei.data import partition
from fedhei.data.partition import PartitionSpec, majority_class_rate, make_partition
from fedhei.errors import FedheiError

# The label layout of CIFAR-10: 5,000 training and 1,000 test images per class.
TRAIN_LABELS = np.repeat(np.arange(10), 5000)
TEST_LABELS = np.repeat(np.arange(10), 1000)


def spec(**settings: Any) -> PartitionSpec:
    """The split a scenario with these settings makes."""
    return Scenario(**settings).partition_spec()


@pytest.fixture(scope="module")
def dirichlet_split():
    return make_partition(TRAIN_LABELS, TEST_LABELS, spec(num_clients=20, dirichlet_alpha=0.1, seed=7))


def test_every_training_image_lands_in_exactly_one_client_or_the_public_slice(dirichlet_split) -> None:
    everything = np.concatenate([*dirichlet_split.train_indices, dirichlet_split.public_indices])
    assert len(everything) == len(TRAIN_LABELS)
    assert np.array_equal(np.sort(everything), np.arange(len(TRAIN_LABELS)))
    assert len(dirichlet_split.public_indices) == 5000
    assert np.array_equal(np.bincount(TRAIN_LABELS[dirichlet_split.public_indices]), np.full(10, 500))


def test_same_seed_same_split_and_another_seed_another(dirichlet_split) -> None:
    again = make_partition(TRAIN_LABELS, TEST_LABELS, spec(num_clients=20, dirichlet_alpha=0.1, seed=7))
    other = make_partition(TRAIN_LABELS, TEST_LABELS, spec(num_clients=20, dirichlet_alpha=0.1, seed=8))
    for ours, theirs in zip(dirichlet_split.train_indices, again.train_indices, strict=True):
        assert np.array_equal(ours, theirs)
    for ours, theirs in zip(dirichlet_split.test_indices, again.test_indices, strict=True):
        assert np.array_equal(ours, theirs)
    assert any(not np.array_equal(a, b) for a, b in zip(dirichlet_split.train_indices, other.train_indices, strict=False))


def test_alpha_point_one_is_strongly_skewed(dirichlet_split) -> None:
    shares = dirichlet_split.label_counts.max(axis=1) / dirichlet_split.label_counts.sum(axis=1)
    assert np.median(shares) > 0.4


def test_each_client_test_split_follows_its_training_label_proportions(dirichlet_split) -> None:
    for client, counts in enumerate(dirichlet_split.label_counts):
        test_counts = np.bincount(TEST_LABELS[dirichlet_split.test_indices[client]], minlength=10)
        expected = counts * 0.2
        assert np.all(np.abs(test_counts - expected) <= 0.5 + 1e-9), (client, counts, test_counts)
        assert len(np.unique(dirichlet_split.test_indices[client])) == len(dirichlet_split.test_indices[client])


def test_pathological_gives_each_client_at_most_k_classes() -> None:
    split = make_partition(TRAIN_LABELS, TEST_LABELS, spec(partition="pathological", num_clients=20, classes_per_client=2))
    assert all(np.count_nonzero(counts) <= 2 for counts in split.label_counts)
    assert all(majority_class_rate(TEST_LABELS[idx]) >= 0.5 for idx in split.test_indices)


def test_iid_is_balanced_even_though_the_source_is_sorted_by_class() -> None:
    split = make_partition(TRAIN_LABELS, TEST_LABELS, spec(partition="iid", num_clients=10))
    assert split.label_counts.min() > 300


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"dirichlet-alpha": 0.0}, "dirichlet-alpha is 0.0; it must be > 0"),
        ({"dirichlet-alpha": -1.0}, "dirichlet-alpha"),
        ({"num-clients": 0}, "num-clients is 0; it must be >= 1"),
        ({"public-fraction": 1.0}, "public-fraction"),
        ({"classes-per-client": 11}, "classes-per-client is 11; it must be in [1, 10]"),
        ({"test-ratio": 0.0}, "test-ratio"),
    ],
)
def test_bad_split_settings_are_user_errors(settings: dict, message: str) -> None:
    with pytest.raises(FedheiError, match=re.escape(message)):
        Scenario.from_mapping(settings)


def test_more_clients_than_images_is_a_user_error() -> None:
    labels = np.repeat(np.arange(10), 3)
    with pytest.raises(FedheiError, match="num-clients"):
        make_partition(labels, labels, replace(spec(partition="iid", num_clients=100), public_fraction=0.0))


def test_a_split_is_computed_once_per_cache_and_read_back_equal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two empty caches compute the same split; a third call reads it from disk without the partitioner;
    a damaged cache file is computed again; another spec never reads it."""
    split_spec = spec(num_clients=20, dirichlet_alpha=0.1, seed=7)
    splits = []
    for root in ("first", "second"):
        monkeypatch.setenv("FEDHEI_CACHE", str(tmp_path / root))
        splits.append(make_partition(TRAIN_LABELS, TEST_LABELS, split_spec))
    stored = list((tmp_path / "second" / "partitions").glob("*.npz"))
    assert len(stored) == 1

    def no_partitioner(*_: object) -> None:
        raise AssertionError("the partitioner ran although the split was cached")

    real_partitioner = partition._partition_private
    monkeypatch.setattr(partition, "_partition_private", no_partitioner)
    splits.append(make_partition(TRAIN_LABELS, TEST_LABELS, split_spec))
    with pytest.raises(AssertionError, match="the partitioner ran"):
        make_partition(TRAIN_LABELS, TEST_LABELS, replace(split_spec, seed=8))
    monkeypatch.setattr(partition, "_partition_private", real_partitioner)
    stored[0].write_bytes(b"not an npz file")
    splits.append(make_partition(TRAIN_LABELS, TEST_LABELS, split_spec))
    for other in splits[1:]:
        for ours, theirs in zip(splits[0].train_indices, other.train_indices, strict=True):
            assert ours.dtype == theirs.dtype == np.int64 and np.array_equal(ours, theirs)


def test_a_cache_that_cannot_be_written_costs_time_not_the_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDHEI_CACHE", str(tmp_path))

    def read_only(*_: object) -> None:
        raise FedheiError(f"cannot write {tmp_path} (Read-only file system); choose a writable path")

    monkeypatch.setattr(atomic, "write_with", read_only)
    split_spec = spec(num_clients=5, seed=3)
    uncached = make_partition(TRAIN_LABELS, TEST_LABELS, split_spec)
    assert not (tmp_path / "partitions").exists()
    monkeypatch.undo()
    monkeypatch.setenv("FEDHEI_CACHE", str(tmp_path / "writable"))
    for ours, theirs in zip(uncached.train_indices, make_partition(TRAIN_LABELS, TEST_LABELS, split_spec).train_indices, strict=True):
        assert np.array_equal(ours, theirs)
