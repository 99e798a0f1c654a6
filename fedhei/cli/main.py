"""The ``fedhei`` command: data, pretrain, compress, run, bench, report, superlink.

Each subcommand is a pair (add its arguments, run it) in one table, so adding a
command is one entry, not another branch. A :class:`FedheiError` anywhere below
becomes one line on stderr and exit status 2; a run that started but failed
(:class:`RunFailed`) becomes one line and exit status 3.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fedhei.errors import FedheiError, RunFailed


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# The scenario settings each command takes as flags (``--key``), with the scenario's defaults and checks.
DATA_KEYS = ("data-source", "num-clients", "partition", "dirichlet-alpha", "classes-per-client", "public-fraction", "seed",
             "base-seed")
PRETRAIN_KEYS = ("model", "pretrain-recipe", "pretrain-epochs", "pretrain-lr", "pretrain-batch-size", "base-seed",
                 "public-fraction", "data-source", "device")


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    from fedhei.config.flags import add_scenario_flags

    add_scenario_flags(parser, DATA_KEYS)
    parser.add_argument("--plot", type=Path, help="save a PNG of the label distribution per client")


def _data(args: argparse.Namespace) -> int:
    from fedhei.atomic import check_writable_file
    from fedhei.config.flags import scenario_from_flags
    from fedhei.data.cifar10 import load_cifar10
    from fedhei.data.partition import make_partition
    from fedhei.reporting.tables import label_table, plot_label_distribution

    scenario = scenario_from_flags(args, DATA_KEYS)
    spec = scenario.partition_spec()
    if args.plot:
        check_writable_file(args.plot, "label distribution plot")
    data = load_cifar10(scenario.data_source or None)
    partition = make_partition(data.train.labels, data.test.labels, spec)
    label_table(partition, data.test.labels, title=f"{spec.kind.value} split of {data.source}")
    if args.plot:
        plot_label_distribution(partition, args.plot)
        print(f"label distribution plot: {args.plot}")
    return 0


def _pretrain_arguments(parser: argparse.ArgumentParser) -> None:
    from fedhei.config.flags import add_scenario_flags

    add_scenario_flags(parser, PRETRAIN_KEYS)
    parser.add_argument("--all-train", action="store_true", help="train on all of the training set, not the public slice")
    parser.add_argument("--out", type=Path, help="also write the base model here (safetensors)")
    parser.add_argument("--float16", action="store_true",
                        help="write --out in float16, as fedhei ships its base, with the copy's own test accuracy")


def _pretrain(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from fedhei.atomic import check_writable_file
    from fedhei.config.flags import scenario_from_flags
    from fedhei.data.cifar10 import load_cifar10
    from fedhei.training.pretrain import pretrain, shipped_base, write_float16

    scenario = scenario_from_flags(args, PRETRAIN_KEYS)
    if args.float16 and args.out is None:
        raise FedheiError("--float16 writes the float16 copy to --out; give --out")
    if args.out is not None:
        check_writable_file(args.out, "base model")
    spec = replace(scenario.pretrain_spec(), all_train=args.all_train)
    data = load_cifar10(scenario.data_source or None)
    result = pretrain(data, spec, device=scenario.device, out=None if args.float16 else args.out)
    origin = "cached" if result.cached else "trained"
    timing = "training time not recorded" if result.seconds is None else f"{result.seconds:.0f} s of training"
    print(f"{spec.model}: test accuracy {result.test_accuracy:.4f} ({origin}, {spec.recipe} recipe; "
          f"{result.train_images} training images, {timing}) -> {result.path}")
    if args.float16:
        float32_accuracy, float16_accuracy = write_float16(result.path, data, args.out)
        print(f"float16 copy: test accuracy {float16_accuracy:.4f} ({100 * (float16_accuracy - float32_accuracy):+.2f} "
              f"points against float32) -> {args.out}")
    shipped = shipped_base(data, spec)
    if shipped is not None:
        print(f"fedhei ships this base ({shipped}); runs with these settings start from it")
    return 0


def _compress_arguments(parser: argparse.ArgumentParser) -> None:
    from fedhei.experiments.compress import add_arguments

    add_arguments(parser)


def _compress(args: argparse.Namespace) -> int:
    from fedhei.experiments.compress import main

    return main(args)


def scenario_arguments(parser: argparse.ArgumentParser) -> None:
    """The scenario file, its ``--set`` overrides and ``--data``: as ``fedhei run`` reads them (the benchmarks too)."""
    parser.add_argument("scenario", type=Path, help="scenario TOML (run-config keys)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set num-server-rounds=5 (repeatable)")
    parser.add_argument("--data", default="", help="CIFAR-10 source (sets data-source): folder, .tar.gz, 'synthetic' or 'download'")


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    scenario_arguments(parser)
    parser.add_argument("--strategy", dest="strategies", action="append", default=[],
                        help="run these strategies side by side (repeatable); default: the scenario's own")
    parser.add_argument("--out", type=Path, help="run directory (default: <out-dir>/<scenario name>/<strategy>)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines, only the final summary")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in the output directory (its results, checkpoint, report, figures "
                             "and client state); without it such a directory is refused")
    parser.add_argument("--seeds", default="", metavar="0,1,2",
                        help="repeat the scenario with each seed (sets seeds): each seed draws its own partition, "
                             "sampling and training, into <dir>/seed-<s>, with a comparison over seeds")


def _run_arguments_with_resume(parser: argparse.ArgumentParser) -> None:
    _run_arguments(parser)
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue a killed or stopped run from its last complete round (same scenario, --set and "
                             "--seeds values); with seeds, complete seeds are kept and the rest go on")


def _bench_arguments(parser: argparse.ArgumentParser) -> None:
    _run_arguments(parser)
    parser.add_argument("--resume", type=Path, metavar="BENCH_DIR",
                        help="continue a stopped bench: complete runs are kept, a killed run resumes from its last "
                             "complete round, the rest start (same scenario, --set, --strategy and --seeds values)")


def _run(args: argparse.Namespace) -> int:
    from strategies.simulation import run_command

    return run_command(args.scenario, args.overrides, args.strategies, args.out, args.data, args.resume,
                       verbose=args.verbose, quiet=args.quiet, seeds=args.seeds, overwrite=args.overwrite)


def _bench(args: argparse.Namespace) -> int:
    from strategies.simulation import bench_command

    return bench_command(args.scenario, args.overrides, args.strategies, args.out, args.data,
                         verbose=args.verbose, quiet=args.quiet, seeds=args.seeds, resume=args.resume, overwrite=args.overwrite)


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR",
                        help="run directories, or seed and bench directories holding several runs")
    parser.add_argument("--out", type=Path, help="where a comparison's report goes (default: the one directory given)")
    parser.add_argument("--compare-to", default=None, metavar="NAMES",
                        help="references of the paired differences, e.g. local,fedavg-ft (default: the runs' compare-to)")


def _report(args: argparse.Namespace) -> int:
    from fedhei.config.scenario import Scenario
    from fedhei.reporting.report import report_command

    references = None if args.compare_to is None else Scenario(compare_to=args.compare_to).references()
    print(f"report: {report_command(args.runs, args.out, references)}")
    return 0


def _superlink_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["status", "stop"],
                        help="show the SuperLink that `flwr run` left running for simulations, or stop it and all it started")
    parser.add_argument("--port", type=int, help="its port (default: $FLWR_LOCAL_SUPERLINK_HTTP_API_PORT, else 39091, as flwr)")


def _superlink(args: argparse.Namespace) -> int:
    from fedhei.experiments.superlink import superlink_command

    return superlink_command(args.action, args.port)


COMMANDS: dict[str, Command] = {
    "data": Command("load CIFAR-10, split it over clients and show the split", _data_arguments, _data),
    "pretrain": Command("pre-train (or reuse the cached) base model", _pretrain_arguments, _pretrain),
    "compress": Command("score, classify and prune one user's model, against baselines", _compress_arguments, _compress),
    "run": Command("run a scenario on Flower's simulation engine", _run_arguments_with_resume, _run),
    "bench": Command("run every strategy on one scenario, side by side", _bench_arguments, _bench),
    "report": Command("write report.md with figures for a run, or a comparison of runs", _report_arguments, _report),
    "superlink": Command("show or stop the local SuperLink that `flwr run` leaves running", _superlink_arguments, _superlink),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with ``only`` the arguments of that one command alone (none for ""): the
    scenario flags of data, pretrain and compress import the scenario (torch and all), which no other command
    nor ``fedhei --help`` should wait for."""
    parser = argparse.ArgumentParser(prog="fedhei", description="Federated personalization by layer roles and pruning.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        sub = commands.add_parser(name, help=command.help, description=command.help)
        if only in (None, name):
            command.add_arguments(sub)
        sub.set_defaults(handler=command.run)
    return parser


def _command_named(argv: Sequence[str]) -> str:
    """The command in ``argv``: its first word that is not an option ("" for none)."""
    return next((argument for argument in argv if not argument.startswith("-")), "")


def _one_line(error: Exception) -> str:
    """An error message as one line, whatever a library's text inside it held."""
    return "; ".join(part.strip() for part in str(error).splitlines() if part.strip())


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command_named(argv)).parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except RunFailed as failure:
        print(f"fedhei: run failed: {_one_line(failure)}", file=sys.stderr)
        return 3
    except FedheiError as error:
        print(f"fedhei: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedhei: interrupted", file=sys.stderr)
        return 130

