"""``fedhei compress``: one user's personalized compression, HEI against its baselines.

Fine-tunes the base model on one user's data, scores and classifies its layers,
then prunes it at each ``prob`` with HEI's roles, with random roles (as many
personalized layers as HEI found) and with uniform magnitude pruning at the same
fraction of linear weights, one-shot and step-buffered, each followed by the same
fine-tuning budget. Beside it, every other scorer (the single signals, the fused
ones fitted on other clients, HEI's) is compared on the same model: forward
passes, agreement of its roles with the exhaustive roles, and accuracy right
after pruning with its roles. Prints two tables and writes every figure to a JSON file.

Its settings are read once into a :class:`CompressConfig`: the :class:`Scenario`
that its key-named flags give (defaults, help and checks are the scenario's), and
the few options only compress has.

Heavy imports live inside the functions: the parser is built for every command.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from fedhei.config.scenario import Scenario
    from fedhei.training.loops import TrainSettings

DEFAULT_OUT = Path("runs") / "compress.json"

# The scenario settings compress takes as flags (``--key``), by argument group; the scenario gives their
# defaults, help and checks. The rest of the scenario stays at its defaults, except that the public slice
# and the base model's pre-training follow --seed (base-per-seed), so each seed is a user of its own.
_GROUPS: dict[str, tuple[str, ...]] = {
    "base model": ("model", "pretrain-epochs"),
    "the user's data": ("data-source", "num-clients", "partition", "dirichlet-alpha", "classes-per-client",
                        "public-fraction", "seed"),
    "scoring and roles": ("scorer", "signal", "sensing-measurements", "sensing-design", "sensing-solver",
                          "calibration-batches", "role-rule", "role-threshold"),
    "pruning": ("personal-factor", "pruning-steps"),
    "training budget": ("finetune-epochs", "lr", "batch-size", "device"),
    "distillation": ("distill", "distill-temperature", "distill-alpha"),
}
COMPRESS_KEYS: tuple[str, ...] = tuple(key for keys in _GROUPS.values() for key in keys)
_FIXED = {"base-per-seed": True}


def _csv_floats(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got '{text}'") from error


def _csv_ints(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected class indices separated by commas, got '{text}'") from error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fedhei.config.flags import add_scenario_flags

    groups = {title: parser.add_argument_group(title) for title in (*_GROUPS, "scorer comparison", "output")}
    for title, keys in _GROUPS.items():
        add_scenario_flags(groups[title], keys)
    groups["base model"].add_argument("--base", type=Path,
                                      help="base-model checkpoint (safetensors); default: the cached pre-train")

    user = groups["the user's data"]
    who = user.add_mutually_exclusive_group()
    who.add_argument("--client", type=int, default=0, help="the user is this client of the partition")
    who.add_argument("--classes", type=_csv_ints, help="the user holds these classes instead, e.g. 0,3,5")
    user.add_argument("--max-train", type=int, default=0, help="use at most this many training images (0: all)")

    compare = groups["scorer comparison"]
    compare.add_argument("--compare-scorers", default="all",
                         help="scorers to compare with the exhaustive roles, comma separated; 'all' or 'none'")
    compare.add_argument("--fusion-clients", type=int, default=4,
                         help="fused scorers are fitted on this many other clients of the partition")
    compare.add_argument("--compare-recovery", action="store_true",
                         help="also fine-tune each compared scorer's pruned model with the recovery budget")

    pruning = groups["pruning"]
    pruning.add_argument("--prob", type=_csv_floats, action="append",
                         help="pruning ratios of generic layers to compare, repeatable or a comma list (default: the "
                              "scenario's prob, which the scorers also perturb at)")
    pruning.add_argument("--one-shot", action=argparse.BooleanOptionalAction, default=True,
                         help="also prune in one shot, for comparison")
    pruning.add_argument("--structured", action="store_true",
                         help="also prune whole heads and MLP channels (really smaller files)")

    groups["training budget"].add_argument(
        "--recovery-epochs", type=float, default=1.0,
        help="fine-tuning after pruning, in total over the steps (the same for every configuration); finetune-epochs "
             "is the personal fine-tuning of the base before scoring")

    output = groups["output"]
    output.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON")
    output.add_argument("--save-models", type=Path, help="keep every pruned checkpoint in this folder")


@dataclass(frozen=True)
class CompressConfig:
    """One ``fedhei compress`` run: the scenario its flags give and the options only compress has,
    read from the arguments once and checked before minutes of training."""

    scenario: Scenario
    base: Path | None
    client: int
    # The user's classes instead of a client of the partition.
    classes: tuple[int, ...] | None
    max_train: int
    # The pruning ratios compared (the scenario's prob is what the scorers perturb at).
    probs: tuple[float, ...]
    one_shot: bool
    structured: bool
    recovery_epochs: float
    # Scorers compared with the exhaustive roles.
    compared: tuple[str, ...]
    fusion_clients: int
    compare_recovery: bool
    out: Path
    save_models: Path | None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CompressConfig:
        """Read the parsed arguments once: the scenario's flags through its own parser and checks, the rest as given."""
        from fedhei.config.flags import scenario_from_flags
        from fedhei.method.scoring import SCORER_NAMES

        scenario = scenario_from_flags(args, COMPRESS_KEYS, _FIXED)
        probs = [prob for group in (args.prob or [[scenario.prob]]) for prob in group]
        if args.compare_scorers == "none":
            compared: list[str] = []
        elif args.compare_scorers == "all":
            compared = list(SCORER_NAMES)
        else:
            compared = [name.strip() for name in args.compare_scorers.split(",") if name.strip()]
        return cls(scenario=scenario, base=args.base, client=args.client,
                   classes=None if args.classes is None else tuple(sorted(set(args.classes))), max_train=args.max_train,
                   probs=tuple(sorted(set(probs))), one_shot=args.one_shot, structured=args.structured,
                   recovery_epochs=args.recovery_epochs, compared=tuple(compared), fusion_clients=args.fusion_clients,
                   compare_recovery=args.compare_recovery, out=args.out, save_models=args.save_models)

    def __post_init__(self) -> None:
        from fedhei.config.scenario import check_setting
        from fedhei.data.cifar10 import NUM_CLASSES
        from fedhei.errors import FedheiError
        from fedhei.method.scoring import FEDERATED_SCORERS, SCORER_NAMES

        if not self.probs:
            raise FedheiError("--prob must give one or more pruning ratios")
        for prob in self.probs:
            check_setting("prob", prob)
        if self.classes is None and not 0 <= self.client < self.scenario.num_clients:
            raise FedheiError(f"--client is {self.client}; the partition has clients 0..{self.scenario.num_clients - 1}")
        if self.classes is not None and (not self.classes or not all(0 <= label < NUM_CLASSES for label in self.classes)):
            raise FedheiError(f"--classes must name CIFAR-10 classes 0..{NUM_CLASSES - 1}; got {list(self.classes)}")
        if self.recovery_epochs < 0 or self.max_train < 0:
            raise FedheiError("--recovery-epochs and --max-train must be >= 0")
        unknown = [name for name in self.compared if name not in SCORER_NAMES]
        if unknown:
            raise FedheiError(f"unknown scorer '{unknown[0]}' in --compare-scorers; choose from: {', '.join(SCORER_NAMES)}")
        if any(name not in FEDERATED_SCORERS for name in self.compared) and self.fusion_clients < 1:
            raise FedheiError(f"--fusion-clients is {self.fusion_clients}; the fused scorers need at least 1 other client")

    def settings(self) -> dict[str, Any]:
        """What the report records: the scenario's settings compress takes, by key, and its own options."""
        scenario = self.scenario.to_mapping()
        own = {entry.name.replace("_", "-"): getattr(self, entry.name) for entry in fields(self) if entry.name != "scenario"}
        return {**{key: scenario[key] for key in COMPRESS_KEYS},
                **{key: str(value) if isinstance(value, Path) else value for key, value in own.items()}}

    def training(self, epochs: float) -> TrainSettings:
        """The user's fine-tuning (before scoring, and to recover after pruning): the scenario's final-round
        training with ``epochs``."""
        return replace(self.scenario.finetune_settings(), epochs=epochs)


@dataclass(frozen=True)
class Config:
    """One row of the comparison."""

    prob: float
    method: str
    steps: int
    structured: bool

    @property
    def schedule(self) -> str:
        return "one-shot" if self.steps == 1 else f"{self.steps}-step"

    @property
    def key(self) -> str:
        kind = "structured" if self.structured else "masked"
        return f"p{self.prob:g}-{self.method}-{self.schedule}-{kind}"


@dataclass(frozen=True)
class UserData:
    """Indices into the training and test sets of the one user being compressed."""

    train: np.ndarray
    test: np.ndarray
    description: str


def _partition(data: Any, scenario: Scenario) -> Any:
    from fedhei.data.partition import make_partition

    return make_partition(data.train.labels, data.test.labels, scenario.partition_spec())


def _user_data(data: Any, run: CompressConfig) -> UserData:
    """The user's training and test indices: a client of a partition, or a class subset."""
    import numpy as np

    from fedhei import seeding
    from fedhei.data.partition import public_slice
    from fedhei.errors import FedheiError

    scenario = run.scenario
    if run.classes is not None:
        public = public_slice(data.train.labels, scenario.public_fraction, scenario.pretrain_seed)
        train = np.setdiff1d(np.flatnonzero(np.isin(data.train.labels, run.classes)), public)
        test = np.flatnonzero(np.isin(data.test.labels, run.classes))
        description = f"classes {','.join(map(str, run.classes))}"
    else:
        partition = _partition(data, scenario)
        train, test = partition.train_indices[run.client], partition.test_indices[run.client]
        detail = f"dirichlet, alpha {scenario.dirichlet_alpha:g}" if scenario.partition == "dirichlet" else scenario.partition
        description = f"client {run.client} of {scenario.num_clients} ({detail})"
    if run.max_train and len(train) > run.max_train:
        train = np.sort(seeding.rng(scenario.seed, "compress-max-train").choice(train, size=run.max_train, replace=False))
    if len(train) == 0 or len(test) == 0:
        raise FedheiError(f"the user ({description}) has {len(train)} training and {len(test)} test images; "
                          "choose another client or more classes")
    return UserData(train, test, description)


def _base_model(data: Any, run: CompressConfig) -> tuple[Any, str]:
    """The model to personalize, and its name: ``--base`` if given, else the cached pre-train."""
    from fedhei.models.checkpoints import load_checkpoint, read_metadata
    from fedhei.training.pretrain import base_model

    scenario = run.scenario
    if run.base:
        name = read_metadata(run.base).get("model") or scenario.model
        return load_checkpoint(run.base, name), name
    return base_model(data, scenario.pretrain_spec(), device=scenario.device), scenario.model


def _personalize(base: Any, train_data: Any, run: CompressConfig, device: Any) -> Any:
    """A copy of the base fine-tuned on one user's data, as every user here is."""
    import copy

    from fedhei.training.loops import train

    personal = copy.deepcopy(base)
    train(personal, train_data, run.training(run.scenario.finetune_epochs), seed=run.scenario.seed, device=device)
    return personal


def _calibration(train_data: Any, scenario: Scenario) -> list[Any]:
    from itertools import islice

    batches = train_data.batches(scenario.batch_size, shuffle=True, seed=scenario.seed)
    return list(islice(batches, scenario.calibration_batches))


def _fusion_training(data: Any, base: Any, run: CompressConfig, device: Any) -> tuple[list[Any], list[int]]:
    """What the fused scorers are fitted on: the next clients of the partition whose shards
    fill the calibration batches, each personalized and calibrated as the user is, with
    their features and exhaustive scores."""
    from fedhei.method.scoring import FusionExample, build_scorer
    from fedhei.training.loops import batches_for

    scenario = run.scenario
    partition = _partition(data, scenario)
    own = run.client if run.classes is None else -1
    enough = scenario.batch_size * scenario.calibration_batches
    clients = [client for client in range(scenario.num_clients)
               if client != own and len(partition.train_indices[client]) >= enough]
    clients = sorted(clients, key=lambda client: (client - own - 1) % scenario.num_clients)[: run.fusion_clients]
    reference = build_scorer("exhaustive", scenario.scorer_settings())
    examples = []
    for client in clients:
        train_data = batches_for(base, data.train, partition.train_indices[client])
        personal = _personalize(base, train_data, run, device)
        examples.append(FusionExample.measure(personal, _calibration(train_data, scenario), scenario.seed, reference))
    return examples, clients


def _compare_scorers(personal: Any, calibration: list[Any], fusion: list[Any], recovery: _Recovery, run: CompressConfig,
                     scratch: Path, model_name: str) -> list[dict[str, Any]]:
    """Each compared scorer on the user's model: its cost, its roles against the exhaustive
    roles, and the accuracy right after one-shot masked pruning with its roles (and after
    recovery when asked)."""
    import time

    import numpy as np
    from scipy.stats import spearmanr

    from fedhei.method.pruning import layer_ratios
    from fedhei.method.roles import agreement, classify, random_roles
    from fedhei.method.scoring import build_scorer

    scenario = run.scenario
    seed = scenario.seed
    reference = build_scorer("exhaustive", scenario.scorer_settings())(personal, calibration, seed)
    reference_roles = classify(reference, scenario.role_rule, scenario.role_threshold)
    compared = []
    for name in run.compared:
        started = time.perf_counter()
        scores = build_scorer(name, scenario.scorer_settings(), fusion_training=fusion)(personal, calibration, seed)
        compared.append((name, scores.forward_passes, time.perf_counter() - started,
                         classify(scores, scenario.role_rule, scenario.role_threshold), scores.scores))
    layers = reference.layers
    chance = random_roles(layers, len(reference_roles.personalized()), seed)
    compared.append(("random roles", 0, 0.0, chance, np.zeros(len(layers))))
    rows = []
    for name, passes, seconds, roles, scores in compared:
        pruning = []
        for prob in run.probs:
            config = Config(prob, name, 1, structured=False)
            ratios = layer_ratios(roles, prob, scenario.personal_factor)
            model, _, pruned = _prune(config, personal, ratios, recovery, scratch / f"{config.key}.safetensors",
                                      model_name)
            pruning.append({"prob": prob, "accuracy-pruned": pruned, "accuracy-after": recovery.accuracy(model)})
        rho = spearmanr(scores, reference.scores).statistic if np.ptp(scores) > 0 else float("nan")
        rows.append({"scorer": name, "forward-passes": passes, "seconds": seconds,
                     "agreement-with-exhaustive": agreement(roles, reference_roles),
                     "spearman-with-exhaustive": None if np.isnan(rho) else float(rho),
                     "personalized": roles.personalized(), "pruning": pruning})
    return rows


def _matched_uniform_prob(model: Any, ratios: dict[str, float]) -> float:
    """The single ratio that removes as many linear weights as ``ratios`` do."""
    modules = dict(model.named_modules())
    sizes = {name: modules[name].weight.numel() for name in ratios}
    return sum(ratios[name] * size for name, size in sizes.items()) / sum(sizes.values())


@dataclass
class _Recovery:
    """Fine-tuning after each pruning step, the same total budget for every configuration.

    It also records the accuracy right after the final pruning step, before its
    fine-tuning: the damage that step buffering is meant to soften. ``training`` is the
    whole budget (None: no fine-tuning); with ``distillation`` set, the fine-tuning
    distills from ``teacher`` (the unpruned model).
    """

    train_data: Any
    test_data: Any
    device: Any
    training: TrainSettings | None
    seed: int
    distillation: Any = None
    teacher: Any = None

    def accuracy(self, model: Any) -> float:
        from fedhei.training.loops import evaluate

        return evaluate(model, self.test_data, device=self.device)["accuracy"]

    def run(self, model: Any, masks: dict[str, Any] | None, step: int, steps: int, record: list[float]) -> None:
        from fedhei import seeding
        from fedhei.training.loops import train

        if step == steps:
            record.append(self.accuracy(model))
        if self.training is not None:
            settings = replace(self.training, epochs=self.training.epochs / steps)
            seed = seeding.seed_for(self.seed, "compress-recovery", step)
            if self.distillation is not None:
                from fedhei.training.distill import distill

                distill(model, self.teacher, self.train_data, settings, self.distillation, masks=masks, seed=seed,
                        device=self.device)
            else:
                train(model, self.train_data, settings, masks=masks, seed=seed, device=self.device)


def _prune(config: Config, personal: Any, ratios: dict[str, float], recovery: _Recovery, path: Path,
           model_name: str) -> tuple[Any, dict[str, Any], float]:
    """Prune a copy of ``personal`` as ``config`` says, fine-tune it, and save it to ``path``.

    Returns the model, its masks (none when structured) and the accuracy right after
    the final pruning step.
    """
    import copy

    from fedhei.method.pruning import prune_with_schedule
    from fedhei.method.structured import structured_with_schedule
    from fedhei.models.checkpoints import save_checkpoint, save_structured

    record: list[float] = []
    metadata = {"model": model_name, "config": config.key}
    step = iter(range(1, config.steps + 1))
    if config.structured:
        model = structured_with_schedule(
            personal, ratios, config.steps, lambda pruned: recovery.run(pruned, None, next(step), config.steps, record))
        save_structured(model, path, metadata)
        return model, {}, record[-1]
    model = copy.deepcopy(personal)
    masks = prune_with_schedule(
        model, ratios, config.steps, lambda step_masks: recovery.run(model, step_masks, next(step), config.steps, record))
    save_checkpoint(model, path, metadata)
    return model, masks, record[-1]


def main(args: argparse.Namespace) -> int:
    return compress(CompressConfig.from_args(args))


def compress(run: CompressConfig) -> int:
    import tempfile
    import time

    from fedhei import atomic
    from fedhei.data.cifar10 import load_cifar10
    from fedhei.method.pruning import compression, layer_ratios
    from fedhei.method.roles import classify, random_roles, uniform_roles
    from fedhei.method.scoring import FEDERATED_SCORERS, build_scorer
    from fedhei.models.registry import count_parameters
    from fedhei.terminal import progress_bar
    from fedhei.training.device import pick_device
    from fedhei.training.loops import batches_for, evaluate

    scenario = run.scenario
    data = load_cifar10(scenario.data_source or None)
    user = _user_data(data, run)
    device = pick_device(scenario.device)
    base, model_name = _base_model(data, run)
    base.to(device)
    train_data = batches_for(base, data.train, user.train)
    test_data = batches_for(base, data.test, user.test)
    recovery = _Recovery(train_data, test_data, device, run.training(run.recovery_epochs) if run.recovery_epochs > 0 else None,
                         scenario.seed, scenario.distill_settings() if scenario.distill else None)

    base_accuracy = evaluate(base, test_data, device=device)["accuracy"]
    personal = _personalize(base, train_data, run, device)
    personal_accuracy = recovery.accuracy(personal)
    recovery.teacher = personal

    calibration = _calibration(train_data, scenario)
    started = time.perf_counter()
    scores = build_scorer(scenario.scorer, scenario.scorer_settings())(personal, calibration, scenario.seed)
    scoring_seconds = time.perf_counter() - started
    hei = classify(scores, scenario.role_rule, scenario.role_threshold)
    role_maps = {
        "hei": hei,
        "random": random_roles(hei.layers, len(hei.personalized()), scenario.seed),
        "uniform": uniform_roles(hei.layers),
    }

    schedules = sorted({scenario.pruning_steps, *([1] if run.one_shot else [])})
    kinds = [False, True] if run.structured else [False]
    configs = [Config(p, method, steps, structured) for p in run.probs for method in role_maps
               for steps in schedules for structured in kinds]
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedhei-compress-") as scratch, progress_bar() as bar:
        folder = run.save_models or Path(scratch)
        task = bar.add_task("compress", total=len(configs), status="")
        for config in configs:
            bar.update(task, status=config.key)
            started = time.perf_counter()
            prob = config.prob
            if config.method == "uniform":
                prob = _matched_uniform_prob(personal, layer_ratios(hei, config.prob, scenario.personal_factor))
            role_map = role_maps[config.method]
            ratios = layer_ratios(role_map, prob, scenario.personal_factor)
            path = folder / f"{config.key}.safetensors"
            model, masks, pruned_accuracy = _prune(config, personal, ratios, recovery, path, model_name)
            rows.append({
                "prob": config.prob,
                "method": config.method,
                "schedule": config.schedule,
                "steps": config.steps,
                "pruning": "structured" if config.structured else "masked",
                "accuracy-before": personal_accuracy,
                "accuracy-pruned": pruned_accuracy,
                "accuracy-after": recovery.accuracy(model),
                **compression(model, masks, base=personal),
                "nonzero-params": float(count_parameters(model)[1]),
                "bytes": path.stat().st_size,
                "checkpoint": str(path) if run.save_models else None,
                "personalized": role_map.personalized(),
                "roles": role_map.roles,
                "ratios": ratios,
                "scoring-forward-passes": scores.forward_passes if config.method == "hei" else 0,
                "seconds": time.perf_counter() - started,
            })
            bar.advance(task)

    fusion: list[Any] = []
    fusion_clients: list[int] = []
    if any(name not in FEDERATED_SCORERS for name in run.compared):
        fusion, fusion_clients = _fusion_training(data, base, run, device)
    comparison_recovery = recovery if run.compare_recovery else replace(recovery, training=None)
    scorer_rows: list[dict[str, Any]] = []
    if run.compared:
        with tempfile.TemporaryDirectory(prefix="fedhei-compare-") as scratch:
            scorer_rows = _compare_scorers(personal, calibration, fusion, comparison_recovery, run, Path(scratch),
                                           model_name)

    report = {
        "model": model_name,
        "data": data.source,
        "user": {"description": user.description, "train": int(len(user.train)), "test": int(len(user.test))},
        "settings": run.settings(),
        "base-accuracy": base_accuracy,
        "personal-accuracy": personal_accuracy,
        "scoring": {"scorer": scores.scorer, "forward-passes": scores.forward_passes, "seconds": scoring_seconds,
                    "roles": hei.to_dict()},
        "results": rows,
        "scorers": scorer_rows,
        "fusion-clients": fusion_clients,
    }
    atomic.write_json(run.out, report)
    _print_table(report, run.out)
    if scorer_rows:
        _print_scorer_table(report, run)
    return 0


def _print_table(report: dict[str, Any], out: Path) -> None:
    from rich.table import Table

    from fedhei.reporting.tables import stdout

    scoring = report["scoring"]
    personalized = [layer for layer, role in scoring["roles"]["roles"].items() if role == "personalized"]
    table = Table(title=f"fedhei compress: {report['model']}, {report['user']['description']} "
                        f"({report['user']['train']} train / {report['user']['test']} test images)")
    for column in ("prob", "roles", "schedule", "pruning", "acc before", "acc pruned", "acc after",
                   "compression", "linear", "MB", "scoring passes"):
        table.add_column(column, justify="left" if column in ("roles", "schedule", "pruning") else "right")
    for row in report["results"]:
        table.add_row(
            f"{row['prob']:g}", row["method"], row["schedule"], row["pruning"],
            f"{row['accuracy-before']:.4f}", f"{row['accuracy-pruned']:.4f}", f"{row['accuracy-after']:.4f}",
            f"{row['compression']:.3f}", f"{row['linear-compression']:.3f}", f"{row['bytes'] / 1e6:.3f}",
            str(row["scoring-forward-passes"]),
        )
    table.caption = (f"base accuracy {report['base-accuracy']:.4f}, after personal fine-tuning "
                     f"{report['personal-accuracy']:.4f}; {scoring['scorer']} scoring: {scoring['forward-passes']} "
                     f"forward passes, personalized: {', '.join(personalized) or 'none'}; "
                     f"uniform is matched to HEI's fraction of linear weights; results: {out}")
    stdout.print(table)


def _print_scorer_table(report: dict[str, Any], run: CompressConfig) -> None:
    from rich.table import Table

    from fedhei.reporting.tables import stdout

    rows = report["scorers"]
    probs = [entry["prob"] for entry in rows[0]["pruning"]]
    after = "after recovery" if run.compare_recovery else "right after one-shot pruning"
    scenario = run.scenario
    table = Table(title=f"scorers against the exhaustive roles ({scenario.role_rule} {scenario.role_threshold:g}), "
                        f"and accuracy {after}")
    for column in ("scorer", "forward passes", "seconds", "role agreement", "Spearman",
                   *(f"acc p{prob:g}" for prob in probs)):
        table.add_column(column, justify="left" if column == "scorer" else "right")
    for row in rows:
        rho = row["spearman-with-exhaustive"]
        key = "accuracy-after" if run.compare_recovery else "accuracy-pruned"
        table.add_row(row["scorer"], str(row["forward-passes"]), f"{row['seconds']:.1f}",
                      f"{row['agreement-with-exhaustive']:.3f}", "-" if rho is None else f"{rho:.3f}",
                      *(f"{entry[key]:.4f}" for entry in row["pruning"]))
    fitted = ", ".join(map(str, report["fusion-clients"]))
    table.caption = (f"one-shot masked pruning at each prob (personalized layers at prob x {scenario.personal_factor:g}); "
                     f"before pruning {report['personal-accuracy']:.4f}"
                     + (f"; fused scorers fitted on clients {fitted}" if fitted else ""))
    stdout.print(table)
