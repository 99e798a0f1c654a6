"""The scenario: one typed, validated object parsed once from kebab-case run-config keys.

A scenario TOML holds the Flower app's run-config keys (as in
``[tool.flwr.app.config]``), so ``fedhei run scenarios/x.toml`` and
``flwr run . --run-config scenarios/x.toml`` run the same thing. The defaults below
are the only defaults; a test keeps ``pyproject.toml`` equal to them.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from fedhei.data.partition import PartitionKind, PartitionSpec
from fedhei.data.text import TOPICS_SOURCE, TopicTextSpec
from fedhei.errors import FedheiError
from fedhei.federation.wire import Precision
from fedhei.method.roles import RULES
from fedhei.method.scoring import SENSING_DESIGNS, build_scorer, check_federated_scorer
from fedhei.models.language import tokenizer_for
from fedhei.models.registry import task_name
from fedhei.training.device import check_device_name
from fedhei.training.distill import DistillSettings
from fedhei.training.loops import TrainSettings
from fedhei.training.pretrain import HUB, PretrainSpec
from fedhei.training.recipes import RECIPES
from fedhei.training.tasks import LANGUAGE_MODELING

# When each client's model is also measured on the whole test set, weighted by its label proportions.
WEIGHTED_EVAL_CHOICES = ("final", "every-round", "off")
# Choices that belong to no registry; the others are read from their registries below.
_CHOICES: dict[str, tuple[str, ...]] = {
    "partition": tuple(kind.value for kind in PartitionKind),
    "role-rule": tuple(RULES),
    "sensing-design": SENSING_DESIGNS,
    "shared-layers": ("per-client", "consensus"),
    "state-store": ("disk", "context"),
    "export-pruning": ("unstructured", "structured"),
    "upload-precision": tuple(precision.value for precision in Precision),
    "weighted-eval": WEIGHTED_EVAL_CHOICES,
    "pretrain-recipe": tuple(RECIPES),
}
# Comma-separated settings, which a TOML file may also give as a list (a Flower run config holds no lists).
_LIST_KEYS = ("seeds", "compare-to")
# A hung client sleeps past round-timeout; beyond this a fault-hang study would idle for ages.
MAX_HANG_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Scenario:
    """Every setting of a run. Attribute ``foo_bar`` is run-config key ``foo-bar``."""

    # The run.
    name: str = "default"
    strategy: str = "fedhei"
    num_server_rounds: int = 3
    num_clients: int = 10
    fraction_train: float = 0.5
    fraction_evaluate: float = 1.0
    seed: int = 0
    # Repeat the scenario over these seeds ("0,1,2"): each repetition is a run whose `seed` is that
    # seed (partition, sampling and training drawn from it). Empty: one run with `seed`.
    seeds: str = ""
    device: str = "auto"
    out_dir: str = "runs"
    # Failures: a round in which more than this fraction of the sampled clients fail stops the run.
    max_failed_fraction: float = 0.5
    # Seconds the server waits for a round's replies; later ones count as timeouts.
    round_timeout: float = 3600.0
    # Injected faults, each a fraction of training client-rounds (fedhei.federation.faults).
    fault_crash: float = 0.0
    fault_hang: float = 0.0
    fault_drop: float = 0.0
    # What each simulated client may use: CPU cores (its torch threads) and a share of a GPU.
    client_num_cpus: float = 1.0
    client_num_gpus: float = 0.0
    # An existing Ray cluster to run the simulation on ("host:port" of its head); empty: a local one.
    ray_address: str = ""
    # The data and how it is split over users.
    data_source: str = ""
    partition: str = "dirichlet"
    dirichlet_alpha: float = 0.1
    classes_per_client: int = 2
    public_fraction: float = 0.1
    test_ratio: float = 0.2
    # Language models: generated topic text (data-source "topics"), one topic per client.
    text_topics: int = 6
    text_documents: int = 200
    text_sequence_length: int = 64
    # The shared base model. An image model's is pre-trained on the public slice unless base-model names a
    # checkpoint (or "hub"). A language model is never pre-trained nor downloaded: it starts from the checkpoint
    # base-model names (a Qwen2 folder or a fedhei safetensors file), else from the weights of the checkpoint
    # folder the model is, else from its seeded random initialization.
    model: str = "vit-tiny-c10"
    base_model: str = ""
    # The seed of the public slice and of pre-training: one base model shared by every run seed, so
    # no client of any seed holds an image the base was trained on.
    base_seed: int = 0
    # Pre-train one base model per run seed instead (slice and pre-training then follow `seed`).
    base_per_seed: bool = False
    pretrain_recipe: str = "smooth"
    pretrain_epochs: float = 30.0
    pretrain_lr: float = 2e-3
    pretrain_batch_size: int = 128
    # Local training on each client.
    local_epochs: float = 1.0
    max_local_steps: int = 0
    batch_size: int = 64
    lr: float = 5e-4
    # The HEI method: scoring, roles, pruning.
    prob: float = 0.5
    personal_factor: float = 0.5
    scorer: str = "sensing"
    signal: str = "loss"
    sensing_measurements: float = 0.3
    sensing_solver: str = "lasso"
    sensing_design: str = "blocks"
    calibration_batches: int = 2
    role_rule: str = "top-fraction"
    role_threshold: float = 0.25
    pruning_steps: int = 3
    reclassify_every: int = 0
    shared_layers: str = "per-client"
    export_pruning: str = "unstructured"
    # The final local round recovers from pruning by distillation from the unpruned model.
    distill: bool = False
    distill_temperature: float = 4.0
    distill_alpha: float = 0.5
    # Where per-client state lives between rounds: "disk" (under the run directory, so a killed
    # run can resume) or "context" (Flower's in-memory context.state, lost with the process).
    state_store: str = "disk"
    # What clients upload: float32, or the change from the global model at float16 or int8.
    upload_precision: str = "float32"
    state_dir: str = ""
    # The final evaluation also measures each client's model on the whole test set, per class weighted
    # by its training shard's label proportions (the expectation its sampled test split estimates):
    # "final", "every-round" (the per-round evaluations too) or "off". Text has no labels to weigh by: a
    # language model's clients report next-token accuracy and perplexity on their own test text only.
    weighted_eval: str = "final"
    # A bench compares every strategy, client by client, against each of these it ran.
    compare_to: str = "local,fedavg-ft"
    # Ditto: the personal model's pull toward the global model (lambda / 2 * ||v - w||^2).
    ditto_lambda: float = 1.0
    # FedALA: how many of the model's top parameter groups (timm's: the head, then blocks from
    # the last) blend global into local; the fraction of the shard the blending weights learn
    # on, their learning rate, and their epochs the first time (one epoch on later rounds).
    ala_layers: int = 1
    ala_sample: float = 0.8
    ala_lr: float = 1.0
    ala_start_epochs: int = 10
    # FedBABU: the final fine-tune trains the body along with the head (else the head alone).
    babu_finetune_body: bool = True

    def __post_init__(self) -> None:
        """Check every setting now, so a bad one fails at parse time, never inside a worker."""
        for key, allowed in _CHOICES.items():
            value = getattr(self, _attr(key))
            if value not in allowed:
                raise FedheiError(f"{key} is '{value}'; choose one of: {', '.join(allowed)}")
        check_federated_scorer(self.scorer)
        positive = ("num-server-rounds", "num-clients", "batch-size", "pruning-steps", "calibration-batches",
                    "ala-layers", "ala-start-epochs", "pretrain-batch-size")
        for key in positive:
            if getattr(self, _attr(key)) < 1:
                raise FedheiError(f"{key} is {getattr(self, _attr(key))}; it must be at least 1")
        fractions = ("fraction-train", "fraction-evaluate", "personal-factor", "max-failed-fraction",
                     "fault-crash", "fault-hang", "fault-drop", "ala-sample")
        for key in fractions:
            value = getattr(self, _attr(key))
            if not 0 <= value <= 1:
                raise FedheiError(f"{key} is {value}; it must be in [0, 1]")
        if not 0 <= self.prob < 1:
            raise FedheiError(f"prob is {self.prob}; it must be in [0, 1) (the pruning ratio of generic layers)")
        if not self.local_epochs > 0 or not self.lr > 0:
            raise FedheiError("local-epochs and lr must be > 0")
        for key in ("ditto-lambda", "ala-lr"):
            if not getattr(self, _attr(key)) >= 0:
                raise FedheiError(f"{key} is {getattr(self, _attr(key))}; it must be >= 0")
        if self.sensing_measurements <= 0:
            raise FedheiError(f"sensing-measurements is {self.sensing_measurements}; give a fraction of the layer "
                              "count in (0, 1] or a count above 1")
        if not 0 <= self.role_threshold <= 1:
            raise FedheiError(f"role-threshold is {self.role_threshold}; it must be in [0, 1] "
                              f"(a fraction for role-rule '{self.role_rule}')")
        self._check_failure_settings()
        self._check_resources()
        self._check_seeds()
        # Built here so a bad split, model, schedule or scorer fails at parse time, not inside a worker.
        self.partition_spec()
        self.pretrain_spec()
        if self.is_language_model:
            if self.data_source not in ("", TOPICS_SOURCE):
                raise FedheiError(f"data-source is '{self.data_source}' but {self.model} is a language model; "
                                  f"use '{TOPICS_SOURCE}' (generated topic text) or leave it empty")
            if self.text_sequence_length < 1:
                raise FedheiError(f"text-sequence-length is {self.text_sequence_length}; it must be at least 1")
            self.text_spec()
            tokenizer_for(self.model)
            check_federated_scorer(self.scorer, language_model=True)
            if self.base_model == HUB:
                raise FedheiError(f"base-model is '{HUB}' but {self.model} is a language model, which fedhei never "
                                  "downloads; give a local checkpoint folder, or leave it empty for a seeded random start")
        elif self.data_source == TOPICS_SOURCE:
            raise FedheiError(f"data-source '{TOPICS_SOURCE}' is text, but {self.model} is an image model; "
                              "choose a language model (e.g. qwen2-tiny)")
        self._check_scorer()

    def _check_failure_settings(self) -> None:
        if not self.round_timeout > 0:
            raise FedheiError(f"round-timeout is {self.round_timeout}; give the seconds the server waits for a round's "
                              "replies (> 0)")
        injected = self.fault_crash + self.fault_hang + self.fault_drop
        if injected > 1:
            raise FedheiError(f"fault-crash + fault-hang + fault-drop is {injected:g}; together they are a fraction of "
                              "client-rounds and must not exceed 1")
        if self.fault_hang > 0 and self.round_timeout > MAX_HANG_TIMEOUT_S:
            raise FedheiError(f"fault-hang is {self.fault_hang:g} but round-timeout is {self.round_timeout:g} s: a hung "
                              f"client sleeps past the timeout, so set round-timeout to at most {MAX_HANG_TIMEOUT_S:g} "
                              "(e.g. 30)")

    def _check_seeds(self) -> None:
        if self.seed < 0 or self.base_seed < 0:
            raise FedheiError(f"seed is {self.seed} and base-seed {self.base_seed}; seeds must be non-negative integers")
        if self.seeds and self.seed != 0:
            raise FedheiError(f"seed is {self.seed} and seeds is '{self.seeds}'; seeds sets every run's seed, so give one "
                              "of the two (e.g. seeds = \"0,1,2\", or seed = 3 alone)")
        if self.base_per_seed and self.base_seed != 0:
            raise FedheiError(f"base-seed is {self.base_seed} but base-per-seed is true, which pre-trains with each run's "
                              "own seed; give one of the two")
        self.run_seeds()
        self.references()

    def _check_resources(self) -> None:
        check_device_name(self.device)
        if not self.client_num_cpus > 0 or self.client_num_gpus < 0:
            raise FedheiError(f"client-num-cpus is {self.client_num_cpus} and client-num-gpus {self.client_num_gpus}; "
                              "CPUs must be > 0 and GPUs >= 0 (a fraction shares one GPU between clients)")

    def _check_scorer(self) -> None:
        """Build the scorer every client will build, so its settings fail here if they would fail there."""
        try:
            build_scorer(self.scorer, signal=self.signal, prob=self.prob, measurements=self.sensing_measurements,
                         solver=self.sensing_solver, design=self.sensing_design)
        except FedheiError as error:
            if "prob" not in str(error):
                raise
            raise FedheiError(f"prob is {self.prob:g}, but scorer '{self.scorer}' perturbs each layer by random pruning "
                              "at ratio prob, which needs a prob in (0, 1)") from error
        DistillSettings(temperature=self.distill_temperature, alpha=self.distill_alpha)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Scenario:
        """Parse kebab-case keys; an unknown key or a value of the wrong type is a user error."""
        known = {_key(field.name): field for field in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                raise FedheiError(f"unknown setting '{key}'; known settings: {', '.join(sorted(known))}")
            kwargs[known[key].name] = _coerce(key, value, type(getattr(cls, known[key].name)))
        return cls(**kwargs)

    @classmethod
    def from_toml(cls, path: Path | str, overrides: Mapping[str, Any] | None = None) -> Scenario:
        path = Path(path)
        if not path.is_file():
            raise FedheiError(f"scenario {path} does not exist; the scenarios/ folder has the shipped ones")
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as error:
            raise FedheiError(f"scenario {path} is not a text file (byte {error.start} is not UTF-8); a scenario is a TOML "
                              "file of run-config keys") from error
        except OSError as error:
            raise FedheiError(f"cannot read scenario {path} ({error.strerror or error})") from error
        except tomllib.TOMLDecodeError as error:
            raise FedheiError(f"scenario {path} is not valid TOML: {error}") from error
        nested = [key for key, value in values.items() if isinstance(value, dict)]
        if nested:
            raise FedheiError(f"scenario {path} has tables ({', '.join(nested)}); a scenario is flat run-config keys")
        values.setdefault("name", path.stem)
        return cls.from_mapping({**values, **(overrides or {})})

    def to_mapping(self) -> dict[str, Any]:
        """Kebab-case keys, ready for a Flower ConfigRecord or a TOML file."""
        return {_key(name): value for name, value in dataclasses.asdict(self).items()}

    def run_dir(self) -> Path:
        """Where a run of this scenario writes unless told otherwise."""
        return Path(self.out_dir) / self.name / self.strategy

    def replace(self, **changes: Any) -> Scenario:
        return dataclasses.replace(self, **changes)

    def run_seeds(self) -> tuple[int, ...]:
        """The seeds this scenario runs: ``seeds``, else ``seed`` alone."""
        if not self.seeds:
            return (self.seed,)
        return _parse_list("seeds", self.seeds, int)

    def for_seed(self, seed: int) -> Scenario:
        """One repetition: a single run drawn from ``seed``."""
        return self.replace(seed=seed, seeds="")

    def references(self) -> tuple[str, ...]:
        """The strategies a bench compares every other strategy against (``compare-to``)."""
        return _parse_list("compare-to", self.compare_to, str) if self.compare_to.strip() else ()

    @property
    def pretrain_seed(self) -> int:
        """The seed of the public slice and the base model's pre-training."""
        return self.seed if self.base_per_seed else self.base_seed

    def partition_spec(self) -> PartitionSpec:
        return PartitionSpec(
            kind=PartitionKind(self.partition),
            num_clients=self.num_clients,
            alpha=self.dirichlet_alpha,
            classes_per_client=self.classes_per_client,
            public_fraction=self.public_fraction,
            test_ratio=self.test_ratio,
            seed=self.seed,
            public_seed=self.pretrain_seed,
        )

    @property
    def is_language_model(self) -> bool:
        return task_name(self.model) == LANGUAGE_MODELING.name

    def text_spec(self) -> TopicTextSpec:
        """Topic text split as CIFAR-10 is: test text ``test-ratio`` of each client's training
        text, and a public mixture, ``public-fraction`` of all text, that no client holds."""
        client_total = self.num_clients * self.text_documents
        return TopicTextSpec(
            num_clients=self.num_clients,
            num_topics=self.text_topics,
            train_documents=self.text_documents,
            test_documents=max(1, round(self.test_ratio * self.text_documents)),
            public_documents=round(self.public_fraction / (1 - self.public_fraction) * client_total),
            seed=self.seed,
        )

    def pretrain_spec(self) -> PretrainSpec:
        return PretrainSpec(
            model=self.model,
            recipe=self.pretrain_recipe,
            epochs=self.pretrain_epochs,
            lr=self.pretrain_lr,
            batch_size=self.pretrain_batch_size,
            seed=self.pretrain_seed,
            public_fraction=self.public_fraction,
        )

    def train_settings(self) -> TrainSettings:
        return TrainSettings(
            epochs=self.local_epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            max_steps=self.max_local_steps or None,
        )


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value is read as TOML (so 0.5, true, "x")."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise FedheiError(f"--set {text!r} is not key=value (e.g. --set num-server-rounds=5)")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value


def _parse_list(key: str, text: str, kind: type) -> tuple[Any, ...]:
    """A comma-separated setting ("0,1,2", "local,fedavg-ft"): distinct items, integers >= 0 where asked."""
    items = [item.strip() for item in text.split(",")]
    try:
        values = tuple(kind(item) for item in items)
    except ValueError:
        values = ()
    if not values or "" in items or len(set(values)) != len(values) or any(kind is int and value < 0 for value in values):
        example = "0,1,2" if kind is int else "local,fedavg-ft"
        raise FedheiError(f"{key} is '{text}'; give distinct {'non-negative integers' if kind is int else 'names'} "
                          f"separated by commas, e.g. \"{example}\"")
    return values


def _coerce(key: str, value: Any, expected: type) -> Any:
    if key in _LIST_KEYS and isinstance(value, list):
        return ",".join(str(item) for item in value)
    if key == "seeds" and isinstance(value, int) and not isinstance(value, bool):
        # One seed, as `--seeds 0`, `--set seeds=0` or a TOML `seeds = 0` give it.
        return str(value)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise FedheiError(f"{key} is {value!r} ({type(value).__name__}); it must be a {expected.__name__}")
    return value


def _key(attr: str) -> str:
    return attr.replace("_", "-")


def _attr(key: str) -> str:
    return key.replace("-", "_")
