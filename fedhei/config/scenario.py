"""The scenario: one typed, validated object parsed once from kebab-case run-config keys.

A scenario TOML holds the Flower app's run-config keys (as in
``[tool.flwr.app.config]``), so ``fedhei run scenarios/x.toml`` and
``flwr run . --run-config scenarios/x.toml`` run the same thing. Each field below is
the one definition of its setting: default, help, and choices or range
(:func:`~fedhei.config.settings.setting`). The components (partition, pre-training,
training, scoring, distillation, the server's step) take no defaults of their own and
are built from a scenario by its methods; the configuration reference, the command
lines' flags and ``pyproject.toml`` (kept equal by a test) are derived from these fields.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from fedhei.config.precision import Precision
from fedhei.config.settings import check_value, setting
from fedhei.data.cifar10 import NUM_CLASSES
from fedhei.data.partition import PartitionKind, PartitionSpec
from fedhei.data.text import TOPICS, TOPICS_SOURCE, TopicTextSpec
from fedhei.errors import FedheiError
from fedhei.method.roles import RULES
from fedhei.method.scoring import (
    ANY_MODEL_SCORERS,
    FEDERATED_SCORERS,
    PERTURBING_SCORERS,
    SENSING_DESIGNS,
    SIGNALS,
    SOLVERS,
    ScorerSettings,
)
from fedhei.models.language import tokenizer_for
from fedhei.models.registry import task_name
from fedhei.models.tasks import LANGUAGE_MODELING
from fedhei.training.device import check_device_name
from fedhei.training.distill import DistillSettings
from fedhei.training.loops import EVAL_PRECISIONS, TrainSettings
from fedhei.training.optimizers import CLIENT_OPTIMIZERS, LrSchedule, ServerOptimizer, ServerSettings, round_lr
from fedhei.training.pretrain import HUB, PretrainSpec
from fedhei.training.recipes import RECIPES

# When each client's model is also measured on the whole test set, weighted by its label proportions.
WEIGHTED_EVAL_CHOICES = ("final", "every-round", "off")


# Comma-separated settings, which a TOML file may also give as a list (a Flower run config holds no lists).
_LIST_KEYS = ("seeds", "compare-to")
# A hung client sleeps past round-timeout; beyond this a fault-hang study would idle for ages.
MAX_HANG_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Scenario:
    """Every setting of a run. Attribute ``foo_bar`` is run-config key ``foo-bar``."""

    # The run.
    name: str = setting("default", "The run's name: runs go to <out-dir>/<name>/<strategy> (a scenario file's own name "
                                   "by default).")
    strategy: str = setting("fedhei", "The strategy: a built-in name, or package.module:Class for your own.")
    num_server_rounds: int = setting(3, "Rounds of federated training.", at_least=1)
    num_clients: int = setting(10, "Simulated users (Flower clients), one data shard each.", at_least=1)
    fraction_train: float = setting(0.5, "Fraction of the clients sampled to train in each round.", at_least=0, at_most=1)
    fraction_evaluate: float = setting(1.0, "Fraction of the clients sampled to evaluate in each round (0: no per-round "
                                            "evaluation).", at_least=0, at_most=1)
    seed: int = setting(0, "The run's seed: partition, sampling, training, scoring and faults are drawn from it.",
                        at_least=0)
    seeds: str = setting("", "Repeat the run once per seed (\"0,1,2\"), each drawing its own partition, sampling and "
                             "training; empty: one run with seed.")
    device: str = setting("auto", "Where clients compute: auto, cpu, cuda, cuda:N or mps.")
    out_dir: str = setting("runs", "Where runs go, as <out-dir>/<name>/<strategy>; give an absolute path with flwr run.")
    # Failures and faults.
    max_failed_fraction: float = setting(0.5, "A round in which more than this fraction of the sampled clients fail stops "
                                              "the run.", at_least=0, at_most=1)
    round_timeout: float = setting(3600.0, "Seconds the server waits for a round's replies; later ones count as timeouts.",
                                   above=0)
    fault_crash: float = setting(0.0, "Injected fault: this fraction of training client-rounds raises in the ClientApp.",
                                 at_least=0, at_most=1)
    fault_hang: float = setting(0.0, "Injected fault: this fraction of training client-rounds answers after round-timeout.",
                                at_least=0, at_most=1)
    fault_drop: float = setting(0.0, "Injected fault: this fraction of training client-rounds leaves the round at once, as "
                                     "an offline node does.", at_least=0, at_most=1)
    # Resources.
    client_num_cpus: float = setting(1.0, "CPU cores each simulated client may use (its torch threads).", above=0)
    client_num_gpus: float = setting(0.0, "Share of a GPU each simulated client may use (0.25: four clients per GPU).",
                                     at_least=0)
    ray_address: str = setting("", "An existing Ray cluster to run the simulation on (host:port of its head); empty: a "
                                   "local one.")
    # The data and how it is split over users.
    data_source: str = setting("", "CIFAR-10: a cifar-10-batches-py folder, an image folder or .tar.gz, download or "
                                   "synthetic; topics for text; empty: search the usual places.")
    partition: str = setting("dirichlet", "How the training set is split over clients.",
                             choices=tuple(kind.value for kind in PartitionKind))
    dirichlet_alpha: float = setting(0.1, "Dirichlet concentration of the label skew (smaller: more skewed).", above=0)
    classes_per_client: int = setting(2, "Classes each client holds with the pathological partition.", at_least=1,
                                      at_most=NUM_CLASSES)
    public_fraction: float = setting(0.1, "Stratified slice of the training set that no client holds, for pre-training "
                                          "the base model.", above=0, below=1)
    test_ratio: float = setting(0.2, "Each client's test split, as a fraction of its training shard, with its label "
                                     "proportions.", above=0, at_most=1)
    # Language models: generated topic text (data-source "topics"), one topic per client.
    text_topics: int = setting(6, "Language models: distinct topics; client i writes about topic i mod text-topics.",
                               at_least=1, at_most=len(TOPICS))
    text_documents: int = setting(200, "Language models: training documents per client.", at_least=1)
    text_sequence_length: int = setting(64, "Language models: tokens (bytes) per training sequence.", at_least=1)
    # The shared base model.
    model: str = setting("vit-tiny-c10", "The model: a fedhei or timm name, or a local Qwen2 checkpoint folder.")
    base_model: str = setting("", "The base model's checkpoint, or \"hub\" for timm's weights; empty: the base fedhei "
                                  "ships when the pretrain-* settings are its own, else pre-trained on the public slice (a "
                                  "language model starts from its own weights or a seeded random init).")
    base_seed: int = setting(0, "Seed of the public slice and of pre-training: one base model shared by every run seed.",
                             at_least=0)
    base_per_seed: bool = setting(False, "Pre-train one base model per run seed instead (slice and pre-training follow "
                                         "seed).")
    pretrain_recipe: str = setting("smooth", "How the base model is regularized while pre-training.", choices=tuple(RECIPES))
    pretrain_epochs: float = setting(30.0, "Epochs of pre-training on the public slice.", above=0)
    pretrain_lr: float = setting(2e-3, "Peak learning rate of pre-training.", above=0)
    pretrain_batch_size: int = setting(128, "Batch size of pre-training (Mixup pairs images).", at_least=2)
    # Local training on each client.
    local_epochs: float = setting(1.0, "Epochs of local training per round (fractions allowed).", above=0)
    max_local_steps: int = setting(0, "At most this many optimizer steps per round; 0: no cap.", at_least=0)
    batch_size: int = setting(64, "Batch size of local training, scoring and evaluation.", at_least=1)
    lr: float = setting(5e-4, "Learning rate of local training (client-optimizer's; lr-schedule moves it over the rounds).", above=0)
    # The HEI method: scoring, roles, pruning.
    prob: float = setting(0.5, "Pruning ratio of generic layers, and the ratio at which scorers randomly perturb a layer.",
                          at_least=0, below=1)
    personal_factor: float = setting(0.5, "Personalized layers are pruned at prob times this.", at_least=0, at_most=1)
    scorer: str = setting("sensing", "How each layer's sensitivity is measured, from the client's own model and data "
                                     "alone.", choices=FEDERATED_SCORERS)
    signal: str = setting("loss", "What a perturbation is measured on: loss, or entropy (mean predictive entropy).",
                          choices=tuple(SIGNALS))
    sensing_measurements: float = setting(0.3, "Sensing budget: a fraction of the layer count in (0, 1], or a count above 1.",
                                          above=0)
    sensing_solver: str = setting("lasso", "Sparse recovery of the random and signed sensing designs.",
                                  choices=tuple(SOLVERS))
    sensing_design: str = setting("blocks", "How sensing groups layers into measurements.", choices=SENSING_DESIGNS)
    calibration_batches: int = setting(2, "Batches of the client's data each measurement runs on.", at_least=1)
    role_rule: str = setting("top-fraction", "How sensitivities become roles: sensitive layers are personalized.",
                             choices=tuple(RULES))
    role_threshold: float = setting(0.25, "The role rule's threshold (for top-fraction, the fraction personalized).",
                                    at_least=0, at_most=1)
    pruning_steps: int = setting(3, "Step buffering: a client reaches its target ratios over this many cubic steps, one "
                                    "per round it trains.", at_least=1)
    reclassify_every: int = setting(0, "Score and classify again every this many rounds; 0: once, on first participation.",
                                    at_least=0)
    shared_layers: str = setting("per-client", "Which layers are shared: each client's own generic ones, or a consensus "
                                               "fixed after round 1 by the clients' votes.",
                                 choices=("per-client", "consensus"))
    export_pruning: str = setting("unstructured", "The exported model: masked weights, or structurally pruned (whole "
                                                  "heads and channels removed).", choices=("unstructured", "structured"))
    # The final local round recovers from pruning by distillation from the unpruned model.
    distill: bool = setting(False, "Recover in the final local round by distillation from the model before its last "
                                   "pruning step.")
    distill_temperature: float = setting(4.0, "Distillation temperature: softens teacher and student.", above=0)
    distill_alpha: float = setting(0.5, "Weight of distillation's soft targets; the labels get 1 minus this.", at_least=0,
                                   at_most=1)
    # Client state and what clients send.
    state_store: str = setting("disk", "Where client state lives between rounds: disk (a killed run can resume) or "
                                       "context (Flower's in-memory context.state).", choices=("disk", "context"))
    upload_precision: str = setting("float32", "What clients upload: float32 weights, or the change from the global "
                                               "model at float16 or int8.",
                                    choices=tuple(precision.value for precision in Precision))
    state_dir: str = setting("", "Where client state is kept on disk; empty: state/ under the run directory.")
    weighted_eval: str = setting("final", "When each client's model is also measured on the whole test set, weighted by "
                                          "its label proportions (images only).", choices=WEIGHTED_EVAL_CHOICES)
    compare_to: str = setting("local,fedavg-ft", "A bench compares every strategy, client by client, against each of "
                                                 "these it ran.")
    # Strategies' own settings.
    ditto_lambda: float = setting(1.0, "Ditto: the personal model's pull toward the global one (lambda / 2 * ||v - w||^2).",
                                  at_least=0)
    ala_layers: int = setting(1, "FedALA: top parameter groups blended (1: the head; 2: also the last block, ...).",
                              at_least=1)
    ala_sample: float = setting(0.8, "FedALA: fraction of the shard the blending weights learn on.", at_least=0, at_most=1)
    ala_lr: float = setting(1.0, "FedALA: learning rate of the blending weights.", at_least=0)
    ala_start_epochs: int = setting(10, "FedALA: epochs the blending weights learn the first time (one on later rounds).",
                                    at_least=1)
    babu_finetune_body: bool = setting(True, "FedBABU: the final fine-tune trains the body along with the head.")
    # The federation's optimizers (Reddi et al. 2021): the clients' local one and the server's step.
    client_optimizer: str = setting("adamw", "The clients' local optimizer, fresh in every round.", choices=CLIENT_OPTIMIZERS)
    momentum: float = setting(0.9, "SGD's momentum on the clients (client-optimizer sgd).", at_least=0, below=1)
    weight_decay: float = setting(0.05, "The clients' weight decay (decoupled for adamw, L2 for sgd).", at_least=0)
    lr_schedule: str = setting("constant", "How the clients' lr moves over the rounds: constant, cosine (from lr in "
                               "round 1 towards 0) or exponential (lr * lr-decay ** (round - 1)).",
                               choices=tuple(schedule.value for schedule in LrSchedule))
    lr_decay: float = setting(0.98, "The per-round factor of lr-schedule exponential.", above=0, at_most=1)
    finetune_epochs: float = setting(1.0, "The final local round's epochs, the same for every strategy (a cosine "
                                     "from lr to 0 over them).", above=0)
    finetune_steps: int = setting(0, "Caps the final local round's optimizer steps; 0: no cap.", at_least=0)
    server_optimizer: str = setting("avg", "The server's step with the clients' masked average: avg (FedAvg), avgm "
                                    "(FedAvgM), adam (FedAdam) or yogi (FedYogi).",
                                    choices=tuple(kind.value for kind in ServerOptimizer))
    server_lr: float = setting(1.0, "The server's learning rate (1 with avg: the average itself).", above=0)
    server_momentum: float = setting(0.9, "avgm's server momentum.", at_least=0, below=1)
    server_beta1: float = setting(0.9, "adam and yogi's first-moment decay.", at_least=0, below=1)
    server_beta2: float = setting(0.99, "adam and yogi's second-moment decay.", at_least=0, below=1)
    server_tau: float = setting(1e-3, "adam and yogi's adaptivity (added to the root of the second moment; keeps their "
                                      "step finite).", above=0)
    global_eval_every: int = setting(1, "Evaluate the global model on the whole test set every this many rounds "
                                     "(and after the last; the base as round 0); 0: never.", at_least=0)
    eval_precision: str = setting("bfloat16", "Compute precision of every evaluation's forward pass (training stays "
                                  "float32); bfloat16 pays only where the CPU (AVX-512-BF16, AMX) or GPU computes in it.",
                                  choices=EVAL_PRECISIONS)

    def __post_init__(self) -> None:
        """Check every setting now, so a bad one fails at parse time, never inside a worker: each field
        against its own declaration, then the few rules that join several settings."""
        for entry in fields(self):
            check_value(_key(entry.name), entry, getattr(self, entry.name))
        if self.sensing_measurements > 1 and self.sensing_measurements != int(self.sensing_measurements):
            raise FedheiError(f"sensing-measurements is {self.sensing_measurements}; give a fraction of the layer count "
                              "in (0, 1] or a whole number of measurements")
        if self.scorer in PERTURBING_SCORERS and self.prob == 0:
            raise FedheiError(f"prob is {self.prob:g}, but scorer '{self.scorer}' perturbs each layer by random pruning "
                              "at ratio prob, which needs a prob in (0, 1)")
        self._check_failure_settings()
        check_device_name(self.device)
        self._check_seeds()
        if self.is_language_model:
            self._check_language_model()
        elif self.data_source == TOPICS_SOURCE:
            raise FedheiError(f"data-source '{TOPICS_SOURCE}' is text, but {self.model} is an image model; "
                              "choose a language model (e.g. qwen2-tiny)")

    def _check_failure_settings(self) -> None:
        injected = self.fault_crash + self.fault_hang + self.fault_drop
        if injected > 1:
            raise FedheiError(f"fault-crash + fault-hang + fault-drop is {injected:g}; together they are a fraction of "
                              "client-rounds and must not exceed 1")
        if self.fault_hang > 0 and self.round_timeout > MAX_HANG_TIMEOUT_S:
            raise FedheiError(f"fault-hang is {self.fault_hang:g} but round-timeout is {self.round_timeout:g} s: a hung "
                              f"client sleeps past the timeout, so set round-timeout to at most {MAX_HANG_TIMEOUT_S:g} "
                              "(e.g. 30)")

    def _check_seeds(self) -> None:
        if self.seeds and self.seed != 0:
            raise FedheiError(f"seed is {self.seed} and seeds is '{self.seeds}'; seeds sets every run's seed, so give one "
                              "of the two (e.g. seeds = \"0,1,2\", or seed = 3 alone)")
        if self.base_per_seed and self.base_seed != 0:
            raise FedheiError(f"base-seed is {self.base_seed} but base-per-seed is true, which pre-trains with each run's "
                              "own seed; give one of the two")
        self.run_seeds()
        self.references()

    def _check_language_model(self) -> None:
        if self.data_source not in ("", TOPICS_SOURCE):
            raise FedheiError(f"data-source is '{self.data_source}' but {self.model} is a language model; "
                              f"use '{TOPICS_SOURCE}' (generated topic text) or leave it empty")
        tokenizer_for(self.model)
        if self.scorer not in ANY_MODEL_SCORERS:
            raise FedheiError(f"scorer '{self.scorer}' reads a ViT's attention and cannot score a language model; choose "
                              f"one of: {', '.join(ANY_MODEL_SCORERS)}")
        if self.base_model == HUB:
            raise FedheiError(f"base-model is '{HUB}' but {self.model} is a language model, which fedhei never "
                              "downloads; give a local checkpoint folder, or leave it empty for a seeded random start")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Scenario:
        """Parse kebab-case keys; an unknown key or a value of the wrong type is a user error."""
        known = {_key(entry.name): entry for entry in fields(cls)}
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

    def round_lr(self, server_round: int) -> float:
        """The clients' learning rate in ``server_round``, on the federation's schedule."""
        return round_lr(self.lr, LrSchedule(self.lr_schedule), self.lr_decay, server_round, self.num_server_rounds)

    def _client_training(self, epochs: float, lr: float, max_steps: int | None, decay_in_call: bool) -> TrainSettings:
        """The clients' optimizer, weight decay and batch size, with one call's budget and rate."""
        return TrainSettings(epochs=epochs, batch_size=self.batch_size, lr=lr, weight_decay=self.weight_decay,
                             max_steps=max_steps, optimizer=self.client_optimizer, momentum=self.momentum,
                             decay_in_call=decay_in_call)

    def train_settings(self, server_round: int) -> TrainSettings:
        """A client's training in ``server_round``: the round's rate, held through the call."""
        return self._client_training(self.local_epochs, self.round_lr(server_round), self.max_local_steps or None, False)

    def finetune_settings(self) -> TrainSettings:
        """The final local round before export: the same budget for every strategy, a cosine from lr to 0."""
        return self._client_training(self.finetune_epochs, self.lr, self.finetune_steps or None, True)

    def centralized_settings(self, steps: int, decay_in_call: bool) -> TrainSettings:
        """Exactly ``steps`` steps of the clients' training at ``lr`` on data pooled from every client: the
        centralized reference a federation is held against (each epoch takes at least one step)."""
        return self._client_training(float(steps), self.lr, steps, decay_in_call)

    def scorer_settings(self) -> ScorerSettings:
        """What a client's scorer measures with: its signal, perturbation ratio and sensing budget."""
        return ScorerSettings(signal=self.signal, prob=self.prob, measurements=self.sensing_measurements,
                              solver=self.sensing_solver, design=self.sensing_design)

    def distill_settings(self) -> DistillSettings:
        return DistillSettings(temperature=self.distill_temperature, alpha=self.distill_alpha)

    def server_settings(self) -> ServerSettings:
        return ServerSettings(
            kind=ServerOptimizer(self.server_optimizer),
            lr=self.server_lr,
            momentum=self.server_momentum,
            beta1=self.server_beta1,
            beta2=self.server_beta2,
            tau=self.server_tau,
        )


def check_setting(key: str, value: Any) -> None:
    """One value of a setting against its declaration, for a command that compares several values of it."""
    entry = next(entry for entry in fields(Scenario) if _key(entry.name) == key)
    check_value(key, entry, value)


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


def load_scenario(path: Path, overrides: Sequence[str], data: str = "") -> Scenario:
    """A scenario file with the command line's ``--set`` overrides and ``--data`` source on top."""
    values = dict(parse_override(text) for text in overrides)
    if data:
        values["data-source"] = data
    return Scenario.from_toml(path, values)


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
