"""Attention scorers: how each block's self-attention spreads over the tokens of the user's data.

timm's ``Attention`` may compute attention with fused scaled-dot-product kernels that
never materialize the probabilities, so the scorer does not read them from timm: a
forward hook on each block's ``qkv`` layer takes its output and recomputes the
probabilities as ``Attention`` defines them (per head, ``softmax(q k^T * scale)``
after the block's own ``q_norm`` and ``k_norm``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedhei.errors import FedheiError
from fedhei.method.scoring.base import Calibration, Hook, LayerScores, check_calibration, forward_with_hooks, layer_names
from fedhei.models.registry import linear_layers


def attention_entropy(attention: nn.Module, qkv_output: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of every query's attention distribution, shape (batch, heads, tokens)."""
    batch, tokens, _ = qkv_output.shape
    heads, head_dim = attention.num_heads, attention.head_dim
    query, key, _ = qkv_output.reshape(batch, tokens, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    query, key = attention.q_norm(query), attention.k_norm(key)
    log_probs = torch.log_softmax((query * attention.scale) @ key.transpose(-2, -1), dim=-1)
    return -(log_probs.exp() * log_probs).sum(dim=-1)


def _attention_modules(model: nn.Module) -> dict[int, nn.Module]:
    """Block index -> the block's attention module (the one that owns a ``qkv`` layer)."""
    blocks = getattr(model, "blocks", None)
    if blocks is None or not all(hasattr(block, "attn") and hasattr(block.attn, "qkv") for block in blocks):
        raise FedheiError(f"{type(model).__name__} has no ViT blocks with self-attention; "
                          "attention-entropy scores timm ViTs only")
    return {index: block.attn for index, block in enumerate(blocks)}


@dataclass(frozen=True)
class AttentionEntropyScorer:
    """Attention entropy per block: the mean entropy of the block's attention
    distributions on the user's data, over heads, queries and examples, divided by
    log(tokens) so that 1 is attention spread evenly over every token and 0 attention
    on one token. Higher scores mean more personal: on vit-tiny-c10, blocks whose
    attention mixes the whole image were mostly the ones whose perturbation cost most
    (Spearman with the exhaustive scores +0.42 to +0.57 on four clients of five, -0.61
    on the fifth; benchmarks/sensing_vs_exhaustive.py), so focused attention, the
    opposite reading, would rank them backwards.

    The signal is per block; a block's linear layers (``qkv``, ``proj``, ``fc1``,
    ``fc2``) all take its score, and a layer outside the blocks takes the score of the
    last block before it (the head reads the last block's output; a layer before the
    first block would take the first block's). One forward pass per batch.
    """

    name: str = "attention-entropy"

    def __call__(self, model: nn.Module, calibration: Calibration, seed: int) -> LayerScores:
        check_calibration(calibration)
        attentions = _attention_modules(model)
        totals = dict.fromkeys(attentions, 0.0)
        tokens = dict.fromkeys(attentions, 1)

        def recorder(index: int) -> Hook:
            def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
                tokens[index] = output.shape[1]
                totals[index] += attention_entropy(attentions[index], output.detach()).mean().item()

            return record

        forward_with_hooks(model, calibration, [(attention.qkv, recorder(index)) for index, attention in attentions.items()])
        entropy = {index: totals[index] / len(calibration) / math.log(tokens[index]) for index in attentions}
        layers = layer_names(model)
        blocks = {layer.name: layer.block for layer in linear_layers(model)}
        scores, last_block = [], 0
        for layer in layers:
            last_block = blocks[layer] if blocks[layer] >= 0 else last_block
            scores.append(entropy[last_block])
        return LayerScores(layers, np.asarray(scores), len(calibration), self.name)
