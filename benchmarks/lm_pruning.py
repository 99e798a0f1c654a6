"""Perplexity of one user's language model before and after pruning by layer roles.

A small Qwen2 (random init, or ``--base`` a checkpoint folder) is pre-trained on the
public mixture of topic text, fine-tuned on one client's topic, scored (HEI's
``sensing`` by default), and pruned at each ``--prob``: masked (magnitude) and
structured (key/value head groups and MLP channels), with the HEI roles, random
roles (as many personalized layers, ``--random-draws`` draws) and uniform pruning.
Prints the perplexity on the client's test text right after pruning and after
``--recovery-epochs`` of fine-tuning, and the fraction of parameters removed.

    OMP_NUM_THREADS=1 python benchmarks/lm_pruning.py --model qwen2-tiny --client 0
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.table import Table
from torch import nn

from fedhei import atomic
from fedhei.config.scenario import Scenario
from fedhei.data.text import TOPICS, TokenBatches, TopicTextSpec, client_batches, public_documents, token_sequences
from fedhei.method.pruning import compression, layer_ratios, magnitude_masks
from fedhei.method.roles import RoleMap, classify, random_roles, uniform_roles
from fedhei.method.scoring import build_scorer
from fedhei.method.structured import structured_prune
from fedhei.models.checkpoints import load_checkpoint
from fedhei.models.language import tokenizer_for
from fedhei.models.registry import create_model, linear_layers, resolve_model_name
from fedhei.reporting.tables import stdout
from fedhei.training.loops import TrainSettings, apply_masks, evaluate, train

# The scenario's settings where this benchmark has no flag of its own (scoring, personal factor, optimizer).
DEFAULTS = Scenario()

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2-tiny", help="a registry name or a Qwen2 checkpoint folder")
    parser.add_argument("--base", default="", help="a checkpoint (folder or file) to start from instead of random weights")
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--client", type=int, default=0)
    parser.add_argument("--documents", type=int, default=200, help="training documents per client")
    parser.add_argument("--public-documents", type=int, default=600)
    parser.add_argument("--sequence-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pretrain-epochs", type=float, default=8.0, help="on the public mixture (0: skip)")
    parser.add_argument("--finetune-epochs", type=float, default=2.0)
    parser.add_argument("--recovery-epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--scorer", default="sensing")
    parser.add_argument("--calibration-batches", type=int, default=2)
    parser.add_argument("--role-threshold", type=float, default=0.25, help="top fraction of layers made personal")
    parser.add_argument("--probs", default="0.3,0.5,0.7")
    parser.add_argument("--random-draws", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the figures as JSON")
    return parser.parse_args(argv)


def _settings(args: argparse.Namespace, epochs: float) -> TrainSettings:
    """The scenario's fine-tuning (AdamW, a cosine within the call) with this benchmark's budget and rate."""
    return replace(DEFAULTS.finetune_settings(), epochs=epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=0.01)


def _prune(
    model: nn.Module, ratios: dict[str, float], structured: bool, recover: TrainSettings, data: tuple[TokenBatches, TokenBatches],
    seed: int,
) -> dict[str, float]:
    """Prune a copy one-shot, measure, recover, measure again."""
    if structured:
        pruned, masks = structured_prune(model, ratios), {}
    else:
        pruned = copy.deepcopy(model)
        masks = magnitude_masks(pruned, ratios)
        apply_masks(pruned, masks)
    removed = compression(pruned, masks, base=model)["compression"]
    right_after = evaluate(pruned, data[1])["perplexity"]
    train(pruned, data[0], recover, masks=masks, seed=seed)
    return {"removed": removed, "ppl-pruned": right_after, "ppl-recovered": evaluate(pruned, data[1])["perplexity"]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    name = resolve_model_name(args.model)
    tokenizer = tokenizer_for(name)
    spec = TopicTextSpec(num_clients=args.clients, num_topics=len(TOPICS), train_documents=args.documents,
                         test_documents=max(1, args.documents // 4), public_documents=args.public_documents, seed=args.seed)
    data = client_batches(spec, args.client, tokenizer, args.sequence_length)
    base = load_checkpoint(args.base, name) if args.base else create_model(name, seed=args.seed)
    figures: dict[str, Any] = {"random-init": evaluate(base, data[1])["perplexity"]}
    if args.pretrain_epochs > 0:
        public = TokenBatches(token_sequences(public_documents(spec), tokenizer, args.sequence_length))
        train(base, public, _settings(args, args.pretrain_epochs), seed=args.seed)
        figures["pretrained"] = evaluate(base, data[1])["perplexity"]
    personal = copy.deepcopy(base)
    train(personal, data[0], _settings(args, args.finetune_epochs), seed=args.seed + 1)
    figures["personal"] = evaluate(personal, data[1])["perplexity"]
    calibration = list(data[0].batches(args.batch_size, shuffle=True, seed=args.seed))[: args.calibration_batches]
    scores = build_scorer(args.scorer, DEFAULTS.scorer_settings())(personal, calibration, seed=args.seed)
    hei = classify(scores, "top-fraction", args.role_threshold)
    layers = [layer.name for layer in linear_layers(personal)]
    role_sets: list[tuple[str, list[RoleMap]]] = [
        ("hei", [hei]),
        ("random", [random_roles(layers, len(hei.personalized()), seed) for seed in range(args.random_draws)]),
        ("uniform", [uniform_roles(layers)]),
    ]
    recover = _settings(args, args.recovery_epochs)
    rows = []
    for prob in (float(part) for part in args.probs.split(",")):
        for structured in (False, True):
            for label, maps in role_sets:
                runs = [_prune(personal, layer_ratios(roles, prob, DEFAULTS.personal_factor), structured, recover, data,
                               args.seed + 2) for roles in maps]
                rows.append({"prob": prob, "pruning": "structured" if structured else "masked", "roles": label,
                             **{key: [run[key] for run in runs] for key in runs[0]}})
    seconds = time.perf_counter() - started

    table = Table(title=f"{args.model} on client {args.client}'s topic ({spec.topic_of(args.client)}): "
                        f"{len(data[0])} training and {len(data[1])} test sequences of {args.sequence_length} tokens")
    for column in ("prob", "pruning", "roles", "params removed", "perplexity right after pruning",
                   f"perplexity after {args.recovery_epochs:g} epoch of recovery"):
        table.add_column(column, justify="right")

    def cell(values: list[float], fmt: str) -> str:
        if len(values) == 1:
            return format(values[0], fmt)
        return f"{format(float(np.mean(values)), fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"

    for row in rows:
        table.add_row(f"{row['prob']:g}", row["pruning"], row["roles"], cell(row["removed"], ".1%"),
                      cell(row["ppl-pruned"], ".2f"), cell(row["ppl-recovered"], ".2f"))
    table.caption = (f"perplexity on the client's test text: random init {figures['random-init']:.1f}, "
                     + (f"pre-trained on the public mixture {figures['pretrained']:.2f}, " if "pretrained" in figures else "")
                     + f"fine-tuned on the topic {figures['personal']:.2f} (the 'before' of every row); "
                     f"{args.scorer} scoring spent {scores.forward_passes} forward passes and made personal: "
                     f"{', '.join(hei.personalized())}; random roles: mean (min-max) over {args.random_draws} draws; "
                     f"{seconds:.0f} s in all")
    stdout.print(table)
    if args.out:
        atomic.write_json(args.out, {"settings": vars(args) | {"out": str(args.out)}, "figures": figures,
                                     "personalized": hei.personalized(), "forward-passes": scores.forward_passes,
                                     "seconds": seconds, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
