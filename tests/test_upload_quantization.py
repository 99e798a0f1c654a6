"""Quantized uploads: float16 and int8 changes from the global model, their error bounds, bytes and refusals."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from fedhei import seeding
from fedhei.config.scenario import Scenario
from fedhei.errors import FedheiError
from fedhei.federation.client_round import ClientJob, train_round
from fedhei.federation.policy import ClientPolicy, Pruning, Sharing, personal_parameters
from fedhei.federation.wire import MASK_SUFFIX, UpdateError, decode, encode
from fedhei.method.pruning import layer_ratios, magnitude_masks
from fedhei.method.roles import GENERIC, PERSONALIZED, RoleMap
from fedhei.models.registry import create_model, linear_layers

Arrays = dict[str, np.ndarray]
# float32 rounding of global + change, relative to the result.
FLOAT32_ROUNDING = 2.0**-24
NPY_HEADER = 128  # the .npy header of every array Flower serializes here (a 1-4 dimensional shape)


def _local_round() -> tuple[Arrays, Arrays, Arrays]:
    """The global model, a client's update after a round (weights moved by ~1e-3, half pruned) and its masks."""
    draws = seeding.rng(0, "test-upload-quantization")
    reference = {
        "w": draws.normal(0, 0.05, (64, 35)).astype(np.float32),
        "b": draws.normal(0, 0.05, 64).astype(np.float32),
        "norm.weight": np.ones(35, dtype=np.float32),
    }
    new = {name: (value + draws.normal(0, 1e-3, value.shape)).astype(np.float32) for name, value in reference.items()}
    keep = np.abs(new["w"]) >= np.median(np.abs(new["w"]))
    new["w"][~keep] = 0
    return reference, new, {"w": keep}


def test_int8_uploads_decode_within_half_a_step_of_the_change() -> None:
    reference, new, masks = _local_round()
    encoded = encode(new, masks, "int8", reference=reference)
    assert {encoded[f"{name}::delta-i8"].dtype for name in new} == {np.dtype(np.int8)}
    decoded = decode(encoded, reference)
    for name, sent in new.items():
        keep = decoded[name].keep
        scale = float(encoded[f"{name}::scale"][0])
        change = np.abs(sent - reference[name])[keep]
        # The step spans the change, not the weights: one per tensor, the largest change over 127.
        assert scale == pytest.approx(change.max() / 127, rel=1e-6)
        error = np.abs(decoded[name].values - sent)[keep]
        assert np.all(error <= scale / 2 + (np.abs(sent[keep]) + scale) * FLOAT32_ROUNDING)
    np.testing.assert_array_equal(decoded["w"].keep, masks["w"])
    assert decoded["b"].keep.all() and not decoded["w"].values[~masks["w"]].any()
    # Quantizing the weights themselves with one int8 scale would err twenty times more here.
    assert float(encoded["w::scale"][0]) * 20 < np.abs(new["w"]).max() / 127


def test_float16_uploads_decode_within_float16_rounding_of_the_change() -> None:
    reference, new, masks = _local_round()
    encoded = encode(new, masks, "float16", reference=reference)
    decoded = decode(encoded, reference)
    for name, sent in new.items():
        keep = decoded[name].keep
        assert encoded[f"{name}::delta-f16"].dtype == np.float16
        change = np.abs(sent - reference[name])[keep]
        # Half a float16 ulp of the change (2^-25 absolute in float16's subnormal range).
        bound = np.maximum(change * 2.0**-11, 2.0**-25) + np.abs(sent[keep]) * FLOAT32_ROUNDING * 2
        assert np.all(np.abs(decoded[name].values - sent)[keep] <= bound)


def test_a_tensor_whose_global_value_the_client_lacks_travels_float32_exactly() -> None:
    reference, new, masks = _local_round()
    encoded = encode(new, masks, "int8", reference={"w": reference["w"]})
    assert encoded["b"].dtype == np.float32 and "b::scale" not in encoded
    np.testing.assert_array_equal(decode(encoded, reference)["b"].values, new["b"])


def _int8_update() -> tuple[Arrays, Arrays]:
    reference, new, masks = _local_round()
    return encode(new, masks, "int8", reference=reference), reference


def _set(key: str, value: np.ndarray) -> Callable[[Arrays], None]:
    return lambda arrays: arrays.__setitem__(key, value)


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (lambda arrays: arrays.pop("w::scale"), "not a layout"),
        (_set("w::scale", np.zeros(1, np.float32)), "finite and positive"),
        (_set("w::scale", np.array([-0.01], np.float32)), "finite and positive"),
        (_set("w::scale", np.array([np.inf], np.float32)), "finite and positive"),
        (_set("w::scale", np.array([0.01], np.float64)), "expected float32 of shape (1,)"),
        (_set("w::scale", np.array([0.01, 0.01], np.float32)), "expected float32 of shape (1,)"),
        (_set("b::scale", np.array([3e38], np.float32)), "overflows float32"),
        (lambda arrays: arrays.__setitem__("w::delta-i8", arrays["w::delta-i8"].astype(np.int16)), "expected int8"),
        (lambda arrays: arrays["b::delta-i8"].__setitem__(0, -128), "code -128"),
        (lambda arrays: arrays.__setitem__("w::delta-i8", arrays["w::delta-i8"][:-1]), "values for 1120 kept"),
        (lambda arrays: arrays.__setitem__("w", np.zeros((64, 35), np.float32)), "not a layout"),
        (lambda arrays: arrays.__setitem__("b::delta-f16", np.zeros(64, np.float32)), "not a layout"),
        (lambda arrays: arrays.__setitem__("norm.weight::mask", np.full(4, 255, np.uint8)), "expected uint8 of (5,)"),
    ],
    ids=["no-scale", "zero-scale", "negative-scale", "infinite-scale", "float64-scale", "two-scales", "overflow",
         "int16-codes", "code-128", "short-codes", "two-layouts", "two-payloads", "mask-size"],
)
def test_bad_int8_payloads_are_refused_with_their_reason(corrupt: Callable[[Arrays], None], reason: str) -> None:
    arrays, reference = _int8_update()
    corrupt(arrays)
    with pytest.raises(UpdateError, match=re.escape(reason)):
        decode(arrays, reference)


def test_mask_padding_bits_must_be_zero() -> None:
    reference = {"w": np.zeros((3, 3), np.float32)}
    arrays = encode({"w": np.ones((3, 3), np.float32)}, {"w": np.ones((3, 3), bool)}, "int8", reference=reference)
    arrays["w" + MASK_SUFFIX][-1] |= 1  # 9 weights in 2 bytes: the last 7 bits are padding
    with pytest.raises(UpdateError, match="bits set beyond"):
        decode(arrays, reference)


def test_float16_overflow_and_wrong_dtypes_are_refused() -> None:
    reference, new, masks = _local_round()
    diverged = dict(new, b=new["b"] + np.float32(1e6))
    with pytest.raises(UpdateError, match="float16 overflow"):
        decode(encode(diverged, masks, "float16", reference=reference), reference)
    arrays = encode(new, masks, "float16", reference=reference)
    arrays["b::delta-f16"] = arrays["b::delta-f16"].astype(np.float32)
    with pytest.raises(UpdateError, match="expected float16"):
        decode(arrays, reference)
    with pytest.raises(UpdateError, match="expected float32"):
        decode({"b": new["b"].astype(np.float64)}, reference)


def test_a_diverged_client_encodes_but_is_refused() -> None:
    reference, new, masks = _local_round()
    with pytest.raises(UpdateError, match="finite and positive"):
        decode(encode(dict(new, b=np.full(64, np.nan, np.float32)), masks, "int8", reference=reference), reference)


# Personalized by HEI on a real user in the `fedhei compress` run of docs/compression.md: 7 of 25 layers.
HEI_PERSONALIZED = ("blocks.0.attn.qkv", "blocks.0.mlp.fc2", "blocks.1.attn.qkv", "blocks.2.attn.proj", "blocks.2.mlp.fc1",
                    "blocks.5.attn.qkv", "head")


def test_int8_update_bytes_are_codes_masks_and_one_scale_per_tensor() -> None:
    """vit-tiny-c10 at prob 0.5 with those roles: what the strategy counts, computed array by array."""
    with seeding.torch_seeded(0, "test-upload-bytes"):
        model = create_model("vit-tiny-c10")
    params = {name: value.detach().numpy() for name, value in model.named_parameters()}
    names = [layer.name for layer in linear_layers(model)]
    roles = RoleMap(tuple(names), tuple(0.0 for _ in names), "top-fraction", 0.25,
                    {name: PERSONALIZED if name in HEI_PERSONALIZED else GENERIC for name in names})
    masks = {name: mask.numpy() for name, mask in magnitude_masks(model, layer_ratios(roles, 0.5, personal_factor=0.5)).items()}
    personal = personal_parameters(ClientPolicy(Sharing.GENERIC, Pruning.ROLES), params, HEI_PERSONALIZED)
    shared = {name: value for name, value in params.items() if name not in personal}
    arrays = encode(shared, {name: masks[name] for name in shared if name in masks}, "int8", reference=params)
    counted = ArrayRecord({key: Array(np.ascontiguousarray(value)) for key, value in arrays.items()}).count_bytes()

    def array(key: str, payload: int) -> int:
        return len(key) + NPY_HEADER + payload

    expected = 0
    for name, value in shared.items():
        expected += array(f"{name}::scale", 4)
        if name in masks:
            expected += array(f"{name}::delta-i8", int(masks[name].sum())) + array(f"{name}::mask", math.ceil(value.size / 8))
        else:
            expected += array(f"{name}::delta-i8", value.size)
    fedavg = sum(array(name, 4 * value.size) for name, value in params.items())
    assert counted == expected == 612_169
    # FedAvg's dense float32 upload of the same model is 4,884,658 B: this is 12.5% of it.
    assert fedavg == 4_884_658


SCENARIO = Scenario(
    data_source="synthetic", model="vit-micro", num_clients=2, dirichlet_alpha=1.0, local_epochs=0.1,
    batch_size=32, pruning_steps=2, prob=0.5, calibration_batches=1, scorer="magnitude",
)


def test_a_client_round_at_int8_sends_what_float32_sends_within_half_a_step() -> None:
    with seeding.torch_seeded(0, "test-upload-client"):
        base = {name: value.detach().numpy().copy() for name, value in create_model("vit-micro").named_parameters()}
    policy = ClientPolicy(Sharing.GENERIC, Pruning.ROLES)
    exact, _, _ = train_round(ClientJob(SCENARIO, policy, 0, 1), base, None)
    quantized, _, _ = train_round(ClientJob(SCENARIO.replace(upload_precision="int8"), policy, 0, 1), base, None)
    assert sum(value.nbytes for value in quantized.values()) < 0.4 * sum(value.nbytes for value in exact.values())
    sent, received = decode(exact, base), decode(quantized, base)
    assert sent.keys() == received.keys()
    for name, tensor in sent.items():
        step = float(quantized[f"{name}::scale"][0])
        np.testing.assert_array_equal(received[name].keep, tensor.keep)
        error = np.abs(received[name].values - tensor.values)
        assert np.all(error <= step / 2 + (np.abs(tensor.values) + step) * FLOAT32_ROUNDING)


def test_upload_precision_is_checked_when_the_scenario_is_read() -> None:
    with pytest.raises(FedheiError, match="upload-precision is 'int4'; choose one of: float32, float16, int8"):
        Scenario.from_mapping({"upload-precision": "int4"})
