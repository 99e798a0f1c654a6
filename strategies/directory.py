"""Who is who: the map between Flower node ids and fedhei's partition ids.

Flower's node ids are random in every run, so sampling by node id would give
different users in every run and in every strategy of a bench. The server asks
each node once which partition it holds (a ``query`` message) and from then on
samples, records and aggregates by partition id only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedhei.errors import FedheiError

POLL_INTERVAL_S = 0.02
# The roll call also waits for every worker to start and load its data, which can take
# minutes on a busy machine; a round's own timeout is for the rounds.
ROLL_CALL_TIMEOUT_S = 900.0
_server_thread = threading.local()


def stop_waiting_when(engine_stopped: threading.Event) -> None:
    """Bind the calling server thread to its simulation's stop signal.

    Whoever runs the simulation sets the event once its engine has ended, normally or
    not: the server thread still waiting for replies then gives up at once instead of
    holding the process (Flower's server thread is not a daemon) until its timeout. The
    binding is per thread, so one simulation's end never cuts another's waits short.
    """
    _server_thread.engine_stopped = engine_stopped


def _engine_stopped() -> bool:
    event: threading.Event | None = getattr(_server_thread, "engine_stopped", None)
    return event is not None and event.is_set()


def exchange(grid: Grid, messages: Sequence[Message], timeout: float, on_reply: Callable[[Message], None] | None = None,
             in_flight: int | None = None) -> list[Message]:
    """Send ``messages`` and collect the replies that arrive within ``timeout`` seconds.

    Flower's ``send_and_receive`` does the same but says nothing until the end;
    this one reports each reply as it comes (for progress displays) and polls more often.
    With ``in_flight``, at most that many messages wait at once, the next sent as each
    reply comes: Flower's simulation engine scans every waiting message for every node
    ten times a second, so a thousand messages to a thousand nodes at once cost it a
    million checks per scan, on the cores the clients need.
    """
    queued = list(messages)
    sent = len(queued) if in_flight is None else max(1, in_flight)
    pending = set(grid.push_messages(queued[:sent]))
    deadline = time.monotonic() + timeout
    replies: list[Message] = []
    while pending and time.monotonic() < deadline and not _engine_stopped():
        arrived = list(grid.pull_messages(pending))
        for reply in arrived:
            pending.discard(reply.metadata.reply_to_message_id)
            replies.append(reply)
            if on_reply is not None:
                on_reply(reply)
        if arrived and sent < len(queued):
            pending.update(grid.push_messages(queued[sent:sent + len(arrived)]))
            sent += len(arrived)
        if pending and not arrived:
            time.sleep(POLL_INTERVAL_S)
    return replies


@dataclass(frozen=True)
class ClientDirectory:
    """Partition id <-> node id for the nodes of this run."""

    node_of: dict[int, int]

    @property
    def partition_of(self) -> dict[int, int]:
        return {node: partition for partition, node in self.node_of.items()}

    def nodes(self, partitions: Iterable[int]) -> list[int]:
        return [self.node_of[partition] for partition in partitions]

    @classmethod
    def discover(cls, grid: Grid, scenario: ConfigRecord, num_clients: int, timeout: float = ROLL_CALL_TIMEOUT_S,
                 in_flight: int | None = None) -> ClientDirectory:
        """Wait for the nodes to connect, ask each for its partition id (``in_flight`` at a time, as
        :func:`exchange` says), and refuse a federation that does not hold 0..num-clients-1 once each."""
        deadline = time.monotonic() + timeout
        nodes = sorted(grid.get_node_ids())
        while len(nodes) < num_clients and time.monotonic() < deadline and not _engine_stopped():
            time.sleep(1.0)
            nodes = sorted(grid.get_node_ids())
        question = RecordDict({"config": ConfigRecord({"ask": "partition-id"}), "scenario": scenario})
        messages = [Message(question, dst_node_id=node, message_type=MessageType.QUERY) for node in nodes]
        replies = exchange(grid, messages, max(1.0, deadline - time.monotonic()), in_flight=in_flight)
        if len(replies) < len(nodes):
            raise FedheiError(f"only {len(replies)} of {len(nodes)} nodes answered the roll call within {timeout:g} s; "
                              "are all SuperNodes running?")
        node_of: dict[int, int] = {}
        for reply in replies:
            if reply.has_error():
                raise FedheiError(f"node {reply.metadata.src_node_id} did not say which partition it holds: "
                                  f"{reply.error.reason.strip()}")
            partition = int(reply.content.metric_records["identity"]["partition-id"])
            if partition in node_of:
                raise FedheiError(f"two nodes hold partition-id {partition}; give each SuperNode its own "
                                  "--node-config \"partition-id=<i> num-partitions=<n>\"")
            node_of[partition] = reply.metadata.src_node_id
        expected = set(range(num_clients))
        if set(node_of) != expected:
            missing = sorted(expected - set(node_of))[:5]
            extra = sorted(set(node_of) - expected)[:5]
            raise FedheiError(f"the federation's {len(nodes)} nodes hold partition ids "
                              f"other than 0..{num_clients - 1} (missing {missing}, unexpected {extra}); num-clients must "
                              "equal the number of SuperNodes, each with its own partition-id")
        return cls(node_of)
