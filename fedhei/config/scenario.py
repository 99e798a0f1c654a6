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
from fedhei.errors import FedheiError
from fedhei.training.distill import DistillSettings
from fedhei.training.loops import TrainSettings
from fedhei.training.pretrain import PretrainSpec
from fedhei.training.recipes import RECIPES

_CHOICES: dict[str, tuple[str, ...]] = {
    "partition": tuple(kind.value for kind in PartitionKind),
    "signal": ("loss", "entropy"),
    "sensing-solver": ("lasso", "omp"),
    "role-rule": ("absolute", "relative", "top-fraction"),
    "shared-layers": ("per-client", "consensus"),
    "state-store": ("context", "disk"),
    "export-pruning": ("unstructured", "structured"),
    "pretrain-recipe": tuple(RECIPES),
}


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
    device: str = "auto"
    out_dir: str = "runs"
    # The data and how it is split over users.
    data_source: str = ""
    partition: str = "dirichlet"
    dirichlet_alpha: float = 0.1
    classes_per_client: int = 2
    public_fraction: float = 0.1
    test_ratio: float = 0.2
    # The shared base model.
    model: str = "vit-tiny-c10"
    base_model: str = ""
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
    sensing_measurements: float = 0.5
    sensing_solver: str = "lasso"
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
    # Where per-client state lives between rounds.
    state_store: str = "context"
    state_dir: str = ""

    def __post_init__(self) -> None:
        for key, allowed in _CHOICES.items():
            value = getattr(self, _attr(key))
            if value not in allowed:
                raise FedheiError(f"{key} is '{value}'; choose one of: {', '.join(allowed)}")
        positive = ("num-server-rounds", "num-clients", "batch-size", "pruning-steps", "calibration-batches",
                    "pretrain-batch-size")
        for key in positive:
            if getattr(self, _attr(key)) < 1:
                raise FedheiError(f"{key} is {getattr(self, _attr(key))}; it must be at least 1")
        for key in ("fraction-train", "fraction-evaluate", "prob", "personal-factor"):
            value = getattr(self, _attr(key))
            if not 0 <= value <= 1:
                raise FedheiError(f"{key} is {value}; it must be in [0, 1]")
        if not self.local_epochs > 0 or not self.lr > 0:
            raise FedheiError("local-epochs and lr must be > 0")
        if self.sensing_measurements <= 0:
            raise FedheiError(f"sensing-measurements is {self.sensing_measurements}; give a fraction of the layer "
                              "count in (0, 1] or a count above 1")
        # Built here so a bad split or model name fails at parse time, not inside a worker.
        self.partition_spec()
        self.pretrain_spec()
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

    def partition_spec(self) -> PartitionSpec:
        return PartitionSpec(
            kind=PartitionKind(self.partition),
            num_clients=self.num_clients,
            alpha=self.dirichlet_alpha,
            classes_per_client=self.classes_per_client,
            public_fraction=self.public_fraction,
            test_ratio=self.test_ratio,
            seed=self.seed,
        )

    def pretrain_spec(self) -> PretrainSpec:
        return PretrainSpec(
            model=self.model,
            recipe=self.pretrain_recipe,
            epochs=self.pretrain_epochs,
            lr=self.pretrain_lr,
            batch_size=self.pretrain_batch_size,
            seed=self.seed,
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


def _coerce(key: str, value: Any, expected: type) -> Any:
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
