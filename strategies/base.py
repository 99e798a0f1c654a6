"""The common server side of every fedhei strategy: a thin layer over Flower's FedAvg.

It keeps Flower's message plumbing and its configure/aggregate hooks, and adds what
personalized, pruned federations need and a benchmark can trust: clients sampled by
partition id from a named seed stream (the same users in every run and every
strategy), replies processed in partition order (so results do not depend on the
order Ray runs clients in), every failure recorded with its reason (crash, drop,
timeout, invalid update) and a run stopped when too many fail, strict checks of
every update, masked weighted averaging per tensor over the clients that send it,
byte counting on what is actually sent, a checkpoint after every round, and the
final per-client export. A strategy module only says which :class:`ClientPolicy`
its clients follow.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode, SType
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result

from fedhei.config.scenario import Scenario
from fedhei.errors import RunFailed
from fedhei.federation.policy import ClientPolicy
from fedhei.federation.sampling import SAMPLE_EVALUATE, SAMPLE_TRAIN, sample_clients
from fedhei.federation.server import FederationServer, evaluate_global, measures_global_model
from fedhei.federation.wire import DecodedTensor, UpdateError, decode, masked_average, npy_array
from fedhei.models.registry import head_parameter_names
from fedhei.reporting.intervals import worst_decile
from fedhei.reporting.progress import RoundLines, RoundObserver
from fedhei.reporting.results import perplexity_summary
from strategies.checkpoint import ServerCheckpoint
from strategies.directory import ClientDirectory, exchange

log = logging.getLogger(__name__)

# Failure kinds, as results.json counts them.
CRASH, DROP, TIMEOUT, INVALID = "crash", "drop", "timeout", "invalid"
# The final export's deadline is never shorter than this (seconds): see export_timeout.
EXPORT_MIN_TIMEOUT_S = 300.0


@dataclass
class RoundLog:
    """What happened in one round, as it goes into results.json (clients by partition id)."""

    round: int
    sampled: list[int] = field(default_factory=list)
    aggregated: list[int] = field(default_factory=list)
    evaluated: list[int] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    bytes_down: int = 0
    bytes_up: int = 0
    train: dict[str, float] = field(default_factory=dict)
    evaluate: dict[str, float] = field(default_factory=dict)
    # Per client: its training and evaluation metrics in this round.
    clients: dict[int, dict[str, float]] = field(default_factory=dict)
    # The global model after this round on the whole test set ({} when not measured this round).
    global_eval: dict[str, float] = field(default_factory=dict)

    def fail(self, client: int, phase: str, kind: str, reason: str) -> None:
        self.failures.append({"client": client, "phase": phase, "kind": kind, "reason": reason})

    def failed(self, phase: str) -> list[dict[str, Any]]:
        return [failure for failure in self.failures if failure["phase"] == phase]

    def to_json(self) -> dict[str, Any]:
        """Kebab-case keys, like every other key in results.json."""
        payload = {name.replace("_", "-"): value for name, value in dataclasses.asdict(self).items()}
        payload["failures"] = sorted(self.failures, key=lambda f: (f["phase"], f["client"]))
        payload["failure-counts"] = dict(sorted(Counter(f["kind"] for f in self.failures).items()))
        payload["clients"] = [{"client": client, **self.clients[client]} for client in sorted(self.clients)]
        return payload

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> RoundLog:
        values = {key.replace("-", "_"): value for key, value in payload.items() if key != "failure-counts"}
        values["clients"] = {int(row["client"]): {k: v for k, v in row.items() if k != "client"} for row in payload["clients"]}
        values["global_eval"] = values.pop("global_eval", {})
        return cls(**values)


def accuracy_summary(accuracies: Iterable[float]) -> dict[str, float]:
    """Mean, median and worst-decile client accuracy: personalization is judged per user."""
    values = np.asarray([value for value in accuracies if np.isfinite(value)], dtype=np.float64)
    if values.size == 0:
        return {}
    return {
        "accuracy-mean": float(values.mean()),
        "accuracy-median": float(np.median(values)),
        "accuracy-worst-decile": float(worst_decile(values)),
    }


def failure_reason(reply: Message) -> tuple[str, str]:
    """(kind, reason) of an error reply: a node that went away is a drop, anything else a crash.

    Flower wraps a ClientApp's exception as ``<class ...>:<'... Message: text'>``; the
    text alone is the reason, so reasons read cleanly and repeat exactly across runs.
    """
    reason = reply.error.reason
    if "Message: " in reason:
        reason = reason.split("Message: ", 1)[1].removesuffix("'>")
    kind = DROP if reply.error.code == ErrorCode.NODE_UNAVAILABLE else CRASH
    return kind, reason.strip()


def most_common_reason(failures: Iterable[dict[str, Any]]) -> str:
    counts = Counter(f"{f['kind']}: {f['reason']}" for f in failures)
    reason, count = counts.most_common(1)[0]
    return f"{reason} ({count}x)"


class PersonalizedStrategy(FedAvg):
    """Base of every fedhei strategy; subclasses set ``policy`` (and ``name``)."""

    name: ClassVar[str] = "base"
    policy: ClassVar[ClientPolicy] = ClientPolicy()

    def __init__(self, scenario: Scenario, run_dir: str, run_token: str = "", observer: RoundObserver | None = None) -> None:
        super().__init__(
            fraction_train=scenario.fraction_train,
            fraction_evaluate=scenario.fraction_evaluate,
            min_train_nodes=1,
            min_evaluate_nodes=1 if scenario.fraction_evaluate > 0 else 0,
            min_available_nodes=scenario.num_clients,
        )
        self.scenario = scenario
        self.run_dir = run_dir
        self.run_token = run_token
        self.observer = observer or RoundLines(self.name)
        self.directory: ClientDirectory | None = None
        self.rounds: dict[int, RoundLog] = {}
        self.completed_round = 0
        self.consensus_generic: list[str] | None = None
        # The global model, the server optimizer and who has trained: built from the initial arrays in start().
        self.server: FederationServer | None = None
        # A checkpoint's participants and server-optimizer state, until start() builds the server.
        self._resumed: tuple[dict[int, tuple[str, ...]], dict[str, np.ndarray]] = ({}, {})
        # The base model on the whole test set (round 0 of the global curve), when measured.
        self.global_base: dict[str, float] = {}
        # Wall-clock seconds per round and of the final export, kept apart from results.json (which must repeat exactly).
        self.timings: dict[int, float] = {}
        self.export_seconds: float | None = None
        # How many roll-call and export messages may wait at once (see strategies.directory.exchange); None: all.
        self.in_flight: int | None = None
        self._evaluate_sampled: dict[int, list[int]] = {}
        # Training replies checked and decoded as they arrived, by message id, until the round aggregates them.
        self._checked: dict[str, tuple[float, dict[str, DecodedTensor]] | UpdateError] = {}

    def summary(self) -> None:
        log.info("%s: policy %s, %d clients, %.0f%% per round", type(self).__name__, self.policy.to_config(),
                 self.scenario.num_clients, 100 * self.scenario.fraction_train)

    # -- state, for checkpoints ---------------------------------------------------------------

    @cached_property
    def head(self) -> tuple[str, ...]:
        """The model's head parameters (its adapter's), where FedPer, FedRep, LG-FedAvg and FedBABU split it."""
        return head_parameter_names(self.scenario.model)

    def state_dict(self) -> dict[str, Any]:
        """Everything besides the global arrays that the next round depends on (JSON-able)."""
        assert self.server is not None, "a checkpoint is written after a round"
        return {
            "rounds": [self.rounds[number].to_json() for number in sorted(self.rounds)],
            "participants": {str(client): list(layers) for client, layers in sorted(self.server.participants.items())},
            "consensus-generic": self.consensus_generic,
            "timings": {str(number): seconds for number, seconds in sorted(self.timings.items())},
            "global-base": self.global_base,
        }

    def load_state_dict(self, state: dict[str, Any], completed_round: int, optimizer: dict[str, np.ndarray]) -> None:
        self.rounds = {int(entry["round"]): RoundLog.from_json(entry) for entry in state["rounds"]}
        participants = {int(client): tuple(layers) for client, layers in state["participants"].items()}
        self._resumed = (participants, optimizer)
        self.global_base = dict(state.get("global-base", {}))
        self.consensus_generic = state["consensus-generic"]
        self.timings = {int(number): float(seconds) for number, seconds in state["timings"].items()}
        self.completed_round = completed_round

    # -- sampling and messages ------------------------------------------------------------------

    def sample(self, fraction: float, server_round: int, purpose: str) -> list[int]:
        """Partition ids drawn from the (seed, purpose, round) stream: the same users in every run."""
        return sample_clients(self.scenario.seed, self.scenario.num_clients, fraction, server_round, purpose)

    def round_config(self, server_round: int, final: bool = False) -> ConfigRecord:
        config: dict[str, Any] = {
            **self.policy.to_config(),
            "server-round": server_round,
            "run-dir": self.run_dir,
            "run-token": self.run_token,
            "final": final,
            "use-consensus": self.consensus_generic is not None,
            "consensus-generic": list(self.consensus_generic or []),
        }
        return ConfigRecord(config)

    def _messages(self, partitions: list[int], arrays: ArrayRecord, config: ConfigRecord, message_type: str) -> list[Message]:
        """One message per client: the whole model to newcomers, only what it shares to the rest.

        A client that has trained keeps its personal parameters itself (for FedHEI, the
        layers it reported personalized), so sending them again would only inflate the
        download; newcomers need the full base model.
        """
        assert self.directory is not None, "the client directory is discovered before any round"
        scenario = ConfigRecord(self.scenario.to_mapping())
        assert self.server is not None, "the server is built before any round"
        server = self.server
        downloads: dict[tuple[str, ...] | None, ArrayRecord] = {None: arrays}

        def download(partition: int) -> ArrayRecord:
            layers = server.participants.get(partition)
            if layers not in downloads:
                downloads[layers] = ArrayRecord({name: arrays[name] for name in server.download_names(partition)})
            return downloads[layers]

        return [
            Message(
                content=RecordDict({"arrays": download(partition), "config": config, "scenario": scenario}),
                message_type=message_type,
                dst_node_id=self.directory.node_of[partition],
            )
            for partition in partitions
        ]

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        record = self.rounds.setdefault(server_round, RoundLog(server_round))
        record.sampled = self.sample(self.scenario.fraction_train, server_round, SAMPLE_TRAIN)
        messages = self._messages(record.sampled, arrays, self.round_config(server_round), MessageType.TRAIN)
        record.bytes_down = sum(message.content.array_records["arrays"].count_bytes() for message in messages)
        return messages

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        if self.scenario.fraction_evaluate == 0:
            self._evaluate_sampled[server_round] = []
            return []
        chosen = self.sample(self.scenario.fraction_evaluate, server_round, SAMPLE_EVALUATE)
        self._evaluate_sampled[server_round] = chosen
        return self._messages(chosen, arrays, self.round_config(server_round), MessageType.EVALUATE)

    def _by_partition(self, replies: Iterable[Message]) -> dict[int, Message]:
        assert self.directory is not None
        partition_of = self.directory.partition_of
        return {partition_of[reply.metadata.src_node_id]: reply for reply in replies}

    # -- aggregation --------------------------------------------------------------------------

    def check_reply(self, reply: Message, current: dict[str, np.ndarray]) -> tuple[float, dict[str, DecodedTensor]]:
        """Weight and decoded tensors of one reply (decoded against the global model it was trained from),
        or :class:`UpdateError` saying why not."""
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
        return weight, decode(_reply_arrays(content.array_records["arrays"]), current)

    def check_on_arrival(self, reply: Message) -> None:
        """Check and decode a training reply while other clients still train, so the round's end only averages.

        The result is what :meth:`check_reply` gives at aggregation (it depends on the reply and on
        the global model, which a round does not change before it aggregates), so it is kept and used there.
        """
        assert self.server is not None, "the server is built before any round"
        if reply.has_error():
            return
        try:
            self._checked[reply.metadata.message_id] = self.check_reply(reply, self.server.current)
        except UpdateError as error:
            self._checked[reply.metadata.message_id] = error

    def _checked_reply(self, reply: Message, current: dict[str, np.ndarray]) -> tuple[float, dict[str, DecodedTensor]]:
        checked = self._checked.pop(reply.metadata.message_id, None)
        if checked is None:
            return self.check_reply(reply, current)
        if isinstance(checked, UpdateError):
            raise checked
        return checked

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        record = self.rounds.setdefault(server_round, RoundLog(server_round))
        assert self.server is not None, "the server is built before any round"
        current = self.server.current
        received = self._by_partition(replies)
        accepted: list[tuple[float, dict[str, DecodedTensor]]] = []
        accepted_replies: list[Message] = []
        for client in record.sampled:
            reply = received.get(client)
            if reply is None:
                record.fail(client, "train", TIMEOUT, f"no reply within round-timeout ({self.scenario.round_timeout:g} s)")
                continue
            if reply.has_error():
                record.fail(client, "train", *failure_reason(reply))
                continue
            record.bytes_up += reply.content.array_records["arrays"].count_bytes() if "arrays" in reply.content.array_records else 0
            try:
                accepted.append(self._checked_reply(reply, current))
            except UpdateError as error:
                record.fail(client, "train", INVALID, str(error))
                continue
            accepted_replies.append(reply)
            record.aggregated.append(client)
            roles = reply.content.config_records.get("roles")
            self.server.joined(client, roles.get("personalized", []) if roles is not None else ())
            record.clients.setdefault(client, {}).update(
                {key: value for key, value in _numbers(reply.content.metric_records["metrics"]).items() if key != "client-id"})
        for failure in record.failed("train"):
            log.info("round %d: left out client %d (%s): %s", server_round, failure["client"], failure["kind"], failure["reason"])
        if not accepted:
            return None, None
        merged = self.server.aggregate(accepted, self.combine)
        metrics = self._weighted_metrics(accepted_replies)
        record.train = dict(metrics)
        self.after_aggregation(server_round, accepted_replies)
        return ArrayRecord({name: Array(np.ascontiguousarray(value)) for name, value in merged.items()}), MetricRecord(metrics)

    def combine(self, current: dict[str, np.ndarray], updates: list[tuple[float, dict[str, DecodedTensor]]]) -> dict[str, np.ndarray]:
        """The aggregation rule proper, on checked and decoded updates in partition order; override it to try another.
        The server optimizer (``server-optimizer``) then steps with what it returns as the clients' average."""
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
        record = self.rounds.setdefault(server_round, RoundLog(server_round))
        received = self._by_partition(replies)
        metrics: list[dict[str, float]] = []
        for client in self._evaluate_sampled.get(server_round, []):
            reply = received.get(client)
            if reply is None:
                record.fail(client, "evaluate", TIMEOUT, f"no reply within round-timeout ({self.scenario.round_timeout:g} s)")
            elif reply.has_error():
                record.fail(client, "evaluate", *failure_reason(reply))
            else:
                numbers = _numbers(reply.content.metric_records["metrics"])
                record.evaluated.append(client)
                record.clients.setdefault(client, {}).update(
                    {key: value for key, value in numbers.items() if key not in ("num-examples", "client-id")})
                metrics.append(numbers)
        if not metrics:
            return None
        summary = accuracy_summary(m["accuracy"] for m in metrics)
        if all("majority-class-rate" in m for m in metrics):
            summary["majority-class-rate-mean"] = float(np.mean([m["majority-class-rate"] for m in metrics]))
        summary.update(perplexity_summary(metrics))
        summary["clients"] = float(len(metrics))
        record.evaluate = summary
        return MetricRecord(summary)

    # -- the rounds ---------------------------------------------------------------------------

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Any = None,
    ) -> Result:
        """Flower's round loop, made resumable and strict about failures.

        Starts after ``completed_round`` (0, or the checkpoint's), writes a checkpoint
        after each round, and stops the run (:class:`RunFailed`) when a round loses more
        than ``max-failed-fraction`` of its sampled clients.
        """
        timeout = self.scenario.round_timeout
        if self.directory is None:
            self.directory = ClientDirectory.discover(grid, ConfigRecord(self.scenario.to_mapping()), self.scenario.num_clients,
                                                      in_flight=self.in_flight)
        participants, optimizer = self._resumed
        self.server = FederationServer(self.policy, {name: array.numpy() for name, array in initial_arrays.items()},
                                       self.head, self.scenario.server_settings())
        self.server.participants = dict(participants)
        self.server.optimizer.load_state_arrays(optimizer)
        if self.completed_round == 0 and self._global_eval_due(0):
            self.global_base = evaluate_global(self.scenario, self.server.current)
        result = Result(arrays=initial_arrays)
        for server_round in range(self.completed_round + 1, num_rounds + 1):
            started = time.perf_counter()
            messages = list(self.configure_train(server_round, result.arrays, train_config or ConfigRecord(), grid))
            self.observer.round_started(server_round, num_rounds, len(messages))
            replies = exchange(grid, messages, timeout, on_reply=self._train_reply_arrived)
            arrays, _ = self.aggregate_train(server_round, replies)
            self._checked.clear()
            self._stop_if_too_many_failed(server_round)
            if arrays is not None:
                result.arrays = arrays
            if self._global_eval_due(server_round):
                self.rounds[server_round].global_eval = evaluate_global(self.scenario, self.server.current)
            evaluation = list(self.configure_evaluate(server_round, result.arrays, evaluate_config or ConfigRecord(), grid))
            self.aggregate_evaluate(server_round, exchange(grid, evaluation, timeout) if evaluation else [])
            self.completed_round = server_round
            self.timings[server_round] = time.perf_counter() - started
            self._checkpoint(result.arrays)
            self.observer.round_finished(self.rounds[server_round], num_rounds, self.timings[server_round])
        if not any(self.rounds[number].aggregated for number in self.rounds):
            raise RunFailed("no client update was aggregated in any round; see the failures in results.json")
        return result

    def _train_reply_arrived(self, reply: Message) -> None:
        self.check_on_arrival(reply)
        self.observer.reply_received()

    def _global_eval_due(self, server_round: int) -> bool:
        """Whether the global model is measured on the whole test set after ``server_round`` (0: the base)."""
        every = self.scenario.global_eval_every
        if not every or not measures_global_model(self.policy, self.scenario):
            return False
        return server_round % every == 0 or server_round == self.scenario.num_server_rounds

    def _stop_if_too_many_failed(self, server_round: int) -> None:
        record = self.rounds[server_round]
        failed = record.failed("train")
        if failed and len(failed) > self.scenario.max_failed_fraction * len(record.sampled):
            raise RunFailed(f"round {server_round}: {len(failed)} of {len(record.sampled)} sampled clients failed, more "
                            f"than max-failed-fraction {self.scenario.max_failed_fraction:g}; most common: "
                            f"{most_common_reason(failed)}", stopped_round=server_round)

    def _checkpoint(self, arrays: ArrayRecord) -> None:
        checkpoint = ServerCheckpoint(
            completed_round=self.completed_round,
            run_token=self.run_token,
            scenario=self.scenario.to_mapping(),
            strategy_state=self.state_dict(),
            arrays={name: array.numpy() for name, array in arrays.items()},
            optimizer=self.server.optimizer.state_arrays() if self.server is not None else {},
        )
        checkpoint.save(Path(self.run_dir))

    # -- the end of a run -----------------------------------------------------------------

    def export_timeout(self) -> float:
        """The final export asks every client: round-timeout per round's worth of clients (or per ``in_flight``
        of them, when fewer may wait at once), and never less than EXPORT_MIN_TIMEOUT_S, since each export
        also evaluates twice and writes its model (a round-timeout tight enough to cut hung clients in
        rounds must not cut exports)."""
        per_round = len(self.sample(self.scenario.fraction_train, 1, SAMPLE_TRAIN))
        at_once = min(per_round, self.in_flight) if self.in_flight else per_round
        return max(EXPORT_MIN_TIMEOUT_S, self.scenario.round_timeout * -(-self.scenario.num_clients // at_once))

    def finalize(self, grid: Grid, arrays: ArrayRecord) -> tuple[list[dict[str, float]], list[dict[str, Any]]]:
        """Every client builds, evaluates and exports its own model: their numbers, and the export failures."""
        assert self.directory is not None
        started = time.perf_counter()
        clients = list(range(self.scenario.num_clients))
        final_round = self.scenario.num_server_rounds
        messages = self._messages(clients, arrays, self.round_config(final_round, final=True), MessageType.EVALUATE)
        self.observer.export_started(len(messages))
        received = self._by_partition(exchange(grid, messages, self.export_timeout(),
                                               on_reply=lambda _: self.observer.reply_received(), in_flight=self.in_flight))
        finals, failures = [], []
        for client in clients:
            reply = received.get(client)
            if reply is None:
                failures.append({"client": client, "phase": "export", "kind": TIMEOUT,
                                 "reason": f"no reply within the export's timeout ({self.export_timeout():g} s)"})
            elif reply.has_error():
                kind, reason = failure_reason(reply)
                failures.append({"client": client, "phase": "export", "kind": kind, "reason": reason})
            else:
                finals.append(_numbers(reply.content.metric_records["metrics"]))
        for failure in failures:
            log.info("final export failed on client %d (%s): %s", failure["client"], failure["kind"], failure["reason"])
        self.export_seconds = time.perf_counter() - started
        return finals, failures


def _reply_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    """A reply's arrays as numpy; an array that is no readable ``.npy`` payload is an :class:`UpdateError`."""
    arrays = {}
    for name, array in record.items():
        if array.stype != SType.NUMPY:
            raise UpdateError(f"'{name}' is serialized as '{array.stype}', not '{SType.NUMPY}'")
        try:
            arrays[name] = npy_array(array.data, array.dtype, array.shape)
        except (ValueError, TypeError, EOFError) as error:
            raise UpdateError(f"'{name}' is not a readable array: {error}") from error
    return arrays


def _numbers(record: MetricRecord) -> dict[str, float]:
    return {key: float(value) for key, value in record.items()}
