"""Causal language models of transformers' Qwen2 architecture.

Two kinds of names build one: fedhei's small configurations (``qwen2-micro`` for
tests, ``qwen2-tiny`` for CPU runs) over the byte tokenizer's vocabulary, and a
local checkpoint folder (``config.json`` with ``model_type`` qwen2 and its
``*.safetensors`` weights, e.g. Qwen1.5-0.5B-Chat as a user downloaded it).
Weights are read with safetensors only, never a pickle, and nothing is fetched
from a hub at run time. The head is always untied from the input embedding, so
that it can be a personal layer while the embedding is shared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fedhei import seeding
from fedhei.data.text import BYTE_VOCAB_SIZE, ByteTokenizer, Tokenizer, checkpoint_tokenizer
from fedhei.errors import FedheiError

if TYPE_CHECKING:
    from transformers import Qwen2Config, Qwen2ForCausalLM

_SMALL_COMMON: dict[str, Any] = dict(
    vocab_size=BYTE_VOCAB_SIZE,
    eos_token_id=ByteTokenizer().end_of_text,
    max_position_embeddings=512,
    rms_norm_eps=1e-6,
)

SMALL_CONFIGS: dict[str, dict[str, Any]] = {
    # ~0.1M parameters: unit tests. Grouped-query attention, 2 query heads per key/value head.
    "qwen2-micro": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2),
    # ~0.9M parameters: CPU experiments. 8 query heads over 4 key/value heads.
    "qwen2-tiny": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=8,
                       num_key_value_heads=4),
}

# config.json keys that do not describe the architecture; weights are always computed in float32.
_NOT_ARCHITECTURE = frozenset({"architectures", "model_type", "transformers_version", "torch_dtype", "dtype"})

# Buffers older Qwen checkpoints stored that the current code recomputes.
_RECOMPUTED_SUFFIXES = ("rotary_emb.inv_freq",)


def is_checkpoint_folder(name: str) -> bool:
    return Path(name).is_dir() and (Path(name) / "config.json").is_file()


def is_language_model(name: str) -> bool:
    return name in SMALL_CONFIGS or is_checkpoint_folder(name)


def _folder_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise FedheiError(f"{path} is not a readable config.json ({error})") from error
    if values.get("model_type") != "qwen2":
        raise FedheiError(f"{folder} holds a '{values.get('model_type')}' model; fedhei's language models are Qwen2 "
                          "(model_type qwen2, e.g. Qwen1.5 and Qwen2 checkpoints)")
    return values


def qwen2_config(name: str) -> Qwen2Config:
    """The configuration a name stands for, untied and without a generation cache."""
    from transformers import Qwen2Config

    values = {**_SMALL_COMMON, **SMALL_CONFIGS[name]} if name in SMALL_CONFIGS else _folder_config(Path(name))
    values = {key: value for key, value in values.items() if key not in _NOT_ARCHITECTURE}
    return Qwen2Config(**{**values, "tie_word_embeddings": False, "use_cache": False})


def tokenizer_for(name: str) -> Tokenizer:
    """The tokenizer a language model reads text with: bytes for fedhei's small configurations,
    the checkpoint's own ``tokenizer.json`` for a checkpoint folder."""
    if name in SMALL_CONFIGS:
        return ByteTokenizer()
    tokenizer = checkpoint_tokenizer(name)
    vocab = int(_folder_config(Path(name)).get("vocab_size", 0))
    if tokenizer.vocab_size > vocab:
        raise FedheiError(f"{name}: its tokenizer has {tokenizer.vocab_size} tokens but the model only {vocab}")
    return tokenizer


def create_language_model(name: str, seed: int = 0) -> Qwen2ForCausalLM:
    """A Qwen2 causal LM with seeded random weights."""
    from transformers import Qwen2ForCausalLM

    config = qwen2_config(name)
    with seeding.torch_seeded(seed, "model-init"):
        return Qwen2ForCausalLM(config).eval()


def folder_state(folder: Path | str) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder's ``*.safetensors`` files (sharded or not)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FedheiError(f"{folder} has no *.safetensors weights; fedhei never loads pickled (.bin, .pt) checkpoints")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            state.update(load_file(str(file)))
        except (SafetensorError, OSError) as error:
            raise FedheiError(f"{file} is not a readable safetensors file ({error})") from error
    return state


def untied(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Qwen2 checkpoint's tensors as fedhei's untied model takes them.

    A checkpoint saved with tied embeddings has no ``lm_head.weight``: the untied head
    starts as a copy of the embedding, which is what the tied model computed. Buffers
    that older checkpoints stored and the current code recomputes are dropped. Other
    states pass unchanged.
    """
    state = {key: value for key, value in state.items() if not key.endswith(_RECOMPUTED_SUFFIXES)}
    if "lm_head.weight" not in state and "model.embed_tokens.weight" in state:
        state["lm_head.weight"] = state["model.embed_tokens.weight"].clone()
    return state
