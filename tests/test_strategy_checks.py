"""Strict checks before aggregation, on real Flower messages but without a simulation."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MessageType, Metadata, MetricRecord, RecordDict

from fedhei.config.scenario import Scenario
from fedhei.errors import FedheiError
from fedhei.federation.wire import encode
from strategies import STRATEGIES, resolve_strategy
from strategies.fedhei import FedHEI

GLOBAL = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "a.bias": np.zeros(2, dtype=np.float32)}


def _strategy() -> FedHEI:
    strategy = FedHEI(Scenario(num_clients=4), run_dir="/nonexistent")
    strategy._current = ArrayRecord({name: Array(value) for name, value in GLOBAL.items()})
    return strategy


def _received_from(node: int) -> Metadata:
    """Metadata of a reply as the server receives it from ``node``."""
    return Metadata(run_id=1, message_id=f"reply-{node}", src_node_id=node, dst_node_id=0, reply_to_message_id=f"ins-{node}",
                    group_id="1", created_at=time.time(), ttl=3600.0, message_type=MessageType.TRAIN)


def _reply(node: int, arrays: dict[str, np.ndarray] | None = None, examples: float = 10.0, loss: float = 1.0, error: str = "") -> Message:
    if error:
        return Message(error=Error(code=0, reason=error), metadata=_received_from(node))
    content = RecordDict(
        {
            "arrays": ArrayRecord({name: Array(np.ascontiguousarray(value)) for name, value in (arrays or {}).items()}),
            "metrics": MetricRecord({"num-examples": examples, "train-loss": loss}),
            "roles": ConfigRecord({"generic": ["a"], "personalized": []}),
        }
    )
    return Message(content=content, metadata=_received_from(node))


def _good(node: int, scale: float, examples: float) -> Message:
    weight = GLOBAL["a.weight"] * scale
    keep = np.array([[1, 1, 0], [1, 0, 1]], dtype=bool)
    return _reply(node, encode({"a.weight": weight, "a.bias": GLOBAL["a.bias"] + scale}, {"a.weight": keep}), examples)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (_reply(9, error="ValueError: boom in train"), "client failed: ValueError: boom in train"),
        (_reply(9, {"a.weight": np.full((2, 3), np.nan, dtype=np.float32)}), "NaN"),
        (_reply(9, {"a.weight": np.ones((3, 3), dtype=np.float32)}), "shape"),
        (_reply(9, {"blocks.99.mlp.fc1.weight": np.ones(2, dtype=np.float32)}), "unknown layer name"),
        (_reply(9, {"a.bias": np.ones(2, dtype=np.float32)}, loss=float("nan")), "train-loss is NaN"),
        (_reply(9, {"a.bias": np.ones(2, dtype=np.float32)}, examples=0.0), "num-examples"),
        (_reply(9, {"a.bias::delta-i8": np.ones(2, dtype=np.int8), "a.bias::scale": np.zeros(1, dtype=np.float32)}), "finite and positive"),
    ],
    ids=["exception", "nan", "shape", "unknown-name", "nan-loss", "no-examples", "int8-zero-scale"],
)
def test_a_bad_update_is_left_out_with_its_reason_and_the_round_goes_on(bad: Message, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    strategy = _strategy()
    with caplog.at_level(logging.WARNING):
        arrays, _ = strategy.aggregate_train(1, [_good(1, 2.0, 10.0), bad, _good(2, 4.0, 30.0)])
    assert arrays is not None
    record = strategy.rounds[1]
    assert record.aggregated == 2 and len(record.excluded) == 1
    assert record.excluded[0]["node"] == 9 and reason in record.excluded[0]["reason"]
    assert reason in caplog.text
    weight = arrays["a.weight"].numpy()
    # Kept by both clients: the example-weighted mean (2*10 + 4*30) / 40 = 3.5 times the global.
    assert weight[0, 0] == pytest.approx(0.0) and weight[0, 1] == pytest.approx(3.5 * 1.0)
    # Pruned by both: the previous global value stays.
    assert weight[1, 1] == pytest.approx(GLOBAL["a.weight"][1, 1])
    np.testing.assert_allclose(arrays["a.bias"].numpy(), np.full(2, 3.5))


def test_a_round_where_every_update_is_bad_keeps_the_model() -> None:
    strategy = _strategy()
    arrays, metrics = strategy.aggregate_train(1, [_reply(3, error="crash")])
    assert arrays is None and metrics is None
    assert strategy.rounds[1].aggregated == 0


def test_strategies_resolve_by_name_and_by_import_path() -> None:
    assert resolve_strategy("fedhei") is FedHEI
    assert resolve_strategy("strategies.fedrep:FedRep") is STRATEGIES["fedrep"]
    with pytest.raises(FedheiError, match="unknown strategy"):
        resolve_strategy("fedprox-typo")
    with pytest.raises(FedheiError, match="not a subclass"):
        resolve_strategy("fedhei.config.scenario:Scenario")


def test_the_readme_example_strategy_works_as_written() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = readme.split("<!-- example:start -->")[1].split("<!-- example:end -->")[0]
    namespace: dict = {}
    exec(code.replace("```python", "").replace("```", ""), namespace)
    strategy = namespace["MaskedMedian"](Scenario(num_clients=4), run_dir="/nonexistent")
    strategy._current = ArrayRecord({name: Array(value) for name, value in GLOBAL.items()})
    arrays, _ = strategy.aggregate_train(1, [_good(1, 2.0, 10.0), _good(2, 4.0, 30.0), _good(3, 100.0, 1.0)])
    weight = arrays["a.weight"].numpy()
    # Kept by all three: the median (4x) ignores the outlier (100x), whatever the weights.
    assert weight[0, 1] == pytest.approx(4.0 * GLOBAL["a.weight"][0, 1])
    assert weight[1, 1] == pytest.approx(GLOBAL["a.weight"][1, 1])
