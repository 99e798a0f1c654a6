"""A run's results: the results.json payload, its summary and its tables for report.md.

results.json holds only what a rerun with the same scenario and seed must repeat
exactly; wall-clock times live in timings.json beside it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedhei import __version__
from fedhei.models.tasks import PERPLEXITY
from fedhei.reporting.intervals import worst_decile

RESULTS_FILE = "results.json"
TIMINGS_FILE = "timings.json"
COMPLETE, PARTIAL = "complete", "partial"
# A client's final accuracy on its sampled test split, and on the whole test set weighted by its labels.
ACCURACY, WEIGHTED_ACCURACY = "accuracy", "accuracy-weighted"
METRIC_NAMES = {
    ACCURACY: "each client's final model on its own sampled test split",
    WEIGHTED_ACCURACY: "each client's final model on the whole test set, per class weighted by its label proportions",
}

# What every strategy but plain FedAvg does between the last round and the final figures.
FINAL_ROUND_NOTE = ("each client's final model comes from one last local round of its strategy's own training on the "
                    "final global model (the rest of its pruning schedule included), then is evaluated and exported")
FINAL_ROUND_NONE = "each client evaluates and exports the final global model as it is (no local round)"


def build_payload(
    *,
    scenario: Mapping[str, Any],
    strategy: str,
    policy: Mapping[str, Any],
    consensus_generic: list[str] | None,
    rounds: list[dict[str, Any]],
    clients: list[dict[str, float]],
    export_failures: list[dict[str, Any]],
    stopped: dict[str, Any] | None,
    adapts_before_export: bool,
    partition: Mapping[str, Any],
    global_base: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The results.json payload; ``stopped`` says why a partial run ended early; ``partition``
    is :func:`partition_record` of the split the clients held; ``global_base`` the base model on the
    whole test set (round 0 of the global curve), when the strategy's global model is measured."""
    curve = global_curve(global_base or {}, rounds)
    return {
        "fedhei-version": __version__,
        "status": PARTIAL if stopped else COMPLETE,
        "stopped": stopped,
        "scenario": dict(scenario),
        "strategy": strategy,
        "policy": dict(policy),
        "final-round": FINAL_ROUND_NOTE if adapts_before_export else FINAL_ROUND_NONE,
        "consensus-generic": consensus_generic,
        "partition": dict(partition),
        "rounds": rounds,
        "global-curve": curve,
        "clients": clients,
        "failures": failure_counts(rounds, export_failures),
        "export-failures": export_failures,
        "summary": {**summarize(rounds, clients), **global_summary(curve)},
    }


def global_curve(global_base: Mapping[str, float], rounds: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    """The global model on the whole test set: the base as round 0, then every round it was measured after."""
    curve = [{"round": 0, **global_base}] if global_base else []
    return curve + [{"round": record["round"], **record["global-eval"]} for record in rounds if record.get("global-eval")]


def global_summary(curve: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The base's and the last measured global model's accuracy, when both were measured."""
    if len(curve) < 2 or curve[0]["round"] != 0:
        return {}
    return {"global-accuracy-base": float(curve[0]["global-accuracy"]), "global-accuracy-final": float(curve[-1]["global-accuracy"])}


def partition_record(classes: Sequence[str], label_counts: np.ndarray, public_images: int, public_seed: int) -> dict[str, Any]:
    """The split as results.json keeps it: each client's training images per class."""
    return {
        "classes": list(classes),
        "label-counts": [[int(count) for count in row] for row in label_counts],
        "public-images": int(public_images),
        "public-seed": int(public_seed),
    }


def topic_record(topics: Sequence[str], base_seed: int) -> dict[str, Any]:
    """Text clients' split as results.json keeps it: each client's topic, and the seed the base
    model was drawn from (text has no public slice to pre-train on)."""
    return {"topics": list(topics), "base-seed": int(base_seed)}


def failure_counts(rounds: Sequence[Mapping[str, Any]], export_failures: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Failures by phase and by kind (crash, drop, timeout, invalid), over the whole run."""
    failures = [failure for record in rounds for failure in record["failures"]] + list(export_failures)
    return {
        "total": len(failures),
        "by-phase": dict(sorted(Counter(f["phase"] for f in failures).items())),
        "by-kind": dict(sorted(Counter(f["kind"] for f in failures).items())),
        "train-client-rounds": sum(len(record["sampled"]) for record in rounds),
    }


def summarize(rounds: Sequence[Mapping[str, Any]], clients: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The numbers a run is judged by: per-user accuracy, compression, traffic."""

    def mean(key: str, rows: Sequence[Mapping[str, Any]]) -> float:
        values = [float(row[key]) for row in rows if key in row]
        return float(np.mean(values)) if values else float("nan")

    summary: dict[str, float] = {"clients": float(len(clients))}
    for key in (ACCURACY, WEIGHTED_ACCURACY):
        if clients and all(key in client for client in clients):
            accuracies = np.array([float(client[key]) for client in clients], dtype=np.float64)
            summary.update(
                {
                    f"{key}-mean": float(accuracies.mean()),
                    f"{key}-median": float(np.median(accuracies)),
                    f"{key}-worst-decile": float(worst_decile(accuracies)),
                }
            )
    summary.update(perplexity_summary(clients))
    summary.update(
        {
            "majority-class-rate-mean": mean("majority-class-rate", clients),
            "majority-class-rate-weighted-mean": mean("majority-class-rate-weighted", clients),
            "compression-mean": mean("compression", clients),
            "params-nonzero-mean": mean("params-nonzero", clients),
            "model-bytes-mean": mean("bytes-on-disk", clients),
            "bytes-up-per-round": mean("bytes-up", rounds),
            "bytes-down-per-round": mean("bytes-down", rounds),
            "bytes-up-total": float(sum(int(r["bytes-up"]) for r in rounds)),
            "bytes-down-total": float(sum(int(r["bytes-down"]) for r in rounds)),
            "failed-client-rounds": float(sum(len(r["failures"]) for r in rounds)),
        }
    )
    return summary


def perplexity_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Mean, median and worst-decile (the highest tenth's edge) perplexity, when every row has one."""
    if not rows or not all(PERPLEXITY in row for row in rows):
        return {}
    values = np.array([float(row[PERPLEXITY]) for row in rows], dtype=np.float64)
    return {f"{PERPLEXITY}-mean": float(values.mean()), f"{PERPLEXITY}-median": float(np.median(values)),
            f"{PERPLEXITY}-worst-decile": float(worst_decile(values, lower_is_better=True))}


def headline_metric(clients: Sequence[Mapping[str, Any]]) -> str:
    """The accuracy a comparison is judged by: the label-weighted full-test-set one when every
    client has it (the lower-variance figure), else the sampled split's."""
    return WEIGHTED_ACCURACY if clients and all(WEIGHTED_ACCURACY in client for client in clients) else ACCURACY


def _fmt(value: Any, kind: str = "") -> str:
    if isinstance(value, float) and not np.isfinite(value):
        return "n/a"
    if kind == "pct":
        return f"{100 * float(value):.1f}%"
    if kind == "bytes":
        return human_bytes(float(value))
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(count) < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.2f} {unit}"
        count /= 1024
    return f"{count:.2f} GB"


def summary_line(payload: dict[str, Any], baseline_up: float | None = None, label: str = "") -> str:
    """A finished run in one line: its accuracy, compression and upload (against FedAvg's when given), and failures."""
    summary = payload["summary"]
    line = (f"{label or payload['strategy']}: {_accuracy_text(summary)}, compression {100 * summary['compression-mean']:.1f}%, "
            f"upload {human_bytes(summary['bytes-up-per-round'])}/round")
    if baseline_up:
        line += f" ({100 * summary['bytes-up-per-round'] / baseline_up:.0f}% of FedAvg's)"
    failures = payload["failures"]
    if failures["total"]:
        line += f"; {failures['total']} client failures ({', '.join(f'{k} {v}' for k, v in failures['by-kind'].items())})"
    return line


def global_verdict(payload: dict[str, Any]) -> str:
    """Whether the shared model ended above or below the base it started from, or "" when not measured."""
    summary = payload["summary"]
    if "global-accuracy-final" not in summary:
        return ""
    final, base = summary["global-accuracy-final"], summary["global-accuracy-base"]
    side = "above" if final > base else "below" if final < base else "level with"
    return (f"global model: {100 * final:.1f}% on the whole test set after round {payload['global-curve'][-1]['round']}, "
            f"{side} its base ({100 * base:.1f}%, {100 * (final - base):+.1f} points)")


def _accuracy_text(summary: dict[str, float]) -> str:
    """Perplexity and next-token accuracy for text; for images, the label-weighted full-test-set figures
    when measured, with the sampled splits' mean beside them."""
    def pct(key: str) -> str:
        return f"{100 * summary.get(key, float('nan')):.1f}%"

    if f"{PERPLEXITY}-mean" in summary:
        return (f"mean client perplexity {summary[f'{PERPLEXITY}-mean']:.2f} (worst decile "
                f"{summary[f'{PERPLEXITY}-worst-decile']:.2f}), next-token accuracy {pct('accuracy-mean')} "
                f"(worst decile {pct('accuracy-worst-decile')}) on the clients' own test text")
    if f"{WEIGHTED_ACCURACY}-mean" in summary:
        return (f"mean client accuracy {pct('accuracy-weighted-mean')} (worst decile {pct('accuracy-weighted-worst-decile')}, "
                f"majority-class rate {pct('majority-class-rate-weighted-mean')}) on the label-weighted full test set, "
                f"{pct('accuracy-mean')} on the clients' own test splits")
    return (f"mean client accuracy {pct('accuracy-mean')} (worst decile {pct('accuracy-worst-decile')}, "
            f"majority-class rate {pct('majority-class-rate-mean')})")


def is_text_run(payload: Mapping[str, Any]) -> bool:
    """A language model's run: its clients hold topic text, not labelled images."""
    return "topics" in (payload.get("partition") or {})


def render_report(payload: Mapping[str, Any]) -> str:
    summary = payload["summary"]
    scenario = payload["scenario"]
    failures = payload["failures"]
    text = is_text_run(payload)
    lines = [
        f"# {scenario['name']}: {payload['strategy']}",
        "",
        f"{scenario['num-clients']} clients ({'one topic each' if text else scenario['partition']}), "
        f"{scenario['num-server-rounds']} rounds, model {scenario['model']}, prob {scenario['prob']}, seed {scenario['seed']}"
        + _base_note(payload),
        "",
    ]
    if payload["status"] != COMPLETE:
        lines += [f"**This run is partial**: {payload['stopped']['reason']}.", ""]
    lines += [
        f"Final figures: {payload['final-round']}. " + (
            "Accuracy is next-token accuracy on each client's own test text, beside the perplexity per token there. "
            "Per-round figures below are of the model each evaluated client holds at that round." if text else
            "The weighted full-test-set accuracy measures each final model on every test image of the classes its "
            "client holds, per class weighted by the client's label proportions (the exact expectation that the "
            "client's sampled test split estimates). Per-round accuracies below are of the model each evaluated "
            "client holds at that round, on its own test split."),
        "",
        "| metric | value |",
        "| --- | --- |",
        *_accuracy_rows(summary, text),
        f"| mean compression (params removed) | {_fmt(summary['compression-mean'], 'pct')} |",
        f"| mean model file | {_fmt(summary['model-bytes-mean'], 'bytes')} |",
        f"| bytes up per round | {_fmt(summary['bytes-up-per-round'], 'bytes')} |",
        f"| bytes down per round | {_fmt(summary['bytes-down-per-round'], 'bytes')} |",
        f"| client failures (train, evaluate, export) | {failures['total']} ({_counts(failures['by-kind']) or 'none'}) |",
        "",
        "## Rounds",
        "",
        "| round | sampled | aggregated | failed | bytes up | bytes down | train loss | mean acc | worst decile |"
        + (" mean perplexity |" if text else ""),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if text else ""),
    ]
    for r in payload["rounds"]:
        lines.append(
            f"| {r['round']} | {len(r['sampled'])} | {len(r['aggregated'])} | {_counts(r['failure-counts']) or 0} "
            f"| {_fmt(r['bytes-up'], 'bytes')} | {_fmt(r['bytes-down'], 'bytes')} "
            f"| {_fmt(r['train'].get('train-loss', float('nan')))} "
            f"| {_fmt(r['evaluate'].get('accuracy-mean', float('nan')), 'pct')} "
            f"| {_fmt(r['evaluate'].get('accuracy-worst-decile', float('nan')), 'pct')} |"
            + (f" {_fmt(r['evaluate'].get(f'{PERPLEXITY}-mean', float('nan')))} |" if text else "")
        )
    listed = [(r["round"], f) for r in payload["rounds"] for f in r["failures"]] + [("final", f) for f in payload["export-failures"]]
    if listed:
        lines += ["", "## Failures", ""]
        lines += [f"- round {number}, client {f['client']}, {f['phase']}: {f['kind']}: {f['reason']}" for number, f in listed]
    measured = ("next-token accuracy | perplexity" if text else
                "accuracy, own split | accuracy, weighted full test | majority rate")
    lines += [
        "",
        "## Clients",
        "",
        f"| client | {measured} | compression | nonzero params | file | rounds trained |",
        "| --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if not text else ""),
    ]
    for c in payload["clients"]:
        figures = ([_fmt(c['accuracy'], 'pct'), _fmt(c.get(PERPLEXITY, float('nan')))] if text else
                   [_fmt(c['accuracy'], 'pct'), _fmt(c.get(WEIGHTED_ACCURACY, float('nan')), 'pct'),
                    _fmt(c['majority-class-rate'], 'pct')])
        lines.append(
            f"| {int(c['client-id'])} | {' | '.join(figures)} "
            f"| {_fmt(c['compression'], 'pct')} | {int(c['params-nonzero'])} | {_fmt(c['bytes-on-disk'], 'bytes')} "
            f"| {int(c['rounds-trained'])} |"
        )
    return "\n".join(lines) + "\n"


def _base_note(payload: Mapping[str, Any]) -> str:
    """Where the base model came from: a seed's pre-training on the public slice, or a text model's seeded start."""
    partition = payload.get("partition")
    if not partition:
        return "."
    if "topics" in partition:
        return f" (base model: seed {partition['base-seed']})."
    return f" (base model and public slice: seed {partition['public-seed']})."


def _accuracy_rows(summary: Mapping[str, float], text: bool) -> list[str]:
    """Mean, median and worst decile of each accuracy the run measured, then the majority-class floor
    (images) or the perplexity (text)."""
    rows = []
    where_own = "own test text" if text else "own test split"
    for key, where in ((WEIGHTED_ACCURACY, "weighted full test set"), (ACCURACY, where_own)):
        if f"{key}-mean" in summary:
            rows += [f"| {stat} client {'next-token ' if text else ''}accuracy, {where} | {_fmt(summary[f'{key}-{suffix}'], 'pct')} |"
                     for stat, suffix in (("mean", "mean"), ("median", "median"), ("worst-decile", "worst-decile"))]
    if text:
        return rows + [f"| {stat} client perplexity, {where_own} | {_fmt(summary[f'{PERPLEXITY}-{suffix}'])} |"
                       for stat, suffix in (("mean", "mean"), ("median", "median"), ("worst-decile (highest)", "worst-decile"))
                       if f"{PERPLEXITY}-{suffix}" in summary]
    rows.append(f"| mean majority-class rate, own test split | {_fmt(summary['majority-class-rate-mean'], 'pct')} |")
    if np.isfinite(summary.get("majority-class-rate-weighted-mean", float("nan"))):
        rows.append(f"| mean majority-class rate, weighted | {_fmt(summary['majority-class-rate-weighted-mean'], 'pct')} |")
    return rows


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in counts.items())
