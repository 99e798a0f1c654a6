"""Per-architecture adapters: what layer roles and pruning need to know about a model.

Scorers, role rules and pruners are written once against :class:`ArchitectureAdapter`;
each architecture answers it in a few lines, as timm's ``group_matcher`` maps a
model's parameter names to its blocks. An adapter says which modules are the
linear layers (in forward order, with block index and kind), what the head is,
how structured pruning groups attention heads and MLP channels, and which task
(:mod:`fedhei.models.tasks`) the model's outputs serve. :func:`adapter_for`
picks the adapter from the model itself, so no caller branches on model types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from torch import nn

from fedhei.errors import FedheiError
from fedhei.models.tasks import CLASSIFICATION, LANGUAGE_MODELING, Task

HEAD_KIND = "head"


@dataclass(frozen=True)
class LinearLayer:
    """One prunable unit: a linear layer of the model."""

    name: str
    out_features: int
    in_features: int
    params: int
    # Block index, or -1 for layers outside the blocks (the head).
    block: int
    # The same role in every block: the module's own name (qkv, fc1, q_proj, gate_proj, ...) or "head".
    kind: str


@dataclass(frozen=True)
class Slice:
    """Part of one weight owned by a structural unit: rows (axis 0, the layer's outputs)
    or columns (axis 1, its inputs)."""

    layer: str
    axis: int
    indices: tuple[int, ...]


@dataclass(frozen=True)
class AttentionGroup:
    """One block's attention, in units that can be removed whole.

    A unit is one key/value head with the query heads that read it (grouped-query
    attention: query head ``h`` reads key/value head ``h // (num_heads // num_kv_heads)``,
    as transformers' ``repeat_kv`` lays them out); without grouping it is one head.
    Removing whole units keeps every kept query head's key and value and keeps the
    number of query heads per key/value head, so the attention code needs no change.
    ``query``, ``key`` and ``value`` name one fused layer (timm's ``qkv``: rows are
    all queries, then all keys, then all values) or three separate ones.
    """

    block: int
    query: str
    key: str
    value: str
    output: str
    num_heads: int
    num_kv_heads: int
    head_dim: int

    @property
    def key_name(self) -> str:
        return self.query

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.query, self.key, self.value, self.output)))

    @property
    def units(self) -> int:
        return self.num_kv_heads

    def unit_slices(self, unit: int) -> list[Slice]:
        per_unit = self.num_heads // self.num_kv_heads
        queries = tuple(head * self.head_dim + offset
                        for head in range(unit * per_unit, (unit + 1) * per_unit) for offset in range(self.head_dim))
        fused = self.query == self.key == self.value
        key_offset = self.num_heads * self.head_dim if fused else 0
        value_offset = key_offset + self.num_kv_heads * self.head_dim if fused else 0
        kv_rows = range(unit * self.head_dim, (unit + 1) * self.head_dim)
        return [
            Slice(self.query, 0, queries),
            Slice(self.key, 0, tuple(key_offset + row for row in kv_rows)),
            Slice(self.value, 0, tuple(value_offset + row for row in kv_rows)),
            Slice(self.output, 1, queries),
        ]


@dataclass(frozen=True)
class ChannelGroup:
    """One block's MLP hidden channels: channel ``c`` is row ``c`` of every input layer
    (fc1; or gate and up) and column ``c`` of the output layer (fc2; or down)."""

    block: int
    inputs: tuple[str, ...]
    output: str
    width: int

    @property
    def key_name(self) -> str:
        return self.inputs[0]

    @property
    def layers(self) -> tuple[str, ...]:
        return (*self.inputs, self.output)

    @property
    def units(self) -> int:
        return self.width

    def unit_slices(self, unit: int) -> list[Slice]:
        return [*(Slice(layer, 0, (unit,)) for layer in self.inputs), Slice(self.output, 1, (unit,))]


StructuredGroup = AttentionGroup | ChannelGroup


class ArchitectureAdapter(Protocol):
    """What fedhei needs to know about one architecture."""

    @property
    def name(self) -> str: ...

    @property
    def task(self) -> Task: ...

    def matches(self, model: nn.Module) -> bool: ...

    def linear_layers(self, model: nn.Module) -> list[LinearLayer]:
        """The linear layers in forward order: the units that layer roles and pruning act on."""
        ...

    def head_parameters(self, model: nn.Module) -> tuple[str, ...]:
        """The parameters of the output head (FedPer and FedRep keep them local)."""
        ...

    def parameter_groups(self, model: nn.Module) -> dict[str, Any]:
        """timm's coarse ``group_matcher``: the embedding first, one group per block, the head last
        (FedALA blends the top groups)."""
        ...

    def structured_groups(self, model: nn.Module) -> list[StructuredGroup]:
        """Per block, its attention group then its MLP channel group, read from the current shapes."""
        ...

    def sync_structure(self, model: nn.Module) -> None:
        """Make the model's own bookkeeping (head counts) agree with its layers' shapes after slicing."""
        ...


def _block_index(name: str, prefix: tuple[str, ...]) -> int:
    parts = name.split(".")
    if tuple(parts[: len(prefix)]) == prefix and len(parts) > len(prefix) and parts[len(prefix)].isdigit():
        return int(parts[len(prefix)])
    return -1


def _inventory(model: nn.Module, blocks: tuple[str, ...], head: str) -> list[LinearLayer]:
    layers = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            params = module.weight.numel() + (module.bias.numel() if module.bias is not None else 0)
            kind = HEAD_KIND if name == head else name.split(".")[-1]
            layers.append(LinearLayer(name, module.out_features, module.in_features, params, _block_index(name, blocks), kind))
    return layers


def _module_names(model: nn.Module) -> dict[int, str]:
    return {id(module): name for name, module in model.named_modules()}


@dataclass(frozen=True)
class GenericAdapter:
    """Any module that maps a batch to class logits: every linear layer, no head and no
    structured groups. The fallback for models no other adapter claims (tests' toys)."""

    name: str = "generic"

    @property
    def task(self) -> Task:
        return CLASSIFICATION

    def matches(self, model: nn.Module) -> bool:
        return True

    def linear_layers(self, model: nn.Module) -> list[LinearLayer]:
        return _inventory(model, blocks=("blocks",), head="")

    def head_parameters(self, model: nn.Module) -> tuple[str, ...]:
        return ()

    def parameter_groups(self, model: nn.Module) -> dict[str, Any]:
        return dict(blocks=[(r"^blocks\.(\d+)", None)])

    def structured_groups(self, model: nn.Module) -> list[StructuredGroup]:
        raise FedheiError(f"structured pruning needs to know how {type(model).__name__} groups its heads and "
                          "channels; it works on timm ViTs and Qwen2 language models")

    def sync_structure(self, model: nn.Module) -> None:
        return None


@dataclass(frozen=True)
class TimmViTAdapter:
    """timm's ``VisionTransformer``: blocks ``blocks.N`` with a fused ``attn.qkv``, ``attn.proj``,
    ``mlp.fc1``, ``mlp.fc2``; the classifier ``head``."""

    name: str = "timm-vit"

    @property
    def task(self) -> Task:
        return CLASSIFICATION

    def matches(self, model: nn.Module) -> bool:
        from timm.models.vision_transformer import VisionTransformer

        return isinstance(model, VisionTransformer)

    def linear_layers(self, model: nn.Module) -> list[LinearLayer]:
        return _inventory(model, blocks=("blocks",), head="head")

    def head_parameters(self, model: nn.Module) -> tuple[str, ...]:
        return tuple(f"head.{name}" for name, _ in model.head.named_parameters())

    def parameter_groups(self, model: nn.Module) -> dict[str, Any]:
        return model.group_matcher(coarse=True)

    def structured_groups(self, model: nn.Module) -> list[StructuredGroup]:
        names = _module_names(model)
        groups: list[StructuredGroup] = []
        for index, block in enumerate(model.blocks):
            attn, mlp = block.attn, block.mlp
            qkv = names[id(attn.qkv)]
            groups.append(AttentionGroup(index, qkv, qkv, qkv, names[id(attn.proj)], int(attn.num_heads),
                                         int(attn.num_heads), int(attn.head_dim)))
            groups.append(ChannelGroup(index, (names[id(mlp.fc1)],), names[id(mlp.fc2)], int(mlp.fc1.out_features)))
        return groups

    def sync_structure(self, model: nn.Module) -> None:
        for block in model.blocks:
            attn = block.attn
            attn.num_heads = attn.qkv.out_features // (3 * attn.head_dim)
            attn.attn_dim = attn.num_heads * attn.head_dim


@dataclass(frozen=True)
class Qwen2Adapter:
    """transformers' ``Qwen2ForCausalLM``: blocks ``model.layers.N`` with ``self_attn.{q,k,v,o}_proj``
    (grouped-query attention: ``num_key_value_heads`` key/value heads) and
    ``mlp.{gate,up,down}_proj``; the head is ``lm_head``, untied from the embedding.

    The attention code reads its head counts from the tensors' shapes (and keeps
    ``num_key_value_groups``, which removing whole key/value units leaves unchanged),
    so slicing its layers needs no bookkeeping.
    """

    name: str = "qwen2"

    @property
    def task(self) -> Task:
        return LANGUAGE_MODELING

    def matches(self, model: nn.Module) -> bool:
        config = getattr(model, "config", None)
        return getattr(config, "model_type", None) == "qwen2" and isinstance(getattr(model, "lm_head", None), nn.Linear)

    def linear_layers(self, model: nn.Module) -> list[LinearLayer]:
        return _inventory(model, blocks=("model", "layers"), head="lm_head")

    def head_parameters(self, model: nn.Module) -> tuple[str, ...]:
        if model.lm_head.weight is model.get_input_embeddings().weight:
            raise FedheiError("this Qwen2 model ties lm_head to the embedding; build it with fedhei's create_model, "
                              "which unties it so the head can be personal")
        return tuple(f"lm_head.{name}" for name, _ in model.lm_head.named_parameters())

    def parameter_groups(self, model: nn.Module) -> dict[str, Any]:
        """As timm groups a ViT: the final norm joins the last block, and ``lm_head``, matched by
        no pattern, is the last group."""
        return dict(stem=r"^model\.embed_tokens", blocks=[(r"^model\.layers\.(\d+)", None), (r"^model\.norm", (99999,))])

    def structured_groups(self, model: nn.Module) -> list[StructuredGroup]:
        names = _module_names(model)
        groups: list[StructuredGroup] = []
        for index, layer in enumerate(model.model.layers):
            attn, mlp = layer.self_attn, layer.mlp
            head_dim = int(attn.head_dim)
            groups.append(AttentionGroup(
                index, names[id(attn.q_proj)], names[id(attn.k_proj)], names[id(attn.v_proj)], names[id(attn.o_proj)],
                attn.q_proj.out_features // head_dim, attn.k_proj.out_features // head_dim, head_dim))
            groups.append(ChannelGroup(index, (names[id(mlp.gate_proj)], names[id(mlp.up_proj)]), names[id(mlp.down_proj)],
                                       int(mlp.gate_proj.out_features)))
        return groups

    def sync_structure(self, model: nn.Module) -> None:
        return None


# The first adapter that claims a model answers for it; the generic one claims every model.
ADAPTERS: tuple[ArchitectureAdapter, ...] = (TimmViTAdapter(), Qwen2Adapter(), GenericAdapter())


def adapter_for(model: nn.Module) -> ArchitectureAdapter:
    return next(adapter for adapter in ADAPTERS if adapter.matches(model))


def task_for(model: nn.Module) -> Task:
    """How the model's outputs are read and scored: class logits, or next-token logits."""
    return adapter_for(model).task
