"""The Flower ClientApp: moves records between the server and ``fedhei.federation``.

Each message carries three records: ``arrays`` (the global model, or the part of it
this client shares), ``scenario`` (the run's settings, so the server is the one
source of configuration) and ``config`` (this round: server round, the strategy's
client policy, the run directory and run token, the consensus layer set, whether
this is the final export). The client identifies itself by ``partition-id`` from
its node config, as in every Flower simulation; a ``query`` message asks for it,
so the server can sample clients by partition id and never by Flower node id.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from clients.state import StateStore, open_store
from fedhei.config.scenario import Scenario
from fedhei.experiments.layout import state_root
from fedhei.federation.client_round import ClientJob, blank_copy, evaluate_round, prepare, train_round
from fedhei.federation.export import finalize
from fedhei.federation.faults import Fault, InjectedCrash, fault_for, hang_seconds
from fedhei.federation.policy import ClientPolicy
from fedhei.federation.wire import npy_array

app = ClientApp()

PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"


def _partition_id(context: Context) -> int:
    return int(context.node_config[PARTITION_ID])


def _job(message: Message, context: Context) -> ClientJob:
    config = message.content["config"]
    consensus = config.get("consensus-generic")
    scenario = Scenario.from_mapping(dict(message.content["scenario"]))
    # Each client computes with the cores it was given, and the same count in every run,
    # since a different thread count changes floating-point sums.
    torch.set_num_threads(max(1, int(scenario.client_num_cpus)))
    return ClientJob(
        scenario=scenario,
        policy=ClientPolicy.from_config(config),
        client_id=_partition_id(context),
        server_round=int(config["server-round"]),
        consensus_generic=tuple(consensus) if bool(config.get("use-consensus", False)) else None,
    )


def _store(job: ClientJob, context: Context, message: Message) -> StateStore:
    """The client's state store; disk state sits under the run's token, so a fresh run never inherits it."""
    config = message.content["config"]
    root = state_root(job.scenario, Path(str(config["run-dir"])))
    return open_store(job.scenario.state_store, context, root / str(config["run-token"]), job.client_id)


def _global_arrays(message: Message) -> dict:
    return {name: npy_array(array.data, array.dtype, array.shape) for name, array in message.content["arrays"].items()}


_worker_models: dict[str, torch.nn.Module] = {}


@contextmanager
def worker_model(job: ClientJob) -> Iterator[torch.nn.Module]:
    """This worker's one model of the job's name, which every client it runs loads its weights into.

    A round that raises may leave it half-changed (a scorer's hooks, frozen parameters): it is dropped
    then, and the next client gets a fresh one.
    """
    name = job.scenario.model
    if name not in _worker_models:
        _worker_models.clear()
        _worker_models[name] = blank_copy(name)
    try:
        yield _worker_models[name]
    except BaseException:
        _worker_models.pop(name, None)
        raise


def _reply(message: Message, job: ClientJob, metrics: dict[str, float], **records: ArrayRecord | ConfigRecord) -> Message:
    content = RecordDict({"metrics": MetricRecord({**metrics, "client-id": float(job.client_id)}), **records})
    return Message(content=content, reply_to=message)


@app.query()
def query(message: Message, context: Context) -> Message:
    """The server's roll call: which partition this node holds (with its data loaded, ready to train)."""
    prepare(Scenario.from_mapping(dict(message.content["scenario"])))
    identity = MetricRecord({PARTITION_ID: _partition_id(context), NUM_PARTITIONS: int(context.node_config.get(NUM_PARTITIONS, 0))})
    return Message(content=RecordDict({"identity": identity}), reply_to=message)


@app.train()
def train(message: Message, context: Context) -> Message:
    job = _job(message, context)
    fault = fault_for(job.scenario, job.server_round, job.client_id)
    if fault is Fault.DROP:
        return Message(Error(code=ErrorCode.NODE_UNAVAILABLE, reason="injected drop (fault-drop): the client left the round"),
                       reply_to=message)
    if fault is Fault.CRASH:
        raise InjectedCrash("injected crash (fault-crash)")
    store = _store(job, context, message)
    with worker_model(job) as model:
        update, metrics, state = train_round(job, _global_arrays(message), store.load(before_round=job.server_round), into=model)
        # Array copies each update into the message before the worker's model takes the next client.
        arrays = ArrayRecord({name: Array(value) for name, value in update.items()})
    store.save(state, job.server_round)
    roles = state.roles
    reply = _reply(
        message,
        job,
        metrics,
        arrays=arrays,
        roles=ConfigRecord({"generic": roles.generic() if roles else [], "personalized": roles.personalized() if roles else []}),
    )
    if fault is Fault.HANG:
        time.sleep(hang_seconds(job.scenario, message.metadata.created_at, time.time()))
    return reply


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    job = _job(message, context)
    store = _store(job, context, message)
    state = store.load(before_round=job.server_round + 1)
    if bool(message.content["config"].get("final", False)):
        metrics = finalize(job, _global_arrays(message), state, Path(str(message.content["config"]["run-dir"])))
    else:
        with worker_model(job) as model:
            metrics = evaluate_round(job, _global_arrays(message), state, into=model)
    return _reply(message, job, metrics)
