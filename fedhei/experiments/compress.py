"""``fedhei compress``: one user's personalized compression, HEI against its baselines.

Fine-tunes the base model on one user's data, scores and classifies its layers,
then prunes it at each ``prob`` with HEI's roles, with random roles (as many
personalized layers as HEI found) and with uniform magnitude pruning at the same
fraction of linear weights, one-shot and step-buffered, each followed by the same
fine-tuning budget. Beside it, every other scorer (the single signals, the fused
ones fitted on other clients, HEI's) is compared on the same model: forward
passes, agreement of its roles with the exhaustive roles, and accuracy right
after pruning with its roles. Prints two tables and writes every figure to a JSON file.

Heavy imports live inside the functions: the parser is built for every command.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

DEFAULT_OUT = Path("runs") / "compress.json"


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
    base = parser.add_argument_group("base model")
    base.add_argument("--base", type=Path, help="base-model checkpoint (safetensors); default: the cached pre-train")
    base.add_argument("--model", default="vit-tiny-c10", help="model name (fedhei or timm)")
    base.add_argument("--pretrain-epochs", type=float, default=30.0, help="epochs of the cached pre-train to use")

    user = parser.add_argument_group("the user's data")
    user.add_argument("--data", default="", help="CIFAR-10 source: folder, .tar.gz, 'synthetic' or 'download'")
    who = user.add_mutually_exclusive_group()
    who.add_argument("--client", type=int, default=0, help="the user is this client of the partition")
    who.add_argument("--classes", type=_csv_ints, help="the user holds these classes instead, e.g. 0,3,5")
    user.add_argument("--clients", type=int, default=10, help="number of clients in the partition")
    user.add_argument("--partition", default="dirichlet", choices=["iid", "dirichlet", "pathological"])
    user.add_argument("--alpha", type=float, default=0.1, help="Dirichlet concentration (smaller = more skew)")
    user.add_argument("--classes-per-client", type=int, default=2, help="classes per client (pathological)")
    user.add_argument("--public-fraction", type=float, default=0.1, help="slice held out for pre-training")
    user.add_argument("--max-train", type=int, default=0, help="use at most this many training images (0: all)")
    user.add_argument("--seed", type=int, default=0)

    method = parser.add_argument_group("scoring and roles")
    method.add_argument("--scorer", default="sensing", help="layer scorer (sensing, exhaustive, magnitude, ...)")
    method.add_argument("--signal", default="loss", help="what a perturbation is measured on: loss or entropy")
    method.add_argument("--measurements", type=float, default=0.3,
                        help="sensing: budget, a fraction of the layer count or a count")
    method.add_argument("--design", default="blocks", help="sensing: blocks, random (the first design) or signed")
    method.add_argument("--solver", default="lasso", help="sensing, random and signed designs: lasso or omp")
    method.add_argument("--calibration-batches", type=int, default=2, help="batches of the user's data per measurement")
    method.add_argument("--role-rule", default="top-fraction", help="absolute, relative or top-fraction")
    method.add_argument("--role-threshold", type=float, default=0.25)

    compare = parser.add_argument_group("scorer comparison")
    compare.add_argument("--compare-scorers", default="all",
                         help="scorers to compare with the exhaustive roles, comma separated; 'all' or 'none'")
    compare.add_argument("--fusion-clients", type=int, default=4,
                         help="fused scorers are fitted on this many other clients of the partition")
    compare.add_argument("--compare-recovery", action="store_true",
                         help="also fine-tune each compared scorer's pruned model with the recovery budget")

    pruning = parser.add_argument_group("pruning")
    pruning.add_argument("--prob", type=_csv_floats, action="append",
                         help="pruning ratio of generic layers; repeatable or a comma list (default 0.5)")
    pruning.add_argument("--personal-factor", type=float, default=0.5, help="personalized layers are pruned at prob * this")
    pruning.add_argument("--steps", type=int, default=3, help="step buffering: reach the target over this many steps")
    pruning.add_argument("--one-shot", action=argparse.BooleanOptionalAction, default=True,
                         help="also prune in one shot, for comparison")
    pruning.add_argument("--structured", action="store_true",
                         help="also prune whole heads and MLP channels (really smaller files)")

    budget = parser.add_argument_group("training budget")
    budget.add_argument("--finetune-epochs", type=float, default=1.0, help="personal fine-tuning of the base before scoring")
    budget.add_argument("--recovery-epochs", type=float, default=1.0,
                        help="fine-tuning after pruning, in total over the steps (the same for every configuration)")
    budget.add_argument("--lr", type=float, default=5e-4)
    budget.add_argument("--batch-size", type=int, default=64)
    budget.add_argument("--device", default="auto")

    teacher = parser.add_argument_group("distillation")
    teacher.add_argument("--distill", action="store_true",
                         help="recover with the unpruned model as teacher (soft targets plus labels), not labels alone")
    teacher.add_argument("--distill-temperature", type=float, default=4.0, help="softens teacher and student")
    teacher.add_argument("--distill-alpha", type=float, default=0.5, help="weight of the soft targets; labels get 1 - this")

    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON")
    output.add_argument("--save-models", type=Path, help="keep every pruned checkpoint in this folder")


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


def _validate(args: argparse.Namespace) -> list[float]:
    """Check everything that can be checked before minutes of training; returns the probs."""
    from fedhei.errors import FedheiError
    from fedhei.method.roles import RULES

    probs = [p for group in (args.prob or [[0.5]]) for p in group]
    if not probs or any(not 0 < p < 1 for p in probs):
        raise FedheiError(f"--prob must be one or more ratios in (0, 1); got {probs}")
    if args.role_rule not in RULES:
        raise FedheiError(f"unknown role rule '{args.role_rule}'; choose one of: {', '.join(RULES)}")
    if not 0 <= args.role_threshold <= 1:
        raise FedheiError(f"--role-threshold is {args.role_threshold}; it must be in [0, 1]")
    if not 0 <= args.personal_factor <= 1:
        raise FedheiError(f"--personal-factor is {args.personal_factor}; it must be in [0, 1]")
    if args.steps < 1:
        raise FedheiError(f"--steps is {args.steps}; it must be at least 1 (1 is one-shot)")
    if args.calibration_batches < 1:
        raise FedheiError(f"--calibration-batches is {args.calibration_batches}; it must be at least 1")
    if args.finetune_epochs < 0 or args.recovery_epochs < 0:
        raise FedheiError("--finetune-epochs and --recovery-epochs must be >= 0")
    if args.batch_size < 1 or args.max_train < 0:
        raise FedheiError("--batch-size must be >= 1 and --max-train >= 0")
    _compared_scorers(args)
    return sorted(set(probs))


def _compared_scorers(args: argparse.Namespace) -> list[str]:
    from fedhei.errors import FedheiError
    from fedhei.method.scoring import FEDERATED_SCORERS, SCORER_NAMES

    if args.compare_scorers == "none":
        return []
    names = list(SCORER_NAMES) if args.compare_scorers == "all" else [
        name.strip() for name in args.compare_scorers.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCORER_NAMES]
    if unknown:
        raise FedheiError(f"unknown scorer '{unknown[0]}' in --compare-scorers; choose from: {', '.join(SCORER_NAMES)}")
    if any(name not in FEDERATED_SCORERS for name in names) and args.fusion_clients < 1:
        raise FedheiError(f"--fusion-clients is {args.fusion_clients}; the fused scorers need at least 1 other client")
    return names


@dataclass(frozen=True)
class UserData:
    """Indices into the training and test sets of the one user being compressed."""

    train: np.ndarray
    test: np.ndarray
    description: str


def _partition(data: Any, args: argparse.Namespace) -> Any:
    from fedhei.data.partition import PartitionKind, PartitionSpec, make_partition

    spec = PartitionSpec(kind=PartitionKind(args.partition), num_clients=args.clients, alpha=args.alpha,
                         classes_per_client=args.classes_per_client, public_fraction=args.public_fraction,
                         seed=args.seed)
    return make_partition(data.train.labels, data.test.labels, spec)


def _user_data(data: Any, args: argparse.Namespace) -> UserData:
    """The user's training and test indices: a client of a partition, or a class subset."""
    import numpy as np

    from fedhei import seeding
    from fedhei.data.partition import public_slice
    from fedhei.errors import FedheiError

    if args.classes is not None:
        classes = sorted(set(args.classes))
        if not classes or any(not 0 <= label < 10 for label in classes):
            raise FedheiError(f"--classes must name CIFAR-10 classes 0..9; got {args.classes}")
        public = public_slice(data.train.labels, args.public_fraction, args.seed)
        train = np.setdiff1d(np.flatnonzero(np.isin(data.train.labels, classes)), public)
        test = np.flatnonzero(np.isin(data.test.labels, classes))
        description = f"classes {','.join(map(str, classes))}"
    else:
        if not 0 <= args.client < args.clients:
            raise FedheiError(f"--client is {args.client}; the partition has clients 0..{args.clients - 1}")
        partition = _partition(data, args)
        train, test = partition.train_indices[args.client], partition.test_indices[args.client]
        detail = f"dirichlet, alpha {args.alpha:g}" if args.partition == "dirichlet" else args.partition
        description = f"client {args.client} of {args.clients} ({detail})"
    if args.max_train and len(train) > args.max_train:
        train = np.sort(seeding.rng(args.seed, "compress-max-train").choice(train, size=args.max_train, replace=False))
    if len(train) == 0 or len(test) == 0:
        raise FedheiError(f"the user ({description}) has {len(train)} training and {len(test)} test images; "
                          "choose another client or more classes")
    return UserData(train, test, description)


def _base_model(data: Any, args: argparse.Namespace) -> tuple[Any, str]:
    """The model to personalize, and its name: ``--base`` if given, else the cached pre-train."""
    from fedhei.models.checkpoints import load_checkpoint, read_metadata
    from fedhei.training.pretrain import PretrainSpec, base_model

    if args.base:
        name = read_metadata(args.base).get("model") or args.model
        return load_checkpoint(args.base, name), name
    spec = PretrainSpec(model=args.model, epochs=args.pretrain_epochs, public_fraction=args.public_fraction, seed=args.seed)
    return base_model(data, spec, device=args.device), args.model


def _personalize(base: Any, train_data: Any, args: argparse.Namespace, device: Any) -> Any:
    """A copy of the base fine-tuned on one user's data, as every user here is."""
    import copy

    from fedhei.training.loops import TrainSettings, train

    personal = copy.deepcopy(base)
    if args.finetune_epochs > 0:
        settings = TrainSettings(epochs=args.finetune_epochs, batch_size=args.batch_size, lr=args.lr)
        train(personal, train_data, settings, seed=args.seed, device=device)
    return personal


def _calibration(train_data: Any, args: argparse.Namespace) -> list[Any]:
    from itertools import islice

    return list(islice(train_data.batches(args.batch_size, shuffle=True, seed=args.seed), args.calibration_batches))


def _fusion_training(data: Any, base: Any, args: argparse.Namespace, device: Any) -> tuple[list[Any], list[int]]:
    """What the fused scorers are fitted on: the next clients of the partition whose shards
    fill the calibration batches, each personalized and calibrated as the user is, with
    their features and exhaustive scores."""
    from fedhei.method.scoring import FusionExample, build_scorer
    from fedhei.training.loops import batches_for

    partition = _partition(data, args)
    own = args.client if args.classes is None else -1
    enough = args.batch_size * args.calibration_batches
    clients = [client for client in range(args.clients)
               if client != own and len(partition.train_indices[client]) >= enough]
    clients = sorted(clients, key=lambda client: (client - own - 1) % args.clients)[: args.fusion_clients]
    reference = build_scorer("exhaustive", signal=args.signal)
    examples = []
    for client in clients:
        train_data = batches_for(base, data.train, partition.train_indices[client])
        personal = _personalize(base, train_data, args, device)
        examples.append(FusionExample.measure(personal, _calibration(train_data, args), args.seed, reference))
    return examples, clients


def _compare_scorers(names: list[str], personal: Any, calibration: list[Any], fusion: list[Any], probs: list[float],
                     recovery: _Recovery, args: argparse.Namespace, scratch: Path, model_name: str) -> list[dict[str, Any]]:
    """Each scorer on the user's model: its cost, its roles against the exhaustive roles,
    and the accuracy right after one-shot masked pruning with its roles (and after
    recovery when asked)."""
    import time

    import numpy as np
    from scipy.stats import spearmanr

    from fedhei.method.pruning import layer_ratios
    from fedhei.method.roles import agreement, classify, random_roles
    from fedhei.method.scoring import build_scorer

    reference = build_scorer("exhaustive", signal=args.signal)(personal, calibration, args.seed)
    reference_roles = classify(reference, args.role_rule, args.role_threshold)
    compared = []
    for name in names:
        started = time.perf_counter()
        scorer = build_scorer(name, signal=args.signal, measurements=args.measurements, solver=args.solver,
                              design=args.design, fusion_training=fusion)
        scores = scorer(personal, calibration, args.seed)
        compared.append((name, scores.forward_passes, time.perf_counter() - started,
                         classify(scores, args.role_rule, args.role_threshold), scores.scores))
    layers = reference.layers
    chance = random_roles(layers, len(reference_roles.personalized()), args.seed)
    compared.append(("random roles", 0, 0.0, chance, np.zeros(len(layers))))
    rows = []
    for name, passes, seconds, roles, scores in compared:
        pruning = []
        for prob in probs:
            config = Config(prob, name, 1, structured=False)
            ratios = layer_ratios(roles, prob, args.personal_factor)
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


def _distillation(args: argparse.Namespace) -> Any:
    """The ``--distill`` settings, checked before any training; None without ``--distill``."""
    from fedhei.training.distill import DistillSettings

    settings = DistillSettings(temperature=args.distill_temperature, alpha=args.distill_alpha)
    return settings if args.distill else None


@dataclass
class _Recovery:
    """Fine-tuning after each pruning step, the same total budget for every configuration.

    It also records the accuracy right after the final pruning step, before its
    fine-tuning: the damage that step buffering is meant to soften. With
    ``distillation`` set, the fine-tuning distills from ``teacher`` (the unpruned model).
    """

    train_data: Any
    test_data: Any
    device: Any
    epochs: float
    batch_size: int
    lr: float
    seed: int
    distillation: Any = None
    teacher: Any = None

    def accuracy(self, model: Any) -> float:
        from fedhei.training.loops import evaluate

        return evaluate(model, self.test_data, device=self.device)["accuracy"]

    def run(self, model: Any, masks: dict[str, Any] | None, step: int, steps: int, record: list[float]) -> None:
        from fedhei import seeding
        from fedhei.training.loops import TrainSettings, train

        if step == steps:
            record.append(self.accuracy(model))
        if self.epochs > 0:
            settings = TrainSettings(epochs=self.epochs / steps, batch_size=self.batch_size, lr=self.lr)
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

    probs = _validate(args)
    distillation = _distillation(args)
    scorer = build_scorer(args.scorer, signal=args.signal, measurements=args.measurements, solver=args.solver,
                          design=args.design)
    compared = _compared_scorers(args)
    data = load_cifar10(args.data or None)
    user = _user_data(data, args)
    device = pick_device(args.device)
    base, model_name = _base_model(data, args)
    base.to(device)
    train_data = batches_for(base, data.train, user.train)
    test_data = batches_for(base, data.test, user.test)
    recovery = _Recovery(train_data, test_data, device, args.recovery_epochs, args.batch_size, args.lr, args.seed,
                         distillation)

    base_accuracy = evaluate(base, test_data, device=device)["accuracy"]
    personal = _personalize(base, train_data, args, device)
    personal_accuracy = recovery.accuracy(personal)
    recovery.teacher = personal

    calibration = _calibration(train_data, args)
    started = time.perf_counter()
    scores = scorer(personal, calibration, args.seed)
    scoring_seconds = time.perf_counter() - started
    hei = classify(scores, args.role_rule, args.role_threshold)
    role_maps = {
        "hei": hei,
        "random": random_roles(hei.layers, len(hei.personalized()), args.seed),
        "uniform": uniform_roles(hei.layers),
    }

    schedules = sorted({args.steps, *([1] if args.one_shot else [])})
    kinds = [False, True] if args.structured else [False]
    configs = [Config(p, method, steps, structured) for p in probs for method in role_maps
               for steps in schedules for structured in kinds]
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedhei-compress-") as scratch, progress_bar() as bar:
        folder = args.save_models or Path(scratch)
        task = bar.add_task("compress", total=len(configs), status="")
        for config in configs:
            bar.update(task, status=config.key)
            started = time.perf_counter()
            prob = config.prob
            if config.method == "uniform":
                prob = _matched_uniform_prob(personal, layer_ratios(hei, config.prob, args.personal_factor))
            role_map = role_maps[config.method]
            ratios = layer_ratios(role_map, prob, args.personal_factor)
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
                "checkpoint": str(path) if args.save_models else None,
                "personalized": role_map.personalized(),
                "roles": role_map.roles,
                "ratios": ratios,
                "scoring-forward-passes": scores.forward_passes if config.method == "hei" else 0,
                "seconds": time.perf_counter() - started,
            })
            bar.advance(task)

    fusion: list[Any] = []
    fusion_clients: list[int] = []
    if any(name not in FEDERATED_SCORERS for name in compared):
        fusion, fusion_clients = _fusion_training(data, base, args, device)
    comparison_recovery = recovery if args.compare_recovery else replace(recovery, epochs=0.0)
    scorer_rows: list[dict[str, Any]] = []
    if compared:
        with tempfile.TemporaryDirectory(prefix="fedhei-compare-") as scratch:
            scorer_rows = _compare_scorers(compared, personal, calibration, fusion, probs, comparison_recovery, args,
                                           Path(scratch), model_name)

    report = {
        "model": model_name,
        "data": data.source,
        "user": {"description": user.description, "train": int(len(user.train)), "test": int(len(user.test))},
        "settings": {key: str(value) if isinstance(value, Path) else value
                     for key, value in vars(args).items() if not callable(value)},
        "base-accuracy": base_accuracy,
        "personal-accuracy": personal_accuracy,
        "scoring": {"scorer": scores.scorer, "forward-passes": scores.forward_passes, "seconds": scoring_seconds,
                    "roles": hei.to_dict()},
        "results": rows,
        "scorers": scorer_rows,
        "fusion-clients": fusion_clients,
    }
    atomic.write_json(args.out, report)
    _print_table(report, args.out)
    if scorer_rows:
        _print_scorer_table(report, args)
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


def _print_scorer_table(report: dict[str, Any], args: argparse.Namespace) -> None:
    from rich.table import Table

    from fedhei.reporting.tables import stdout

    rows = report["scorers"]
    probs = [entry["prob"] for entry in rows[0]["pruning"]]
    after = "after recovery" if args.compare_recovery else "right after one-shot pruning"
    table = Table(title=f"scorers against the exhaustive roles ({args.role_rule} {args.role_threshold:g}), "
                        f"and accuracy {after}")
    for column in ("scorer", "forward passes", "seconds", "role agreement", "Spearman",
                   *(f"acc p{prob:g}" for prob in probs)):
        table.add_column(column, justify="left" if column == "scorer" else "right")
    for row in rows:
        rho = row["spearman-with-exhaustive"]
        key = "accuracy-after" if args.compare_recovery else "accuracy-pruned"
        table.add_row(row["scorer"], str(row["forward-passes"]), f"{row['seconds']:.1f}",
                      f"{row['agreement-with-exhaustive']:.3f}", "-" if rho is None else f"{rho:.3f}",
                      *(f"{entry[key]:.4f}" for entry in row["pruning"]))
    fitted = ", ".join(map(str, report["fusion-clients"]))
    table.caption = (f"one-shot masked pruning at each prob (personalized layers at prob x {args.personal_factor:g}); "
                     f"before pruning {report['personal-accuracy']:.4f}"
                     + (f"; fused scorers fitted on clients {fitted}" if fitted else ""))
    stdout.print(table)
