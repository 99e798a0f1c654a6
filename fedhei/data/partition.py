"""Non-IID splits of CIFAR-10 over simulated users, built on flwr-datasets' partitioners.

The partitioners run over a ``datasets.Dataset`` made from local label arrays (no hub
access) that carries each image's index, so a partition is a list of index arrays
into the in-memory training set. Each client also gets a test split drawn from the
CIFAR-10 test set with its training shard's label proportions, since a personalized
model is judged on the distribution its user actually sees.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from importlib.metadata import version

import numpy as np

from fedhei import seeding
from fedhei.cache import cache_dir, config_hash
from fedhei.data.array_cache import read_arrays, write_arrays
from fedhei.errors import FedheiError

log = logging.getLogger(__name__)
logging.getLogger("datasets").setLevel(logging.ERROR)


class PartitionKind(StrEnum):
    IID = "iid"
    DIRICHLET = "dirichlet"
    PATHOLOGICAL = "pathological"


@dataclass(frozen=True)
class PartitionSpec:
    """Everything that decides a split; equal specs give equal splits. A scenario's
    ``partition_spec()`` builds it from its checked settings."""

    kind: PartitionKind
    num_clients: int
    alpha: float
    classes_per_client: int
    public_fraction: float
    test_ratio: float
    seed: int
    # The public slice's seed. A federation passes its base model's seed, so the slice (which the base
    # was pre-trained on) is the same whatever the run's seed; None: the split's own seed.
    public_seed: int | None = None
    min_partition_size: int = 10


@dataclass(frozen=True)
class Partition:
    """Index arrays into the training and test sets, one pair per client."""

    spec: PartitionSpec
    train_indices: list[np.ndarray]
    test_indices: list[np.ndarray]
    public_indices: np.ndarray
    label_counts: np.ndarray = field(repr=False)

    @property
    def num_clients(self) -> int:
        return len(self.train_indices)


def make_partition(train_labels: np.ndarray, test_labels: np.ndarray, spec: PartitionSpec) -> Partition:
    """Split the training set over ``spec.num_clients`` users plus an optional public slice."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    public = public_slice(train_labels, spec.public_fraction, spec.seed if spec.public_seed is None else spec.public_seed)
    # Shuffled, because the IID partitioner cuts contiguous runs and sources come sorted by class.
    private = seeding.rng(spec.seed, "partition-order").permutation(np.setdiff1d(np.arange(len(train_labels)), public))
    if spec.num_clients > len(private):
        raise FedheiError(f"num-clients is {spec.num_clients} but only {len(private)} training images "
                          "remain for clients; use fewer clients or a smaller public-fraction")
    train_indices = _cached_private_split(private, train_labels[private], spec)
    label_counts = np.stack([np.bincount(train_labels[idx], minlength=num_classes) for idx in train_indices])
    test_indices = [
        _matching_test_split(counts, test_labels, spec.test_ratio, seeding.rng(spec.seed, "client-test-split", client))
        for client, counts in enumerate(label_counts)
    ]
    return Partition(spec, train_indices, test_indices, public, label_counts)


def public_slice(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The training images no client holds, for pre-training the shared base model.

    The same fraction of every class, so a base model pre-trained on it sees all classes.
    """
    rng = seeding.rng(seed, "public-slice")
    chosen = [
        rng.permutation(np.flatnonzero(labels == label))[: round(fraction * int((labels == label).sum()))]
        for label in np.unique(labels)
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _cached_private_split(indices: np.ndarray, labels: np.ndarray, spec: PartitionSpec) -> list[np.ndarray]:
    """:func:`_partition_private`, kept on disk under the cache root for the same spec and the same images.

    Every worker of a simulation splits the data once before its first round; from the
    cache that costs milliseconds instead of importing flwr-datasets (and through it
    pandas, matplotlib and seaborn) and running the partitioner: seconds per worker, and
    a fixed cost of every run. The key holds every field of the spec, a digest of the
    indices and labels split and the partitioner's version, so a different split, data
    set or partitioner never reads it.
    """
    digest = hashlib.sha256(np.ascontiguousarray(indices, dtype=np.int64).tobytes()
                            + np.ascontiguousarray(labels, dtype=np.int64).tobytes()).hexdigest()
    key = config_hash({"spec": asdict(spec), "images": digest, "flwr-datasets": version("flwr-datasets")}, length=32)
    cache_file = cache_dir() / "partitions" / f"{key}.npz"
    stored = read_arrays(cache_file, ("indices", "offsets"))
    if stored is not None:
        return np.split(stored["indices"], stored["offsets"])
    shards = _partition_private(indices, labels, spec)
    offsets = np.cumsum([len(shard) for shard in shards[:-1]], dtype=np.int64)
    try:
        write_arrays(cache_file, {"indices": np.concatenate(shards).astype(np.int64), "offsets": offsets})
    except FedheiError as error:
        # The split is only a cache entry: a read-only cache costs the next worker time, never the run.
        log.warning("the split was not cached: %s", error)
    return shards


def _partition_private(indices: np.ndarray, labels: np.ndarray, spec: PartitionSpec) -> list[np.ndarray]:
    from datasets import Dataset
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, PathologicalPartitioner

    builders = {
        PartitionKind.IID: lambda: IidPartitioner(num_partitions=spec.num_clients),
        PartitionKind.DIRICHLET: lambda: DirichletPartitioner(
            num_partitions=spec.num_clients,
            partition_by="label",
            alpha=spec.alpha,
            min_partition_size=min(spec.min_partition_size, len(indices) // spec.num_clients),
            self_balancing=False,
            seed=seeding.seed_for(spec.seed, "dirichlet") % 2**32,
        ),
        PartitionKind.PATHOLOGICAL: lambda: PathologicalPartitioner(
            num_partitions=spec.num_clients,
            partition_by="label",
            num_classes_per_partition=spec.classes_per_client,
            class_assignment_mode="first-deterministic",
            seed=seeding.seed_for(spec.seed, "pathological") % 2**32,
        ),
    }
    partitioner = builders[spec.kind]()
    partitioner.dataset = Dataset.from_dict({"label": labels.tolist(), "index": indices.tolist()})
    try:
        shards = [np.asarray(partitioner.load_partition(client)["index"], dtype=np.int64) for client in range(spec.num_clients)]
    except ValueError as error:
        raise FedheiError(f"cannot split {len(indices)} images over {spec.num_clients} clients with "
                          f"{spec.kind.value}: {error}; use fewer clients or a larger alpha") from error
    empty = [client for client, shard in enumerate(shards) if len(shard) == 0]
    if empty:
        raise FedheiError(f"{spec.kind.value} partition leaves clients {empty[:5]} without images; "
                          "use fewer clients, more classes per client or a larger alpha")
    return [np.sort(shard) for shard in shards]


def _matching_test_split(
    train_counts: np.ndarray, test_labels: np.ndarray, ratio: float, rng: np.random.Generator
) -> np.ndarray:
    """Draw test images so each class keeps its share of the client's training shard.

    Class counts are ``ratio`` times the training counts (at least one image overall),
    so proportions match up to rounding; splits of different clients may overlap,
    which is harmless since no one trains on them.
    """
    wanted = np.floor(train_counts * ratio + 0.5).astype(np.int64)
    if wanted.sum() == 0:
        wanted[np.argmax(train_counts)] = 1
    chosen = []
    for label, count in enumerate(wanted):
        pool = np.flatnonzero(test_labels == label)
        chosen.append(rng.choice(pool, size=min(int(count), len(pool)), replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def majority_class_rate(test_labels: np.ndarray) -> float:
    """Accuracy of always guessing the most common class: the floor a model must beat."""
    if len(test_labels) == 0:
        return 0.0
    return float(np.bincount(test_labels).max() / len(test_labels))
