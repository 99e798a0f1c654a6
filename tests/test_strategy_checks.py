"""Strict checks before aggregation, on real Flower messages but without a simulation."""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MessageType, Metadata, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode
from flwr.supercore.task_identity import TaskIdentity

from fedhei.config.scenario import Scenario
from fedhei.errors import FedheiError, RunFailed
from fedhei.federation.server import FederationServer
from fedhei.federation.wire import encode
from strategies import STRATEGIES, resolve_strategy
from strategies.base import RoundLog, failure_reason
from strategies.directory import ClientDirectory, exchange, stop_waiting_when
from strategies.fedhei import FedHEI

GLOBAL = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "a.bias": np.zeros(2, dtype=np.float32)}


def _strategy(sampled: list[int], cls: type[FedHEI] = FedHEI) -> FedHEI:
    """A strategy mid-round: these partitions were sampled (node id = partition id here)."""
    strategy = cls(Scenario(num_clients=10), run_dir="/nonexistent")
    strategy.directory = ClientDirectory({client: client for client in range(10)})
    strategy.server = FederationServer(strategy.policy, GLOBAL, strategy.head, strategy.scenario.server_settings())
    strategy.rounds[1] = RoundLog(1, sampled=sampled)
    return strategy


def _received_from(node: int) -> Metadata:
    """Metadata of a reply as the server receives it from ``node``."""
    return Metadata(run_id=1, message_id=f"reply-{node}", src_node_id=node, dst_node_id=0, reply_to_message_id=f"ins-{node}",
                    group_id="1", created_at=time.time(), ttl=3600.0, message_type=MessageType.TRAIN)


def _reply(node: int, arrays: dict[str, np.ndarray] | None = None, examples: float = 10.0, loss: float = 1.0, error: str = "",
           code: int = ErrorCode.CLIENT_APP_RAISED_EXCEPTION) -> Message:
    if error:
        return Message(error=Error(code=code, reason=error), metadata=_received_from(node))
    content = RecordDict(
        {
            "arrays": ArrayRecord({name: Array(np.ascontiguousarray(value)) for name, value in (arrays or {}).items()}),
            "metrics": MetricRecord({"num-examples": examples, "train-loss": loss}),
            "roles": ConfigRecord({"generic": ["a"], "personalized": []}),
        }
    )
    return Message(content=content, metadata=_received_from(node))


def _raw_reply(node: int, name: str, array: Array) -> Message:
    """A reply carrying one Flower ``Array`` as given, whatever its bytes say."""
    reply = _reply(node, {})
    reply.content.array_records["arrays"][name] = array
    return reply


def _npy(value: np.ndarray) -> bytes:
    return Array(value).data


def _good(node: int, scale: float, examples: float) -> Message:
    weight = GLOBAL["a.weight"] * scale
    keep = np.array([[1, 1, 0], [1, 0, 1]], dtype=bool)
    return _reply(node, encode({"a.weight": weight, "a.bias": GLOBAL["a.bias"] + scale}, {"a.weight": keep}), examples)


@pytest.mark.parametrize(
    ("bad", "kind", "reason"),
    [
        (_reply(9, error="ValueError: boom in train"), "crash", "ValueError: boom in train"),
        (_reply(9, error="ValueError: gone", code=ErrorCode.NODE_UNAVAILABLE), "drop", "ValueError: gone"),
        (None, "timeout", "no reply within round-timeout"),
        (_reply(9, {"a.weight": np.full((2, 3), np.nan, dtype=np.float32)}), "invalid", "NaN"),
        (_reply(9, {"a.weight": np.ones((3, 3), dtype=np.float32)}), "invalid", "shape"),
        (_reply(9, {"blocks.99.mlp.fc1.weight": np.ones(2, dtype=np.float32)}), "invalid", "unknown layer name"),
        (_reply(9, {"a.bias": np.ones(2, dtype=np.float32)}, loss=float("nan")), "invalid", "train-loss is NaN"),
        (_reply(9, {"a.bias": np.ones(2, dtype=np.float32)}, examples=0.0), "invalid", "num-examples"),
        (_reply(9, {"a.bias::delta-i8": np.ones(2, dtype=np.int8), "a.bias::scale": np.zeros(1, dtype=np.float32)}),
         "invalid", "finite and positive"),
        (_raw_reply(9, "a.weight", Array(dtype="float32", shape=(2, 3), stype="numpy.ndarray",
                                         data=_npy(np.ones((3, 3), dtype=np.float32)))), "invalid", "shape (3, 3)"),
        (_raw_reply(9, "a.bias", Array(dtype="float32", shape=(2,), stype="numpy.ndarray", data=b"not an array")),
         "invalid", "not a readable array"),
        (_raw_reply(9, "a.bias", Array(dtype="float32", shape=(2,), stype="torch.Tensor",
                                       data=_npy(np.ones(2, dtype=np.float32)))), "invalid", "serialized as 'torch.Tensor'"),
    ],
    ids=["exception", "drop", "timeout", "nan", "shape", "unknown-name", "nan-loss", "no-examples", "int8-zero-scale",
         "declared-shape-differs", "unreadable-bytes", "not-numpy"],
)
def test_a_failed_client_is_left_out_with_its_kind_and_reason_and_the_round_goes_on(
    bad: Message | None, kind: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    strategy = _strategy(sampled=[1, 2, 9])
    replies = [_good(2, 4.0, 30.0), _good(1, 2.0, 10.0)] + ([bad] if bad is not None else [])
    with caplog.at_level(logging.INFO):
        arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    record = strategy.rounds[1]
    assert record.aggregated == [1, 2]
    assert [(f["client"], f["phase"], f["kind"]) for f in record.failures] == [(9, "train", kind)]
    assert reason in record.failures[0]["reason"] and reason in caplog.text
    assert record.to_json()["failure-counts"] == {kind: 1}
    weight = arrays["a.weight"].numpy()
    # Kept by both clients: the example-weighted mean (2*10 + 4*30) / 40 = 3.5 times the global.
    assert weight[0, 0] == pytest.approx(0.0) and weight[0, 1] == pytest.approx(3.5 * 1.0)
    # Pruned by both: the previous global value stays.
    assert weight[1, 1] == pytest.approx(GLOBAL["a.weight"][1, 1])
    np.testing.assert_allclose(arrays["a.bias"].numpy(), np.full(2, 3.5))


def test_a_round_where_every_update_is_bad_keeps_the_model() -> None:
    strategy = _strategy(sampled=[3])
    arrays, metrics = strategy.aggregate_train(1, [_reply(3, error="crash")])
    assert arrays is None and metrics is None
    assert strategy.rounds[1].aggregated == []


def test_flower_wrapped_exceptions_keep_only_their_message() -> None:
    wrapped = "<class 'flwr.clientapp.client_app.ClientAppException'>:<'\nException ClientAppException occurred. Message: injected crash (fault-crash)'>"
    assert failure_reason(_reply(3, error=wrapped)) == ("crash", "injected crash (fault-crash)")


def test_more_failures_than_the_limit_stop_the_run_with_the_most_common_reason() -> None:
    strategy = _strategy(sampled=[1, 2, 3, 4])
    strategy.aggregate_train(1, [_good(1, 2.0, 10.0), _reply(2, error="disk full"), _reply(3, error="disk full")])
    with pytest.raises(RunFailed, match=r"3 of 4 sampled clients failed.*crash: disk full \(2x\)") as stopped:
        strategy._stop_if_too_many_failed(1)
    assert stopped.value.stopped_round == 1
    lenient = _strategy(sampled=[1, 2, 3, 4])
    lenient.scenario = lenient.scenario.replace(max_failed_fraction=0.75)
    lenient.aggregate_train(1, [_good(1, 2.0, 10.0), _reply(2, error="disk full"), _reply(3, error="disk full")])
    lenient._stop_if_too_many_failed(1)


def test_replies_are_aggregated_in_partition_order_whatever_order_they_arrive_in() -> None:
    orders = [[_good(1, 2.0, 10.0), _good(2, 4.0, 30.0), _good(3, 7.0, 3.0)], [_good(3, 7.0, 3.0), _good(1, 2.0, 10.0), _good(2, 4.0, 30.0)]]
    results = []
    for replies in orders:
        strategy = _strategy(sampled=[1, 2, 3])
        arrays, _ = strategy.aggregate_train(1, replies)
        results.append(arrays["a.weight"].numpy().tobytes() + arrays["a.bias"].numpy().tobytes())
        assert strategy.rounds[1].aggregated == [1, 2, 3]
    assert results[0] == results[1]


def test_replies_checked_on_arrival_aggregate_as_if_checked_at_the_round_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server decodes each reply as it arrives; the round's end then uses that work, failures included."""
    replies = [_good(1, 2.0, 10.0), _reply(2, {"a.weight": np.ones((3, 3), dtype=np.float32)}), _good(3, 7.0, 3.0)]
    at_the_end = _strategy(sampled=[1, 2, 3])
    expected, _ = at_the_end.aggregate_train(1, replies)
    on_arrival = _strategy(sampled=[1, 2, 3])
    for reply in replies:
        on_arrival.check_on_arrival(reply)

    def checked_twice(*_: object) -> None:
        raise AssertionError("a reply checked on arrival was checked again")

    monkeypatch.setattr(on_arrival, "check_reply", checked_twice)
    arrays, _ = on_arrival.aggregate_train(1, replies)
    assert arrays is not None and expected is not None
    assert {name: arrays[name].numpy().tobytes() for name in arrays} == {name: expected[name].numpy().tobytes() for name in expected}
    assert on_arrival.rounds[1].failures == at_the_end.rounds[1].failures
    assert [f["kind"] for f in on_arrival.rounds[1].failures] == ["invalid"]


def test_strategies_resolve_by_name_and_by_import_path() -> None:
    assert resolve_strategy("fedhei") is FedHEI
    assert resolve_strategy("strategies.fedrep:FedRep") is STRATEGIES["fedrep"]
    with pytest.raises(FedheiError, match="unknown strategy"):
        resolve_strategy("fedprox-typo")
    with pytest.raises(FedheiError, match="not a subclass"):
        resolve_strategy("fedhei.config.scenario:Scenario")


@pytest.mark.parametrize("page", ["README.md", "docs/strategies.md"])
def test_the_documented_strategy_tables_list_the_registry_in_its_order(page: str) -> None:
    """The registry is the one list of strategies; a page's table must follow it, not list them again its own way."""
    text = (Path(__file__).resolve().parents[1] / page).read_text()
    table = re.search(r"^\| name \|.*?\n(?=[^|])", text, flags=re.MULTILINE | re.DOTALL)
    assert table is not None
    assert re.findall(r"^\| `([a-z-]+)` \|", table.group(0), flags=re.MULTILINE) == list(STRATEGIES)


def test_the_documented_example_strategy_works_as_written() -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "custom-strategy.md").read_text()
    code = page.split("<!-- example:start -->")[1].split("<!-- example:end -->")[0]
    namespace: dict = {}
    exec(code.replace("```python", "").replace("```", ""), namespace)
    strategy = _strategy(sampled=[1, 2, 3], cls=namespace["MaskedMedian"])
    arrays, _ = strategy.aggregate_train(1, [_good(1, 2.0, 10.0), _good(2, 4.0, 30.0), _good(3, 100.0, 1.0)])
    weight = arrays["a.weight"].numpy()
    # Kept by all three: the median (4x) ignores the outlier (100x), whatever the weights.
    assert weight[0, 1] == pytest.approx(4.0 * GLOBAL["a.weight"][0, 1])
    assert weight[1, 1] == pytest.approx(GLOBAL["a.weight"][1, 1])


def test_a_returning_fedhei_client_receives_only_the_parameters_it_shares(monkeypatch: pytest.MonkeyPatch) -> None:
    """Newcomers get the whole model; a client that reported layer 'a' personalized gets everything but 'a'."""
    # Instruction messages take their sender from the running task, as on a SuperLink.
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    strategy = _strategy(sampled=[1, 2])
    strategy.scenario = strategy.scenario.replace(fraction_train=1.0)
    content = RecordDict(
        {
            "arrays": ArrayRecord({"a.bias": Array(np.zeros(2, dtype=np.float32))}),
            "metrics": MetricRecord({"num-examples": 10.0, "train-loss": 1.0}),
            "roles": ConfigRecord({"generic": [], "personalized": ["a"]}),
        }
    )
    personal = Message(content=content, metadata=_received_from(2))
    strategy.aggregate_train(1, [_good(1, 2.0, 10.0), personal])
    arrays = ArrayRecord({name: Array(value) for name, value in GLOBAL.items()})
    messages = {m.metadata.dst_node_id: m for m in strategy.configure_train(2, arrays, ConfigRecord(), grid=None)}
    sent = {node: set(m.content.array_records["arrays"].keys()) for node, m in messages.items()}
    assert sent.pop(2) == set()
    assert all(names == {"a.weight", "a.bias"} for names in sent.values()) and len(sent) == 9
    assert strategy.rounds[2].bytes_down == 9 * arrays.count_bytes()
    assert strategy.state_dict()["participants"] == {"1": [], "2": ["a"]}


class _CountingGrid:
    """Replies to one waiting message per pull, and remembers the most messages that waited at once."""

    def __init__(self) -> None:
        self.waiting: list[str] = []
        self.most = 0

    def push_messages(self, messages: list[object]) -> list[str]:
        ids = [f"m{len(self.waiting) + index}-{id(message)}" for index, message in enumerate(messages)]
        self.waiting += ids
        self.most = max(self.most, len(self.waiting))
        return ids

    def pull_messages(self, ids: set[str]) -> list[object]:
        answered = next(iter(sorted(ids)))
        self.waiting.remove(answered)
        return [type("Reply", (), {"metadata": type("Meta", (), {"reply_to_message_id": answered})()})()]


@pytest.mark.parametrize("in_flight, most", [(None, 7), (3, 3), (1, 1)])
def test_the_export_keeps_at_most_in_flight_messages_waiting_and_gets_every_reply(in_flight: int | None, most: int) -> None:
    grid = _CountingGrid()
    replies = exchange(grid, [object() for _ in range(7)], timeout=10.0, in_flight=in_flight)  # type: ignore[arg-type]
    assert len(replies) == 7 and not grid.waiting
    assert grid.most == most


def test_a_stopped_engine_ends_only_the_waits_of_its_own_server_thread() -> None:
    stopped = threading.Event()
    stopped.set()
    cut_short: list[int] = []

    def server_of_the_stopped_simulation() -> None:
        stop_waiting_when(stopped)
        cut_short.append(len(exchange(_StalledGrid(), [object()], timeout=30.0)))  # type: ignore[arg-type]

    thread = threading.Thread(target=server_of_the_stopped_simulation)
    started = time.monotonic()
    thread.start()
    thread.join(timeout=10)
    assert cut_short == [0] and time.monotonic() - started < 5
    # This thread was never bound, so another simulation's end leaves its exchange whole.
    assert len(exchange(_CountingGrid(), [object() for _ in range(3)], timeout=10.0)) == 3  # type: ignore[arg-type]


class _StalledGrid(_CountingGrid):
    """Never replies."""

    def pull_messages(self, ids: set[str]) -> list[object]:
        return []
