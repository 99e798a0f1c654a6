"""Topic text for language-model clients: generated, seeded, and needing no download.

Each client writes about its own topic (client ``i`` holds topic ``i mod topics``):
every topic has its own nouns, verbs, adjectives, places and sentence patterns,
and words are drawn with Zipf-like frequencies, so topics really differ (their
word distributions barely overlap) and a small model can learn them. Words
that every topic shares ("the", "with", ...) give the topics a common grammar,
the generic part a federation can share. A public mixture of all topics, held
by no client, pre-trains a base model as the public CIFAR slice does.

Tokenizers need no download either: :class:`ByteTokenizer` (UTF-8 bytes and an
end-of-text id) for fedhei's own small language models, or a checkpoint's own
``tokenizer.json`` read with the ``tokenizers`` library (no pickles).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from fedhei import seeding
from fedhei.data.batching import batch_indices
from fedhei.errors import FedheiError

TOPICS_SOURCE = "topics"


@dataclass(frozen=True)
class Topic:
    nouns: tuple[str, ...]
    verbs: tuple[str, ...]
    adjectives: tuple[str, ...]
    places: tuple[str, ...]
    adverbs: tuple[str, ...]
    # Sentence patterns; {N} noun, {V} verb, {A} adjective, {P} place, {D} adverb.
    patterns: tuple[str, ...]


_SHARED_PATTERNS = (
    "the {A} {N} {V} the {N} {P} .",
    "a {N} {V} {D} and the {N} {V} the {A} {N} .",
)

TOPICS: dict[str, Topic] = {
    "cooking": Topic(
        nouns=("chef", "onion", "sauce", "pan", "garlic", "broth", "knife", "oven", "dough", "pepper", "butter",
               "recipe", "spoon", "lemon", "stew", "skillet"),
        verbs=("simmers", "chops", "seasons", "bakes", "stirs", "roasts", "whisks", "tastes", "fries", "kneads"),
        adjectives=("crispy", "savory", "golden", "tender", "spicy", "buttery", "fragrant", "smoky"),
        places=("in the kitchen", "on the stove", "at the counter", "in the pantry", "by the sink"),
        adverbs=("slowly", "gently", "evenly", "briskly"),
        patterns=("add the {A} {N} to the {N} and {D} stir .", "the {N} {V} until the {N} turns {A} .",
                  "bake the {N} for ten minutes {P} ."),
    ),
    "astronomy": Topic(
        nouns=("comet", "telescope", "nebula", "planet", "orbit", "galaxy", "star", "moon", "crater", "quasar",
               "astronomer", "eclipse", "meteor", "pulsar", "asteroid", "spectrum"),
        verbs=("orbits", "observes", "eclipses", "emits", "tracks", "charts", "dims", "measures", "spins", "reflects"),
        adjectives=("distant", "luminous", "icy", "massive", "faint", "stellar", "cosmic", "red"),
        places=("beyond the horizon", "in deep space", "near the equator", "above the observatory", "past the belt"),
        adverbs=("silently", "brightly", "steadily", "faintly"),
        patterns=("the {N} {V} the {A} {N} every night .", "through the {N} we saw a {A} {N} {P} .",
                  "light from the {N} takes years to reach the {N} ."),
    ),
    "sailing": Topic(
        nouns=("sail", "mast", "harbor", "keel", "anchor", "captain", "rope", "deck", "tide", "hull", "compass",
               "crew", "rudder", "wave", "buoy", "jib"),
        verbs=("hoists", "steers", "tacks", "moors", "drifts", "anchors", "trims", "rows", "docks", "navigates"),
        adjectives=("salty", "windward", "sturdy", "choppy", "calm", "weathered", "swift", "leeward"),
        places=("across the bay", "off the coast", "along the pier", "past the lighthouse", "into the wind"),
        adverbs=("smoothly", "hard", "northward", "carefully"),
        patterns=("the {N} {V} the {N} {P} at dawn .", "with a {A} wind the {N} {V} {D} .",
                  "hold the {N} while the {N} {V} the {A} {N} ."),
    ),
    "gardening": Topic(
        nouns=("seed", "soil", "tulip", "hedge", "compost", "rose", "shovel", "sprout", "root", "fern", "trowel",
               "gardener", "mulch", "bulb", "vine", "orchard"),
        verbs=("plants", "waters", "prunes", "digs", "blooms", "weeds", "grows", "fertilizes", "harvests", "sows"),
        adjectives=("leafy", "fertile", "green", "blooming", "damp", "wild", "thorny", "lush"),
        places=("in the greenhouse", "along the fence", "under the oak", "in the raised bed", "by the pond"),
        adverbs=("daily", "deeply", "lightly", "patiently"),
        patterns=("water the {A} {N} before the {N} dries .", "in spring the {N} {V} {P} .",
                  "the {N} {V} the {N} with {A} {N} ."),
    ),
    "music": Topic(
        nouns=("melody", "violin", "chord", "drummer", "piano", "rhythm", "choir", "tempo", "guitar", "symphony",
               "conductor", "note", "bass", "harmony", "flute", "verse"),
        verbs=("plays", "tunes", "hums", "composes", "strums", "rehearses", "sings", "conducts", "records", "improvises"),
        adjectives=("minor", "soaring", "mellow", "upbeat", "haunting", "brassy", "quiet", "lively"),
        places=("on the stage", "in the studio", "at the concert hall", "in the rehearsal room", "under the lights"),
        adverbs=("softly", "loudly", "sweetly", "in time"),
        patterns=("the {N} {V} a {A} {N} in four beats .", "listen as the {N} {V} the {N} {D} .",
                  "after the {N} the {A} {N} {V} {P} ."),
    ),
    "football": Topic(
        nouns=("striker", "goal", "referee", "pitch", "keeper", "pass", "corner", "penalty", "defender", "match",
               "coach", "header", "midfield", "whistle", "tackle", "league"),
        verbs=("scores", "dribbles", "blocks", "shoots", "tackles", "passes", "saves", "crosses", "defends", "heads"),
        adjectives=("offside", "decisive", "fierce", "late", "clean", "home", "away", "winning"),
        places=("at the far post", "inside the box", "on the wing", "near the halfway line", "in extra time"),
        adverbs=("quickly", "boldly", "twice", "cleanly"),
        patterns=("the {N} {V} past the {N} {P} .", "a {A} {N} from the {N} {V} the {N} .",
                  "in the second half the {N} {V} {D} ."),
    ),
}
TOPIC_NAMES: tuple[str, ...] = tuple(TOPICS)


@dataclass(frozen=True)
class TopicTextSpec:
    """How much text each client holds and how many distinct topics the clients cover; a scenario's
    ``text_spec()`` builds it from its checked ``text-*`` settings."""

    num_clients: int
    num_topics: int
    train_documents: int
    test_documents: int
    public_documents: int
    seed: int

    def topic_of(self, client_id: int) -> str:
        return TOPIC_NAMES[client_id % self.num_topics]


def _zipf(count: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, count + 1)
    return weights / weights.sum()


def _pick(words: Sequence[str], rng: np.random.Generator) -> str:
    return words[int(rng.choice(len(words), p=_zipf(len(words))))]


def _sentence(topic: Topic, rng: np.random.Generator) -> str:
    patterns = (*topic.patterns, *_SHARED_PATTERNS)
    pattern = patterns[int(rng.integers(len(patterns)))]
    slots = {"{N}": topic.nouns, "{V}": topic.verbs, "{A}": topic.adjectives, "{P}": topic.places, "{D}": topic.adverbs}
    words = [_pick(slots[token], rng) if token in slots else token for token in pattern.split(" ")]
    return " ".join(words).replace(" .", ".")


def documents(topic: str, count: int, rng: np.random.Generator) -> list[str]:
    """``count`` documents of two to five sentences on ``topic``."""
    chosen = TOPICS[topic]
    return [" ".join(_sentence(chosen, rng) for _ in range(int(rng.integers(2, 6)))) for _ in range(count)]


_SPLITS = ("train", "test")


def client_documents(spec: TopicTextSpec, client_id: int, split: str) -> list[str]:
    """The documents of one client's ``split`` ("train" or "test"), on the client's own topic."""
    if not 0 <= client_id < spec.num_clients:
        raise FedheiError(f"client id {client_id} is outside 0..{spec.num_clients - 1}")
    count = spec.train_documents if split == "train" else spec.test_documents
    return documents(spec.topic_of(client_id), count, seeding.rng(spec.seed, "topic-text", client_id, _SPLITS.index(split)))


def public_documents(spec: TopicTextSpec) -> list[str]:
    """A mixture of every topic the clients cover, held by no client: for pre-training a base model."""
    if spec.public_documents == 0:
        return []
    rng = seeding.rng(spec.seed, "topic-text-public")
    per_topic = -(-spec.public_documents // spec.num_topics)
    mixed = [text for topic in TOPIC_NAMES[: spec.num_topics] for text in documents(topic, per_topic, rng)]
    order = rng.permutation(len(mixed))[: spec.public_documents]
    return [mixed[index] for index in order]


# --- tokenizers ------------------------------------------------------------------------------


class Tokenizer(Protocol):
    @property
    def vocab_size(self) -> int: ...

    @property
    def end_of_text(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...


@dataclass(frozen=True)
class ByteTokenizer:
    """UTF-8 bytes as ids 0..255 and one end-of-text id: self-contained, nothing to download."""

    @property
    def vocab_size(self) -> int:
        return 257

    @property
    def end_of_text(self) -> int:
        return 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(index for index in ids if index < 256).decode("utf-8", errors="replace")


BYTE_VOCAB_SIZE = ByteTokenizer().vocab_size


class FileTokenizer:
    """A checkpoint's own ``tokenizer.json`` (Hugging Face ``tokenizers`` format, plain JSON),
    with the end-of-text id from its ``config.json``."""

    def __init__(self, path: Path, end_of_text: int) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        self._tokenizer = HFTokenizer.from_file(str(path))
        self.end_of_text = end_of_text

    @property
    def vocab_size(self) -> int:
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)


def checkpoint_tokenizer(folder: Path | str) -> FileTokenizer:
    """The tokenizer shipped in a checkpoint folder (``tokenizer.json`` beside ``config.json``)."""
    folder = Path(folder)
    vocab, config = folder / "tokenizer.json", folder / "config.json"
    if not vocab.is_file() or not config.is_file():
        raise FedheiError(f"{folder} has no tokenizer.json and config.json; a checkpoint folder needs both to read text")
    end = json.loads(config.read_text(encoding="utf-8")).get("eos_token_id")
    end = end[0] if isinstance(end, list) else end
    if not isinstance(end, int):
        raise FedheiError(f"{config} gives no eos_token_id; fedhei separates documents with it")
    return FileTokenizer(vocab, end)


# --- token batches ---------------------------------------------------------------------------


def token_sequences(texts: Sequence[str], tokenizer: Tokenizer, sequence_length: int) -> np.ndarray:
    """The documents as one token stream (each ended by end-of-text), cut into rows of
    ``sequence_length + 1`` tokens: a row's first ``sequence_length`` tokens are the input,
    its last ``sequence_length`` the targets. The incomplete tail is dropped."""
    stream = [token for text in texts for token in (*tokenizer.encode(text), tokenizer.end_of_text)]
    rows = len(stream) // (sequence_length + 1)
    return np.asarray(stream[: rows * (sequence_length + 1)], dtype=np.int64).reshape(rows, sequence_length + 1)


class TokenBatches:
    """Mini-batches of ``(input ids, target ids)``, each ``(B, T)``: targets are the inputs
    shifted by one token. Text has no augmentation: ``augment`` is accepted so that
    text and image batches answer the same training loop."""

    def __init__(self, sequences: np.ndarray) -> None:
        self.sequences = torch.from_numpy(np.ascontiguousarray(sequences, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.sequences)

    def subset(self, indices: Sequence[int]) -> TokenBatches:
        return TokenBatches(self.sequences[torch.as_tensor(indices, dtype=torch.int64)].numpy())

    def batches(
        self, batch_size: int, shuffle: bool = False, seed: int = 0, augment: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for index in batch_indices(len(self), batch_size, shuffle, torch.Generator().manual_seed(seed)):
            rows = self.sequences[index]
            yield rows[:, :-1], rows[:, 1:]


def client_batches(
    spec: TopicTextSpec, client_id: int, tokenizer: Tokenizer, sequence_length: int
) -> tuple[TokenBatches, TokenBatches]:
    """One client's training and test batches."""
    train, test = (TokenBatches(token_sequences(client_documents(spec, client_id, split), tokenizer, sequence_length))
                   for split in _SPLITS)
    return train, test
