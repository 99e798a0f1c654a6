"""Which clients a round asks, by partition id: the server's draw, kept in the core so that
anything replaying a federation without Flower (``fedhei.experiments.plain``) asks the same users."""

from __future__ import annotations

from fedhei import seeding

# The seed streams of the two draws per round.
SAMPLE_TRAIN = "sample-train"
SAMPLE_EVALUATE = "sample-evaluate"


def sample_clients(seed: int, population: int, fraction: float, server_round: int, purpose: str) -> list[int]:
    """Partition ids drawn from the (seed, purpose, round) stream: the same users in every run and every strategy."""
    count = min(population, max(1, int(round(population * fraction))))
    chosen = seeding.rng(seed, purpose, server_round).choice(population, size=count, replace=False)
    return sorted(int(client) for client in chosen)
