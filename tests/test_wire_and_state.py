from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Context, RecordDict

from clients.state import ContextStateStore, DiskStateStore
from fedhei.federation.state import ClientState
from fedhei.federation.wire import DecodedTensor, UpdateError, decode, encode, masked_average, nbytes, npy_array
from fedhei.method.roles import GENERIC, PERSONALIZED, RoleMap


def test_sparse_encoding_round_trips_and_costs_a_bit_per_pruned_weight() -> None:
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(64, 32)).astype(np.float32)
    keep = rng.random((64, 32)) > 0.7
    weight[~keep] = 0
    encoded = encode({"w": weight, "b": np.ones(64, dtype=np.float32)}, {"w": keep})
    decoded = decode(encoded, {"w": np.zeros((64, 32), np.float32), "b": np.zeros(64, np.float32)})
    np.testing.assert_array_equal(decoded["w"].values, weight)
    np.testing.assert_array_equal(decoded["w"].keep, keep)
    assert decoded["b"].keep.all()
    assert nbytes(encoded) == 4 * int(keep.sum()) + 64 * 32 // 8 + 4 * 64


def test_decode_refuses_values_that_disagree_with_their_mask() -> None:
    encoded = encode({"w": np.ones((2, 4), dtype=np.float32)}, {"w": np.ones((2, 4), dtype=bool)})
    encoded["w::values"] = encoded["w::values"][:-1]
    with pytest.raises(UpdateError, match="values for 8 kept"):
        decode(encoded, {"w": np.zeros((2, 4), np.float32)})


def test_masked_average_weighs_by_examples_over_keepers_only() -> None:
    current = {"w": np.array([5.0, 5.0, 5.0], dtype=np.float32)}
    first = decode(encode({"w": np.array([1.0, 0.0, 0.0])}, {"w": np.array([1, 0, 0], bool)}), current)
    second = decode(encode({"w": np.array([3.0, 2.0, 0.0])}, {"w": np.array([1, 1, 0], bool)}), current)
    merged = masked_average(current, [(1.0, first), (3.0, second)])
    np.testing.assert_allclose(merged["w"], [(1 * 1 + 3 * 3) / 4, 2.0, 5.0])


def test_unmasked_updates_average_to_the_same_bits_as_updates_with_an_all_true_mask() -> None:
    """The shortcut for clients that send no mask is an optimisation only: same products, same sums, same order."""
    rng = np.random.default_rng(0)
    current = {"w": rng.normal(size=(4, 5)).astype(np.float32)}
    sent = [rng.normal(size=(4, 5)).astype(np.float32) for _ in range(3)]
    weights = [3.0, 17.0, 1.5]
    unmasked = [decode(encode({"w": value}, {}), current) for value in sent]
    assert all(update["w"].unmasked for update in unmasked)
    with_mask = [{"w": DecodedTensor(update["w"].values, np.ones((4, 5), dtype=bool))} for update in unmasked]
    partly = decode(encode({"w": sent[0]}, {"w": rng.random((4, 5)) > 0.3}), current)
    for tail in ([], [(2.0, partly)]):
        fast = masked_average(current, list(zip(weights, unmasked, strict=True)) + tail)
        general = masked_average(current, list(zip(weights, with_mask, strict=True)) + tail)
        assert fast["w"].tobytes() == general["w"].tobytes()


def _state() -> ClientState:
    roles = RoleMap(("a", "b"), (0.9, 0.1), "top-fraction", 0.5, {"a": PERSONALIZED, "b": GENERIC})
    return ClientState(
        personal={"a.weight": torch.randn(3, 2), "a.bias": torch.randn(3)},
        masks={"b.weight": torch.tensor([[True, False], [False, True]])},
        roles=roles,
        step=2,
        classified_round=1,
        rounds_trained=2,
    )


def _assert_same(loaded: ClientState, original: ClientState) -> None:
    assert loaded.roles == original.roles and loaded.step == 2 and loaded.rounds_trained == 2
    for name, value in original.personal.items():
        assert torch.equal(loaded.personal[name], value)
    assert torch.equal(loaded.masks["b.weight"], original.masks["b.weight"])


def test_context_store_survives_a_rebuilt_client_app() -> None:
    context = Context(run_id=1, node_id=7, node_config={"partition-id": 0}, state=RecordDict(), run_config={})
    assert ContextStateStore(context).load(before_round=2) is None
    original = _state()
    ContextStateStore(context).save(original, server_round=1)
    _assert_same(ContextStateStore(context).load(before_round=2), original)


def test_disk_store_reads_back_what_it_wrote_per_client(tmp_path: Path) -> None:
    original = _state()
    DiskStateStore(tmp_path, 3).save(original, server_round=2)
    assert [p.name for p in (tmp_path / "client-3").iterdir()] == ["round-2.safetensors"]
    _assert_same(DiskStateStore(tmp_path, 3).load(before_round=3), original)
    assert DiskStateStore(tmp_path, 4).load(before_round=3) is None


def test_disk_store_keeps_the_state_a_round_started_from_until_the_next_round_saves(tmp_path: Path) -> None:
    """A round cut short (a killed run) must be able to start again from the state it started from."""
    store = DiskStateStore(tmp_path, 0)
    first, second = _state(), _state()
    second.step = 3
    store.save(first, server_round=1)
    store.save(second, server_round=4)
    # Round 4 is being redone after a kill: it starts from round 1's state, not its own half-done one.
    assert store.load(before_round=4).step == first.step
    assert store.load(before_round=5).step == 3
    third = _state()
    third.step = 4
    store.save(third, server_round=6)
    assert sorted(p.name for p in (tmp_path / "client-0").iterdir()) == ["round-4.safetensors", "round-6.safetensors"]
    assert store.load(before_round=6).step == 3
    # Round 1's state was superseded once round 4's was the base of a saved round.
    assert store.load(before_round=2) is None


@pytest.mark.parametrize(
    "value",
    [np.arange(12, dtype=np.float32).reshape(3, 4), np.arange(5, dtype=np.int8), np.array(2.5, dtype=np.float32),
     np.zeros((0, 3), dtype=np.float16), np.array([True, False, True]), np.arange(6, dtype=">f8").reshape(2, 3)],
    ids=["float32-matrix", "int8", "scalar", "empty", "bool", "big-endian"],
)
def test_npy_array_reads_what_np_save_wrote_without_copying(value: np.ndarray) -> None:
    data = _saved(value)
    read = npy_array(data, str(value.dtype), value.shape)
    assert read.dtype == value.dtype and read.shape == value.shape and np.array_equal(read, value)
    assert not read.flags.owndata and not read.flags.writeable


def test_npy_array_falls_back_to_np_load_where_the_bytes_are_not_what_their_declaration_says() -> None:
    fortran = np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    read = npy_array(_saved(fortran), "float32", (2, 3))
    assert np.array_equal(read, fortran) and read.flags.writeable and read.flags.f_contiguous
    # The bytes, not the declaration, say what the array is: the shape check downstream sees (3, 3).
    assert npy_array(_saved(np.ones((3, 3), dtype=np.float32)), "float32", (2, 3)).shape == (3, 3)
    with pytest.raises(ValueError):
        npy_array(b"not an array", "float32", (2,))


def _saved(value: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, value, allow_pickle=False)
    return buffer.getvalue()
