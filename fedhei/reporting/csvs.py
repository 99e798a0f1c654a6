"""results.json as flat tables for pandas and spreadsheets.

``rounds.csv`` has one row per client per round (every client, sampled or not, with
flags saying what it did), ``clients.csv`` one row per client for its final model.
Both lead with the strategy and seed, so the tables of several runs concatenate into
one (a comparison writes them so).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fedhei import atomic

ROUNDS_CSV = "rounds.csv"
CLIENTS_CSV = "clients.csv"


def _identity(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {"strategy": payload["strategy"], "seed": payload["scenario"]["seed"]}


def _failures(failures: Iterable[Mapping[str, Any]]) -> str:
    return "; ".join(f"{failure['phase']} {failure['kind']}: {failure['reason']}" for failure in failures)


def round_rows(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every client in every round: sampled, aggregated, evaluated, failures, and its metrics of that round;
    and one row per measured global model (client left empty; round 0 is the base) with its whole-test-set figures."""
    rows = [{**_identity(payload), "round": point["round"], "client": "", **{k: v for k, v in point.items() if k != "round"}}
            for point in payload.get("global-curve", [])]
    for record in payload["rounds"]:
        metrics = {int(row["client"]): row for row in record["clients"]}
        for client in range(int(payload["scenario"]["num-clients"])):
            row = {
                **_identity(payload),
                "round": record["round"],
                "client": client,
                "sampled": int(client in record["sampled"]),
                "aggregated": int(client in record["aggregated"]),
                "evaluated": int(client in record["evaluated"]),
                "failures": _failures(f for f in record["failures"] if f["client"] == client),
            }
            row.update({key: value for key, value in metrics.get(client, {}).items() if key != "client"})
            rows.append(row)
    return rows


def client_rows(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every client's final model: its figures, its failure if the export failed, its training labels
    or its topic (where results.json has the partition: files written before it did lack it)."""
    finals = {int(row["client-id"]): row for row in payload["clients"]}
    partition = payload.get("partition") or {}
    rows = []
    for client in range(int(payload["scenario"]["num-clients"])):
        row: dict[str, Any] = {**_identity(payload), "client": client}
        row.update({key: value for key, value in finals.get(client, {}).items() if key not in ("client", "client-id")})
        row["failures"] = _failures(f for f in payload["export-failures"] if f["client"] == client)
        if partition.get("label-counts"):
            row.update({f"train-{name}": count for name, count in zip(partition["classes"], partition["label-counts"][client],
                                                                     strict=True)})
        if partition.get("topics"):
            row["topic"] = partition["topics"][client]
        rows.append(row)
    return rows


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Columns in first-seen order over all rows; a value a row lacks is an empty cell."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(columns), restval="")
            writer.writeheader()
            writer.writerows(rows)

    atomic.write_with(path, write)


def write_run_csvs(directory: Path, payloads: Sequence[Mapping[str, Any]]) -> None:
    """rounds.csv and clients.csv of one run, or of several runs concatenated."""
    write_csv(directory / ROUNDS_CSV, [row for payload in payloads for row in round_rows(payload)])
    write_csv(directory / CLIENTS_CSV, [row for payload in payloads for row in client_rows(payload)])
