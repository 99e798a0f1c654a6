"""The figures of a run or of a comparison of runs, as PNG files.

Drawn with matplotlib's object API (``Figure``, no pyplot), so they render headless and
from the server's thread. Strategies keep one colour across every figure; where a
strategy ran several seeds, a line is the mean over seeds and its band spans the
lowest to the highest seed. Each drawn figure is listed with its title, panel titles
and legend texts in ``figures.json``, read from the matplotlib objects themselves.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from fedhei import atomic, seeding
from fedhei.method.roles import PERSONALIZED, normalized
from fedhei.reporting.comparison import Run, by_strategy, comparison_metric, per_seed
from fedhei.reporting.intervals import worst_decile
from fedhei.reporting.results import ACCURACY, WEIGHTED_ACCURACY

FIGURES_DIR = "figures"
FIGURES_INDEX = "figures.json"
_DPI = 110
_MB = 1024 * 1024


@dataclass(frozen=True)
class Drawn:
    """A written figure, as report.md links it and figures.json lists it."""

    file: str
    title: str
    panels: list[str]
    legend: list[str]


def _colours(strategies: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """A colour per strategy, distinct for up to 20 (a full bench has 11; tab10 would repeat one)."""
    palette, size = (colormaps["tab10"], 10) if len(strategies) <= 10 else (colormaps["tab20"], 20)
    return {name: palette(index % size) for index, name in enumerate(strategies)}


def _legend_beside(axis: Axes, **options: object) -> None:
    """The legend right of the plot, where it can hide no line or box however many strategies there are."""
    axis.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **options)  # type: ignore[arg-type]


def _save(figure: Figure, directory: Path, name: str, title: str) -> Drawn:
    figure.suptitle(title)
    figure.tight_layout()
    path = directory / FIGURES_DIR / f"{name}.png"
    atomic.write_with(path, lambda tmp: figure.savefig(tmp, format="png", dpi=_DPI, bbox_inches="tight"), suffix=".png")
    legends = [legend for legend in figure.legends] + [axis.get_legend() for axis in figure.axes if axis.get_legend()]
    texts = [text.get_text() for legend in legends for text in legend.get_texts()]
    return Drawn(f"{FIGURES_DIR}/{name}.png", title, [axis.get_title() for axis in figure.axes if axis.get_title()], texts)


def _short(layer: str) -> str:
    """``blocks.3.mlp.fc2`` -> ``3.fc2``, ``model.layers.3.mlp.down_proj`` -> ``3.down_proj``: 25 layer
    names must fit under one axis."""
    parts = layer.split(".")
    block = next((index for index, part in enumerate(parts[:-1]) if part.isdigit()), None)
    return f"{parts[block]}.{parts[-1]}" if block is not None else layer


def _band(axis: Axes, x: np.ndarray, per_seed_values: np.ndarray, colour: tuple[float, ...], label: str) -> None:
    """Mean over seeds as a line; the range over seeds as a band when there are several."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a round no seed evaluated stays a gap
        centre = np.nanmean(per_seed_values, axis=0)
        low, high = np.nanmin(per_seed_values, axis=0), np.nanmax(per_seed_values, axis=0)
    axis.plot(x, centre, marker="o", color=colour, label=label)
    if per_seed_values.shape[0] > 1:
        axis.fill_between(x, low, high, color=colour, alpha=0.2)


def _round_key(runs: Sequence[Run]) -> str:
    """Per-round evaluations are on the sampled split unless every run also measured the weighted one."""
    rows = [row for run in runs for record in run.payload["rounds"] for row in record["clients"] if ACCURACY in row]
    return WEIGHTED_ACCURACY if rows and all(WEIGHTED_ACCURACY in row for row in rows) else ACCURACY


def accuracy_per_round(runs: Sequence[Run], directory: Path, colours: dict) -> Drawn | None:
    key = _round_key(runs)
    rounds = max((len(run.payload["rounds"]) for run in runs), default=0)
    if rounds == 0:
        return None
    figure = Figure(figsize=(10, 4))
    axes = figure.subplots(1, 2, sharey=True)
    x = np.arange(1, rounds + 2)
    for name, group in by_strategy(runs).items():
        table = np.full((2, len(group), rounds + 1), np.nan)
        for row, run in enumerate(group):
            for record in run.payload["rounds"]:
                values = [float(client[key]) for client in record["clients"] if key in client]
                if values:
                    table[:, row, record["round"] - 1] = np.mean(values), worst_decile(values)
            final = run.values(key)
            if final.size:
                table[:, row, rounds] = final.mean(), worst_decile(final)
        for axis, values in zip(axes, table, strict=True):
            _band(axis, x, 100 * values, colours[name], name)
    for axis, what in zip(axes, ("mean", "worst decile"), strict=True):
        axis.set_title(f"{what} client accuracy")
        axis.set_xticks(x, [str(number) for number in x[:-1]] + ["final"])
        axis.set_xlabel("round")
        axis.grid(alpha=0.3)
    _legend_beside(axes[-1])
    axes[0].set_ylabel(f"% ({'weighted full test set' if key == WEIGHTED_ACCURACY else 'own test split'})")
    return _save(figure, directory, "accuracy-per-round", "Client accuracy per round (evaluated clients; final: every client)")


def global_accuracy(runs: Sequence[Run], directory: Path, colours: dict) -> Drawn | None:
    """Each strategy's global model on the whole test set per round, the base (round 0) as a dashed reference line."""
    curves = {name: [run.payload.get("global-curve") or [] for run in group] for name, group in by_strategy(runs).items()}
    curves = {name: group for name, group in curves.items() if any(group)}
    if not curves:
        return None
    measured = sorted({point["round"] for group in curves.values() for curve in group for point in curve})
    x = np.array(measured)
    figure = Figure(figsize=(8, 4))
    axis = figure.subplots()
    bases = []
    for name, group in curves.items():
        table = np.full((len(group), len(measured)), np.nan)
        for row, curve in enumerate(group):
            for point in curve:
                table[row, measured.index(point["round"])] = 100 * float(point["global-accuracy"])
            bases += [100 * float(curve[0]["global-accuracy"])] if curve and curve[0]["round"] == 0 else []
        _band(axis, x, table, colours[name], name)
    if bases:
        axis.axhline(float(np.mean(bases)), color="black", linestyle="--", linewidth=1, label="base")
    axis.set_title("global model on the whole test set")
    axis.set_xlabel("round (0: the base)")
    axis.set_ylabel("% accuracy")
    axis.grid(alpha=0.3)
    _legend_beside(axis)
    return _save(figure, directory, "global-accuracy", "The global model per round on the whole test set, against its base")


def final_accuracy(runs: Sequence[Run], directory: Path, colours: dict) -> Drawn | None:
    metric = comparison_metric(runs)
    groups = {name: np.concatenate([run.values(metric) for run in group]) for name, group in by_strategy(runs).items()}
    groups = {name: 100 * values for name, values in groups.items() if values.size}
    if not groups:
        return None
    figure = Figure(figsize=(max(5.0, 1.2 * len(groups) + 2), 4))
    axis = figure.subplots()
    jitter = seeding.rng(0, "figure-jitter")
    for position, (name, values) in enumerate(groups.items(), start=1):
        box = axis.boxplot(values, positions=[position], widths=0.6, patch_artist=True, showfliers=False)
        box["boxes"][0].set(facecolor=colours[name], alpha=0.35)
        axis.scatter(position + jitter.uniform(-0.18, 0.18, values.size), values, s=12, color=colours[name], zorder=3)
    axis.set_xticks(range(1, len(groups) + 1), list(groups), rotation=20)
    axis.set_ylabel(f"final accuracy, % ({'weighted full test set' if metric == WEIGHTED_ACCURACY else 'own test split'})")
    axis.set_title("one point per client (all seeds)")
    axis.grid(alpha=0.3, axis="y")
    _legend_beside(axis, handles=[Patch(color=colours[name], label=name) for name in groups])
    return _save(figure, directory, "final-accuracy", "Final client accuracy by strategy")


def _layers(runs: Sequence[Run]) -> list[str]:
    for run in runs:
        for manifest in run.manifests.values():
            if manifest.get("layer-pruned"):
                return list(manifest["layer-pruned"])
    return []


def layer_roles(runs: Sequence[Run], directory: Path, colours: dict) -> Drawn | None:
    """Clients x layers, red personalized and blue generic, darker where the layer was more sensitive."""
    layers = _layers(runs)
    panels = []
    for name, group in by_strategy(runs).items():
        run = group[0]
        if any(manifest.get("roles") for manifest in run.manifests.values()):
            panels.append((name, run))
    if not layers or not panels:
        return None
    clients = max(int(run.payload["scenario"]["num-clients"]) for _, run in panels)
    figure = Figure(figsize=(max(6.0, 0.32 * len(layers) + 2), len(panels) * max(2.0, 0.16 * clients + 1.2)))
    axes = np.atleast_1d(figure.subplots(len(panels), 1, squeeze=False)[:, 0])
    personal, generic = colormaps["Reds"], colormaps["Blues"]
    for axis, (name, run) in zip(axes, panels, strict=True):
        image = np.full((clients, len(layers), 4), 0.85)
        for client, manifest in run.manifests.items():
            roles, scores = manifest.get("roles", {}), manifest.get("role-scores", {})
            if not roles:
                continue
            strength = normalized(np.array([scores.get(layer, 0.0) for layer in layers]))
            for column, layer in enumerate(layers):
                palette = personal if roles.get(layer) == PERSONALIZED else generic
                image[client, column] = palette(0.3 + 0.7 * strength[column])
        axis.imshow(image, aspect="auto", interpolation="nearest")
        axis.set_title(f"{name}, seed {run.seed}")
        axis.set_ylabel("client")
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xticks(range(len(layers)), [_short(layer) for layer in layers], rotation=90, fontsize="small")
    axes[0].legend(handles=[Patch(color=personal(0.8), label="personalized"), Patch(color=generic(0.8), label="generic")],
                   loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return _save(figure, directory, "layer-roles",
                 "Layer roles per client (darker: more sensitive, relative to the client's most sensitive layer)")


def layer_pruned(runs: Sequence[Run], directory: Path, colours: dict) -> Drawn | None:
    layers = _layers(runs)
    if not layers:
        return None
    figure = Figure(figsize=(max(6.0, 0.32 * len(layers) + 2), 4))
    axis = figure.subplots()
    x = np.arange(len(layers))
    for name, group in by_strategy(runs).items():
        rows = [[manifest["layer-pruned"].get(layer, 0.0) for layer in layers]
                for run in group for manifest in run.manifests.values() if manifest.get("layer-pruned")]
        if rows:
            values = 100 * np.array(rows)
            axis.plot(x, values.mean(axis=0), marker="o", color=colours[name], label=name)
            axis.fill_between(x, values.min(axis=0), values.max(axis=0), color=colours[name], alpha=0.15)
    axis.set_xticks(x, [_short(layer) for layer in layers], rotation=90, fontsize="small")
    axis.set_ylabel("% of the layer's weights pruned")
    axis.set_title("mean over clients (band: lowest to highest client)")
    axis.grid(alpha=0.3)
    _legend_beside(axis)
    return _save(figure, directory, "layer-pruned", "Pruned fraction per layer")


def compression_accuracy(runs: Sequence[Run], directory: Path, colours: dict) -> Drawn | None:
    metric = comparison_metric(runs)
    figure = Figure(figsize=(6, 4.5))
    axis = figure.subplots()
    drawn = False
    for name, group in by_strategy(runs).items():
        rows = [client for run in group for client in run.clients if metric in client and "compression" in client]
        if rows:
            axis.scatter([100 * row["compression"] for row in rows], [100 * row[metric] for row in rows], s=14,
                         color=colours[name], label=name, alpha=0.8)
            drawn = True
    if not drawn:
        return None
    axis.set_xlabel("compression, % of parameters removed")
    axis.set_ylabel(f"final accuracy, % ({'weighted full test set' if metric == WEIGHTED_ACCURACY else 'own test split'})")
    axis.set_title("one point per client (all seeds)")
    axis.grid(alpha=0.3)
    _legend_beside(axis)
    return _save(figure, directory, "compression-accuracy", "Compression against accuracy")


def bytes_per_round(runs: Sequence[Run], directory: Path, colours: dict) -> Drawn | None:
    rounds = max((len(run.payload["rounds"]) for run in runs), default=0)
    if rounds == 0:
        return None
    figure = Figure(figsize=(10, 4))
    axes = figure.subplots(1, 2)
    x = np.arange(1, rounds + 1)
    for name, group in by_strategy(runs).items():
        table = np.full((2, len(group), rounds), np.nan)
        for row, run in enumerate(group):
            for record in run.payload["rounds"]:
                table[:, row, record["round"] - 1] = record["bytes-up"] / _MB, record["bytes-down"] / _MB
        for axis, values in zip(axes, table, strict=True):
            _band(axis, x, values, colours[name], name)
    for axis, what in zip(axes, ("up (clients to server)", "down (server to clients)"), strict=True):
        axis.set_title(what)
        axis.set_xticks(x)
        axis.set_xlabel("round")
        axis.set_ylabel("MB per round")
        axis.grid(alpha=0.3)
    _legend_beside(axes[-1])
    return _save(figure, directory, "bytes-per-round", "Bytes sent per round")


def draw_label_counts(axis: Axes, counts: np.ndarray, classes: Sequence[str]) -> None:
    """A stacked bar per client, one colour per class, with the classes in a legend below."""
    bottom = np.zeros(len(counts))
    for label, name in enumerate(classes):
        axis.bar(np.arange(len(counts)), counts[:, label], bottom=bottom, color=colormaps["tab10"](label % 10), label=name,
                 width=0.85)
        bottom += counts[:, label]
    axis.set_xlabel("client")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_ylabel("training images")
    axis.legend(ncol=5, fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.18))


def label_distribution(runs: Sequence[Run], directory: Path, colours: dict) -> Drawn | None:
    partitions = per_seed(runs, lambda run: run.payload.get("partition"))
    partitions = {seed: partition for seed, partition in partitions.items() if partition and "label-counts" in partition}
    if not partitions:
        return None
    clients = max(len(partition["label-counts"]) for partition in partitions.values())
    figure = Figure(figsize=(max(6.0, 0.3 * clients + 2), 4.2 * len(partitions)))
    axes = np.atleast_1d(figure.subplots(len(partitions), 1, squeeze=False)[:, 0])
    for axis, (seed, partition) in zip(axes, partitions.items(), strict=True):
        draw_label_counts(axis, np.array(partition["label-counts"]), partition["classes"])
        axis.set_title(f"seed {seed}: {partition['public-images']} public images held out for the base model")
    return _save(figure, directory, "label-distribution", "Training images per client and class")


FIGURES: tuple[tuple[str, Callable[[Sequence[Run], Path, dict], Drawn | None], str], ...] = (
    ("accuracy per round", accuracy_per_round, "no round was completed"),
    ("global model accuracy", global_accuracy, "no strategy here has a global model that was measured (FedPer, FedRep, "
                                               "FedBABU, LG-FedAvg and local training have none worth measuring; "
                                               "global-eval-every 0 turns it off; language models have no shared test set)"),
    ("final accuracy", final_accuracy, "no client has a final accuracy"),
    ("layer roles", layer_roles, "no strategy here assigns layer roles, or no client manifest in the run directory "
                                 "holds them (clients on other machines keep their own)"),
    ("pruned fraction per layer", layer_pruned, "no client manifest in the run directory holds per-layer pruned "
                                                "fractions (clients on other machines keep their own)"),
    ("compression against accuracy", compression_accuracy, "no client has a final accuracy"),
    ("bytes per round", bytes_per_round, "no round was completed"),
    ("label distribution", label_distribution, "results.json holds no label counts (a text run's clients hold a "
                                               "topic each, listed in clients.csv; older runs kept no partition)"),
)


def draw_figures(runs: Sequence[Run], directory: Path) -> tuple[list[Drawn], list[str]]:
    """Every figure the runs have data for, under ``directory/figures``; and a note for each one left out."""
    colours = _colours(list(by_strategy(runs)))
    drawn, notes = [], []
    for title, draw, missing in FIGURES:
        figure = draw(runs, directory, colours)
        if figure is None:
            notes.append(f"No {title} figure: {missing}.")
        else:
            drawn.append(figure)
    atomic.write_json(directory / FIGURES_DIR / FIGURES_INDEX, [asdict(figure) for figure in drawn])
    return drawn, notes


def figures_markdown(drawn: Sequence[Drawn], notes: Sequence[str]) -> str:
    lines = ["## Figures", ""]
    for figure in drawn:
        lines += [f"### {figure.title}", "", f"![{figure.title}]({figure.file})", ""]
    lines += list(notes)
    return "\n".join(lines).rstrip() + "\n"
