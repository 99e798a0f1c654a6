"""The Flower ClientApp: moves records between the server and ``fedhei.federation.client_round``.

Each message carries three records: ``arrays`` (the global model), ``scenario``
(the run's settings, so the server is the one source of configuration) and
``config`` (this round: server round, the strategy's client policy, the consensus
layer set, whether this is the final export). The client identifies itself by
``partition-id`` from its node config, as in every Flower simulation.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.state import StateStore, open_store
from fedhei.config.scenario import Scenario
from fedhei.federation.client_round import ClientJob, evaluate_round, finalize, train_round
from fedhei.federation.policy import ClientPolicy

app = ClientApp()


def _job(message: Message, context: Context) -> ClientJob:
    config = message.content["config"]
    consensus = config.get("consensus-generic")
    return ClientJob(
        scenario=Scenario.from_mapping(dict(message.content["scenario"])),
        policy=ClientPolicy.from_config(config),
        client_id=int(context.node_config["partition-id"]),
        server_round=int(config["server-round"]),
        consensus_generic=tuple(consensus) if bool(config.get("use-consensus", False)) else None,
    )


def _store(job: ClientJob, context: Context, message: Message) -> StateStore:
    """The client's state store; disk state sits under the run id, so a rerun never inherits it."""
    root = Path(job.scenario.state_dir) if job.scenario.state_dir else Path(str(message.content["config"]["run-dir"])) / "state"
    return open_store(job.scenario.state_store, context, root / str(context.run_id), job.client_id)


def _global_arrays(message: Message) -> dict:
    return {name: array.numpy() for name, array in message.content["arrays"].items()}


@app.train()
def train(message: Message, context: Context) -> Message:
    job = _job(message, context)
    store = _store(job, context, message)
    update, metrics, state = train_round(job, _global_arrays(message), store.load())
    store.save(state)
    roles = state.roles
    reply = RecordDict(
        {
            "arrays": ArrayRecord({name: Array(value) for name, value in update.items()}),
            "metrics": MetricRecord({**metrics, "client-id": float(job.client_id)}),
            "roles": ConfigRecord({"generic": roles.generic() if roles else [], "personalized": roles.personalized() if roles else []}),
        }
    )
    return Message(content=reply, reply_to=message)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    job = _job(message, context)
    store = _store(job, context, message)
    if bool(message.content["config"].get("final", False)):
        metrics = finalize(job, _global_arrays(message), store.load(), Path(str(message.content["config"]["run-dir"])))
    else:
        metrics = evaluate_round(job, _global_arrays(message), store.load())
    reply = RecordDict({"metrics": MetricRecord({**metrics, "client-id": float(job.client_id)})})
    return Message(content=reply, reply_to=message)
