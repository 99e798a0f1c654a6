"""The common server side of every fedhei strategy: a thin layer over Flower's FedAvg.

It keeps Flower's message plumbing and adds what personalized, pruned federations
need: seeded sampling, a per-round scenario record, strict checks of every update
before aggregation, masked weighted averaging per tensor over the clients that send
it (Flower's ``aggregate_arrayrecords`` needs equal key sets and knows no masks),
byte counting on what is actually sent, and the final per-client export.
A strategy module only says which :class:`ClientPolicy` its clients follow.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedhei.config.scenario import Scenario
from fedhei.federation.policy import ClientPolicy, shared_parameters
from fedhei.federation.wire import DecodedTensor, UpdateError, decode, masked_average
from fedhei.reporting.progress import console
from fedhei.reporting.results import human_bytes

log = logging.getLogger(__name__)


@dataclass
class RoundLog:
    """What happened in one round, as it goes into results.json."""

    round: int
    sampled: int = 0
    aggregated: int = 0
    excluded: list[dict[str, Any]] = field(default_factory=list)
    bytes_down: int = 0
    bytes_up: int = 0
    train: dict[str, float] = field(default_factory=dict)
    evaluate: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Kebab-case keys, like every other key in results.json."""
        return {name.replace("_", "-"): value for name, value in dataclasses.asdict(self).items()}


def accuracy_summary(accuracies: Iterable[float]) -> dict[str, float]:
    """Mean, median and worst-decile client accuracy: personalization is judged per user."""
    values = np.asarray([value for value in accuracies if np.isfinite(value)], dtype=np.float64)
    if values.size == 0:
        return {}
    return {
        "accuracy-mean": float(values.mean()),
        "accuracy-median": float(np.median(values)),
        "accuracy-worst-decile": float(np.percentile(values, 10)),
    }


class PersonalizedStrategy(FedAvg):
    """Base of every fedhei strategy; subclasses set ``policy`` (and ``name``)."""

    name: ClassVar[str] = "base"
    policy: ClassVar[ClientPolicy] = ClientPolicy()

    def __init__(self, scenario: Scenario, run_dir: str, fraction_evaluate: float = 1.0) -> None:
        super().__init__(
            fraction_train=scenario.fraction_train,
            fraction_evaluate=fraction_evaluate,
            min_train_nodes=1,
            min_evaluate_nodes=1,
            min_available_nodes=scenario.num_clients,
        )
        self.scenario = scenario
        self.run_dir = run_dir
        self.rounds: dict[int, RoundLog] = {}
        self.consensus_generic: list[str] | None = None
        self._current: ArrayRecord | None = None
        # Node ids whose update was accepted once: they hold their own state from then on.
        self._participants: set[int] = set()

    def summary(self) -> None:
        log.info("%s: policy %s, %d clients, %.0f%% per round", type(self).__name__, self.policy.to_config(),
                 self.scenario.num_clients, 100 * self.scenario.fraction_train)

    # -- messages -------------------------------------------------------------------------

    def _sample(self, grid: Grid, fraction: float, server_round: int, salt: int) -> list[int]:
        """Seeded by scenario seed and round, so a rerun samples the same clients."""
        nodes = sorted(grid.get_node_ids())
        count = min(len(nodes), max(1, int(round(len(nodes) * fraction))))
        return sorted(random.Random(self.scenario.seed * 1_000_003 + server_round * 7 + salt).sample(nodes, count))

    def round_config(self, server_round: int, final: bool = False) -> ConfigRecord:
        config: dict[str, Any] = {
            **self.policy.to_config(),
            "server-round": server_round,
            "run-dir": self.run_dir,
            "final": final,
            "use-consensus": self.consensus_generic is not None,
            "consensus-generic": list(self.consensus_generic or []),
        }
        return ConfigRecord(config)

    def _messages(self, node_ids: list[int], arrays: ArrayRecord, config: ConfigRecord, message_type: str) -> list[Message]:
        """One message per node: the whole model to newcomers, only what the policy shares to the rest.

        A client that has trained keeps its personal parameters itself, so sending them
        again would only inflate the download; newcomers need the full base model.
        """
        scenario = ConfigRecord(self.scenario.to_mapping())
        shared = shared_parameters(self.policy, arrays.keys())
        returning = ArrayRecord({name: arrays[name] for name in arrays.keys() if name in shared})
        return [
            Message(
                content=RecordDict({"arrays": returning if node in self._participants else arrays, "config": config, "scenario": scenario}),
                message_type=message_type,
                dst_node_id=node,
            )
            for node in node_ids
        ]

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        self._current = arrays
        nodes = self._sample(grid, self.scenario.fraction_train, server_round, salt=0)
        record = self.rounds.setdefault(server_round, RoundLog(server_round))
        messages = self._messages(nodes, arrays, self.round_config(server_round), MessageType.TRAIN)
        record.sampled = len(nodes)
        record.bytes_down = sum(message.content.array_records["arrays"].count_bytes() for message in messages)
        return messages

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        nodes = self._sample(grid, self.fraction_evaluate, server_round, salt=1)
        return self._messages(nodes, arrays, self.round_config(server_round), MessageType.EVALUATE)

    # -- aggregation ----------------------------------------------------------------------

    def check_reply(self, reply: Message, current: dict[str, np.ndarray]) -> tuple[float, dict[str, DecodedTensor]]:
        """Weight and decoded tensors of one reply (decoded against the global model it was trained from),
        or :class:`UpdateError` saying why not."""
        if reply.has_error():
            raise UpdateError(f"client failed: {reply.error.reason}")
        content = reply.content
        if "arrays" not in content.array_records or "metrics" not in content.metric_records:
            raise UpdateError("reply lacks its 'arrays' or 'metrics' record")
        metrics = content.metric_records["metrics"]
        weight = float(metrics.get("num-examples", float("nan")))
        if not np.isfinite(weight) or weight <= 0:
            raise UpdateError(f"num-examples is {weight}")
        loss = float(metrics.get("train-loss", 0.0))
        if not np.isfinite(loss):
            raise UpdateError("train-loss is NaN")
        arrays = {name: array.numpy() for name, array in content.array_records["arrays"].items()}
        return weight, decode(arrays, current)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        record = self.rounds.setdefault(server_round, RoundLog(server_round))
        assert self._current is not None, "configure_train runs before aggregate_train"
        current = {name: array.numpy() for name, array in self._current.items()}
        accepted: list[tuple[float, dict[str, DecodedTensor]]] = []
        accepted_replies: list[Message] = []
        for reply in replies:
            node = reply.metadata.src_node_id
            try:
                accepted.append(self.check_reply(reply, current))
            except UpdateError as error:
                log.warning("round %d: left out node %s: %s", server_round, node, error)
                record.excluded.append({"node": int(node), "reason": str(error)})
                continue
            accepted_replies.append(reply)
            self._participants.add(int(node))
            record.bytes_up += reply.content.array_records["arrays"].count_bytes()
        record.aggregated = len(accepted)
        if not accepted:
            return None, None
        merged = self.combine(current, accepted)
        metrics = self._weighted_metrics(accepted_replies)
        record.train = dict(metrics)
        self.after_aggregation(server_round, accepted_replies)
        return ArrayRecord({name: Array(np.ascontiguousarray(value)) for name, value in merged.items()}), MetricRecord(metrics)

    def combine(self, current: dict[str, np.ndarray], updates: list[tuple[float, dict[str, DecodedTensor]]]) -> dict[str, np.ndarray]:
        """The aggregation rule proper, on checked and decoded updates; override it to try another."""
        return masked_average(current, updates)

    def after_aggregation(self, server_round: int, replies: list[Message]) -> None:
        """Fix the consensus layer set from the first round's role votes, when asked to."""
        if self.scenario.shared_layers != "consensus" or self.consensus_generic is not None:
            return
        votes: dict[str, int] = {}
        for reply in replies:
            roles = reply.content.config_records.get("roles")
            if roles is None:
                continue
            for name in roles.get("generic", []):
                votes[name] = votes.get(name, 0) + 1
            for name in roles.get("personalized", []):
                votes[name] = votes.get(name, 0) - 1
        if votes:
            self.consensus_generic = sorted(name for name, margin in votes.items() if margin >= 0)
            log.info("consensus after round %d: %d generic layers of %d", server_round, len(self.consensus_generic), len(votes))

    @staticmethod
    def _weighted_metrics(replies: list[Message]) -> dict[str, float]:
        weights = np.array([float(r.content.metric_records["metrics"]["num-examples"]) for r in replies])
        keys = set.intersection(*(set(r.content.metric_records["metrics"].keys()) for r in replies)) - {"num-examples", "client-id"}
        merged = {}
        for key in sorted(keys):
            values = np.array([float(r.content.metric_records["metrics"][key]) for r in replies])
            merged[key] = float(np.sum(values * weights) / np.sum(weights))
        return merged

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        good = [reply for reply in replies if not reply.has_error() and "metrics" in reply.content.metric_records]
        if not good:
            return None
        metrics = [reply.content.metric_records["metrics"] for reply in good]
        summary = accuracy_summary(float(m["accuracy"]) for m in metrics)
        summary["majority-class-rate-mean"] = float(np.mean([float(m["majority-class-rate"]) for m in metrics]))
        summary["clients"] = float(len(good))
        record = self.rounds.setdefault(server_round, RoundLog(server_round))
        record.evaluate = summary
        console.print(
            f"[{self.name}] round {server_round}/{self.scenario.num_server_rounds}: {record.aggregated}/{record.sampled} "
            f"updates, mean client acc {summary.get('accuracy-mean', float('nan')):.3f}, "
            f"up {human_bytes(record.bytes_up)}, down {human_bytes(record.bytes_down)}"
        )
        return MetricRecord(summary)

    # -- the end of a run -----------------------------------------------------------------

    def finalize(self, grid: Grid, arrays: ArrayRecord, num_rounds: int, timeout: float) -> list[dict[str, float]]:
        """Every client builds, evaluates and exports its own model; returns their manifests' numbers."""
        nodes = sorted(grid.get_node_ids())
        messages = self._messages(nodes, arrays, self.round_config(num_rounds, final=True), MessageType.EVALUATE)
        finals = []
        for reply in grid.send_and_receive(messages, timeout=timeout):
            if reply.has_error():
                log.warning("final export failed on node %s: %s", reply.metadata.src_node_id, reply.error.reason)
                continue
            finals.append({key: float(value) for key, value in reply.content.metric_records["metrics"].items()})
        return sorted(finals, key=lambda m: m["client-id"])
