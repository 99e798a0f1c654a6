"""Language models through the same API as the ViT: inventory, scorers, roles, masks,
training, structured pruning, checkpoints; and the topic text their clients hold."""

from __future__ import annotations

import copy
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import scorer_settings, train_settings
from safetensors.torch import save_file
from scipy.spatial.distance import jensenshannon
from torch import nn

from fedhei.config.scenario import Scenario
from fedhei.data.text import (
    TOPICS,
    ByteTokenizer,
    TopicTextSpec,
    checkpoint_tokenizer,
    client_batches,
    client_documents,
    public_documents,
    token_sequences,
)
from fedhei.errors import FedheiError
from fedhei.federation.policy import ClientPolicy, Sharing, personal_parameters
from fedhei.method.pruning import layer_ratios, magnitude_masks
from fedhei.method.roles import classify
from fedhei.method.scoring import build_scorer
from fedhei.method.structured import structured_prune, structured_widths
from fedhei.models.adapters import AttentionGroup, StructuredGroup, adapter_for
from fedhei.models.checkpoints import load_checkpoint, load_structured, save_checkpoint, save_structured
from fedhei.models.language import qwen2_config
from fedhei.models.registry import count_parameters, create_model, linear_layers
from fedhei.training.loops import evaluate, train

SPEC = TopicTextSpec(num_clients=4, num_topics=len(TOPICS), train_documents=60, test_documents=20, public_documents=0, seed=0)
SEQUENCE = 32


@pytest.fixture(scope="module")
def batches() -> tuple:
    return client_batches(SPEC, 0, ByteTokenizer(), SEQUENCE)


@pytest.fixture(scope="module")
def trained(batches: tuple) -> nn.Module:
    """qwen2-micro after two epochs on client 0's topic: weights with structure, not only noise."""
    model = create_model("qwen2-micro")
    train(model, batches[0], train_settings(epochs=2, batch_size=16, lr=3e-3), seed=0)
    return model


def words(texts: list[str]) -> Counter[str]:
    return Counter(word for text in texts for word in text.replace(".", " ").split())


def divergence(first: Counter[str], second: Counter[str]) -> float:
    vocabulary = sorted(set(first) | set(second))
    return float(jensenshannon([first[w] for w in vocabulary], [second[w] for w in vocabulary], base=2))


def test_topic_texts_of_different_clients_differ_measurably() -> None:
    spec = TopicTextSpec(num_clients=8, num_topics=len(TOPICS), train_documents=100, test_documents=10, public_documents=0,
                         seed=0)
    same_topic = divergence(words(client_documents(spec, 0, "train")), words(client_documents(spec, 6, "train")))
    other_topic = divergence(words(client_documents(spec, 0, "train")), words(client_documents(spec, 1, "train")))
    assert spec.topic_of(0) == spec.topic_of(6) != spec.topic_of(1)
    assert same_topic < 0.15 and other_topic > 0.6
    assert client_documents(spec, 0, "train") != client_documents(spec, 6, "train")  # same topic, own sentences
    assert client_documents(spec, 0, "train") == client_documents(spec, 0, "train")  # seeded
    assert client_documents(spec, 0, "train") != client_documents(spec, 0, "test")
    public = words(public_documents(TopicTextSpec(num_clients=2, num_topics=2, train_documents=200, test_documents=50,
                                                        public_documents=50, seed=0)))
    assert {"onion", "comet"} <= set(public) and "sail" not in public


def test_a_model_learns_its_clients_topic(trained: nn.Module, batches: tuple) -> None:
    own = evaluate(trained, batches[1])
    other = evaluate(trained, client_batches(SPEC, 1, ByteTokenizer(), SEQUENCE)[1])
    assert own["perplexity"] < 0.8 * other["perplexity"]
    assert own["perplexity"] < 0.2 * ByteTokenizer().vocab_size


def test_token_batches_shift_targets_by_one() -> None:
    rows = token_sequences(["ab", "c"], ByteTokenizer(), sequence_length=2)
    assert rows.tolist() == [[97, 98, 256]]  # "ab" + end, "c" + end: the tail of 2 tokens is dropped
    inputs, targets = next(client_batches(SPEC, 0, ByteTokenizer(), SEQUENCE)[0].batches(4))
    assert inputs.shape == targets.shape == (4, SEQUENCE)
    assert torch.equal(inputs[:, 1:], targets[:, :-1])


def test_the_adapter_finds_linear_layers_and_head_of_both_architectures() -> None:
    vit, lm = create_model("vit-micro"), create_model("qwen2-micro")
    assert adapter_for(vit).name == "timm-vit" and adapter_for(lm).name == "qwen2"
    assert adapter_for(vit).head_parameters(vit) == ("head.weight", "head.bias")
    assert adapter_for(lm).head_parameters(lm) == ("lm_head.weight",)
    layers = linear_layers(lm)
    assert len(layers) == 2 * 7 + 1
    assert [layer.kind for layer in layers[:7]] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert [layer.block for layer in layers] == [0] * 7 + [1] * 7 + [-1]
    assert (layers[-1].name, layers[-1].kind) == ("lm_head", "head")
    assert sum(layer.params for layer in layers) == sum(
        sum(p.numel() for p in m.parameters()) for m in lm.modules() if isinstance(m, nn.Linear))
    assert [layer.kind for layer in linear_layers(vit)[:4]] == ["qkv", "proj", "fc1", "fc2"]
    body = personal_parameters(ClientPolicy(sharing=Sharing.BODY), [n for n, _ in lm.named_parameters()], (),
                               head=adapter_for(lm).head_parameters(lm))
    assert body == {"lm_head.weight"}


def test_models_are_seeded() -> None:
    first, again, other = (create_model("qwen2-micro", seed=seed).state_dict() for seed in (0, 0, 1))
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(first["model.layers.0.self_attn.q_proj.weight"], other["model.layers.0.self_attn.q_proj.weight"])


@pytest.mark.parametrize("scorer", ["sensing", "fisher", "activation", "magnitude"])
def test_a_language_model_prunes_through_the_same_api(scorer: str, trained: nn.Module, batches: tuple) -> None:
    """scorer -> roles -> layer ratios -> magnitude masks; the masks hold through training."""
    model = copy.deepcopy(trained)
    calibration = list(batches[0].batches(16, shuffle=True, seed=1))[:2]
    scores = build_scorer(scorer, scorer_settings(measurements=0.6))(model, calibration, seed=0)
    assert scores.layers == tuple(layer.name for layer in linear_layers(model)) and np.isfinite(scores.scores).all()
    roles = classify(scores, "top-fraction", 0.25)
    assert len(roles.personalized()) == math.ceil(0.25 * len(scores.layers))
    ratios = layer_ratios(roles, prob=0.6, personal_factor=0.5)
    before = evaluate(model, batches[1])["perplexity"]
    masks = magnitude_masks(model, ratios)
    modules = dict(model.named_modules())
    for layer, ratio in ratios.items():
        mask = masks[f"{layer}.weight"]
        assert int((~mask).sum()) == math.floor(ratio * mask.numel() + 0.5)
        modules[layer].weight.data.mul_(mask)
    train(model, batches[0], train_settings(epochs=1, batch_size=16, lr=1e-3, max_steps=3), masks=masks, seed=2)
    for layer in ratios:
        assert not modules[layer].weight[~masks[f"{layer}.weight"]].any()
    after = evaluate(model, batches[1])["perplexity"]
    assert math.isfinite(before) and math.isfinite(after) and after < ByteTokenizer().vocab_size


def test_structured_pruning_removes_key_value_groups_and_channels(trained: nn.Module, batches: tuple, tmp_path: Path) -> None:
    layers = [layer.name for layer in linear_layers(trained)]
    pruned = structured_prune(trained, dict.fromkeys(layers, 0.5))
    for block in pruned.model.layers:
        attn = block.self_attn
        assert (attn.q_proj.out_features, attn.k_proj.out_features, attn.v_proj.out_features, attn.o_proj.in_features) == (
            32, 16, 16, 32)  # one of two key/value groups: 2 query heads and 1 key/value head of 16 dims
        assert block.mlp.gate_proj.out_features == block.mlp.up_proj.out_features == block.mlp.down_proj.in_features == 64
    assert structured_widths(pruned) == {key: width // 2 for key, width in structured_widths(trained).items()}
    assert count_parameters(pruned)[0] < 0.75 * count_parameters(trained)[0]
    assert pruned.lm_head.weight.shape == trained.lm_head.weight.shape
    perplexity = evaluate(pruned, batches[1])["perplexity"]
    assert math.isfinite(perplexity)
    path = tmp_path / "pruned.safetensors"
    save_structured(pruned, path, {"model": "qwen2-micro"})
    inputs, _ = next(batches[1].batches(4))
    with torch.no_grad():
        torch.testing.assert_close(load_structured(path)(inputs).logits, pruned(inputs).logits, rtol=0, atol=0)


def test_grouped_query_units_keep_each_query_head_with_its_key_and_value(trained: nn.Module, batches: tuple) -> None:
    """Drop key/value group 0 of block 0: the pruned model must compute what the original
    computes with that group's query heads silenced (their output-projection columns zeroed).
    Were a kept query head wired to the wrong key/value head, the outputs would differ."""

    def drop_first_group(model: nn.Module, group: StructuredGroup) -> torch.Tensor:
        scores = torch.ones(group.units)
        if isinstance(group, AttentionGroup) and group.block == 0:
            scores[0] = 0.0
        return scores

    attn = adapter_for(trained).structured_groups(trained)[0]
    ratios = {attn.query: 0.5, attn.key: 0.5, attn.value: 0.5, attn.output: 0.5}
    pruned = structured_prune(trained, ratios, importance=drop_first_group)
    reference = copy.deepcopy(trained)
    silenced = 2 * attn.head_dim  # the 2 query heads of group 0
    with torch.no_grad():
        reference.model.layers[0].self_attn.o_proj.weight[:, :silenced] = 0.0
        inputs, _ = next(batches[1].batches(4))
        torch.testing.assert_close(pruned(inputs).logits, reference(inputs).logits, rtol=1e-5, atol=1e-5)
    assert pruned.model.layers[1].self_attn.k_proj.out_features == trained.model.layers[1].self_attn.k_proj.out_features


def _checkpoint_folder(folder: Path, tie: bool) -> nn.Module:
    """A folder as transformers writes one: config.json and model.safetensors; a tied model
    stores no lm_head."""
    from transformers import Qwen2ForCausalLM

    config = qwen2_config("qwen2-micro")
    config.tie_word_embeddings = tie
    torch.manual_seed(3)
    reference = Qwen2ForCausalLM(config).eval()
    folder.mkdir()
    values = {**config.to_dict(), "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "torch_dtype": "bfloat16"}
    (folder / "config.json").write_text(json.dumps(values))
    state = {key: value.contiguous() for key, value in reference.state_dict().items() if not (tie and key == "lm_head.weight")}
    save_file(state, str(folder / "model.safetensors"))
    return reference


@pytest.mark.parametrize("tie", [True, False])
def test_a_local_checkpoint_folder_loads_with_safetensors(tmp_path: Path, tie: bool) -> None:
    reference = _checkpoint_folder(tmp_path / "qwen", tie)
    loaded = load_checkpoint(tmp_path / "qwen")
    assert adapter_for(loaded).head_parameters(loaded) == ("lm_head.weight",)  # untied: the head can be personal
    inputs = torch.randint(0, 257, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs).logits, reference(inputs).logits)
    alone = load_checkpoint(tmp_path / "qwen" / "model.safetensors")  # a file of the folder: the folder's architecture
    assert all(torch.equal(value, alone.state_dict()[key]) for key, value in loaded.state_dict().items())
    save_checkpoint(loaded, tmp_path / "copy.safetensors", {"model": str(tmp_path / "qwen")})
    again = load_checkpoint(tmp_path / "copy.safetensors")
    assert all(torch.equal(value, again.state_dict()[key]) for key, value in loaded.state_dict().items())


def test_bad_checkpoint_folders_are_one_clear_error(tmp_path: Path) -> None:
    _checkpoint_folder(tmp_path / "pickled", tie=False)
    (tmp_path / "pickled" / "model.safetensors").rename(tmp_path / "pickled" / "pytorch_model.bin")
    with pytest.raises(FedheiError, match="never loads pickled"):
        load_checkpoint(tmp_path / "pickled")
    other = tmp_path / "llama"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(FedheiError, match="'llama' model"):
        create_model(str(other))
    with pytest.raises(FedheiError, match="no hub weights"):
        create_model("qwen2-micro", pretrained=True)


def test_a_checkpoint_folder_reads_text_with_its_own_tokenizer(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocabulary = {"[UNK]": 0, "<|endoftext|>": 1, **{word: index + 2 for index, word in enumerate(["the", "chef", "stirs", "."])}}
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", "eos_token_id": 1}))
    loaded = checkpoint_tokenizer(tmp_path)
    assert loaded.vocab_size == 6 and loaded.encode("the chef stirs the pan") == [2, 3, 4, 2, 0]
    assert token_sequences(["the chef", "stirs"], loaded, 2).tolist() == [[2, 3, 1]]


def test_a_language_scenario_checks_its_text_settings() -> None:
    scenario = Scenario.from_mapping({"model": "qwen2-micro", "num-clients": 4, "text-documents": 50})
    assert scenario.is_language_model and scenario.text_spec().test_documents == 10
    with pytest.raises(FedheiError, match="language model"):
        Scenario.from_mapping({"model": "qwen2-micro", "data-source": "synthetic"})
    with pytest.raises(FedheiError, match="image model"):
        Scenario.from_mapping({"data-source": "topics"})
    with pytest.raises(FedheiError, match="text-topics"):
        Scenario.from_mapping({"model": "qwen2-micro", "text-topics": 9})
