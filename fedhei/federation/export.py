"""The end of a federation for one user: its final model, evaluated and written with a manifest."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from fedhei import atomic
from fedhei.federation.client_round import Arrays, ClientJob, client_data, local_round, merge, task_figures
from fedhei.federation.state import ClientState
from fedhei.method.pruning import compression, layer_ratios
from fedhei.method.structured import structured_prune
from fedhei.models.checkpoints import dense_file_bytes, save_sparse, save_structured
from fedhei.models.registry import count_parameters, linear_layers
from fedhei.training.loops import evaluate


def finalize(job: ClientJob, global_arrays: Arrays, state: ClientState | None, run_dir: Path) -> dict[str, float]:
    """Build, evaluate and export this user's final compressed model with its manifest.

    Every strategy but plain FedAvg ends the same way, so their numbers compare: one
    last local round of the strategy's own training on the final global model (a
    FedPer head catches up with the final body, FedAvg-FT fine-tunes, a client the
    server never sampled adapts on arrival), which also takes the rest of the pruning
    schedule at once, so every model reaches its target ratio. Nothing is sent back.

    The model is evaluated on the client's sampled test split and, unless ``weighted-eval``
    is off, on the whole test set weighted by its label proportions; the manifest keeps both.
    A language model is evaluated on its client's test text: next-token accuracy and perplexity.
    """
    model, state = final_model(job, global_arrays, state)
    return export_model(job, model, state, run_dir)


def final_model(job: ClientJob, global_arrays: Arrays, state: ClientState | None) -> tuple[nn.Module, ClientState | None]:
    """The model this user keeps, and its state: after the last local round where the strategy adapts,
    else the global model merged with the user's own state. The export's training, apart from its evaluation."""
    if job.policy.adapts_before_export:
        final = local_round(replace(job, complete_schedule=True), global_arrays, state)
        return final.model, final.state
    return merge(job, global_arrays, state), state


def export_model(job: ClientJob, model: nn.Module, state: ClientState | None, run_dir: Path) -> dict[str, float]:
    """Evaluate the final model, write it (sparse, or structurally pruned) with its manifest; the manifest's numbers."""
    data = client_data(job.scenario, job.client_id, model)
    masks = state.masks if state else {}
    roles = state.roles if state else None
    kept = compression(model, masks)
    client_dir = run_dir / "clients" / str(job.client_id)
    model_path = client_dir / "model.safetensors"
    metadata = {"model": job.scenario.model, "client": str(job.client_id), "strategy": job.scenario.strategy,
                "roles": json.dumps(roles.to_dict() if roles else None)}
    exported: nn.Module = model
    if job.scenario.export_pruning == "structured" and roles is not None and masks:
        exported = structured_prune(model, layer_ratios(roles, job.scenario.prob, job.scenario.personal_factor))
        save_structured(exported, model_path, metadata)
    else:
        save_sparse(model, model_path, metadata)
    result = evaluate(exported, data.test, precision=job.scenario.eval_precision)
    labels = data.label_metrics(exported, job.scenario, weighted=job.scenario.weighted_eval != "off")
    total, nonzero = count_parameters(exported)
    manifest = {
        "client": job.client_id,
        "strategy": job.scenario.strategy,
        "model": job.scenario.model,
        "accuracy": result["accuracy"],
        **task_figures(result),
        "test-examples": len(data.test),
        "train-examples": len(data.train),
        **labels,
        "params-total": total,
        "params-nonzero": nonzero,
        "compression": kept["compression"],
        "linear-compression": kept["linear-compression"],
        "bytes-on-disk": model_path.stat().st_size,
        "bytes-dense": dense_file_bytes(model, metadata),
        "export-pruning": job.scenario.export_pruning if roles is not None and masks else "none",
        "rounds-trained": state.rounds_trained if state else 0,
        "roles": roles.roles if roles else {},
        # The sensitivities the roles were decided from, and how much of each layer is gone.
        "role-scores": dict(zip(roles.layers, roles.scores, strict=True)) if roles else {},
        "layer-pruned": layer_pruned_fractions(model, masks),
    }
    atomic.write_json(client_dir / "manifest.json", manifest)
    return {key: float(value) for key, value in manifest.items() if isinstance(value, (int, float))}


def layer_pruned_fractions(model: nn.Module, masks: dict[str, torch.Tensor]) -> dict[str, float]:
    """Every linear layer's share of pruned weights (0 for an unpruned layer), in forward order."""
    fractions = {}
    for layer in linear_layers(model):
        mask = masks.get(f"{layer.name}.weight")
        fractions[layer.name] = 0.0 if mask is None else 1.0 - float(mask.float().mean())
    return fractions
