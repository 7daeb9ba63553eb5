"""The job's progress in Kafka's own terms: each counted batch's end offsets committed to a consumer group,
so that `kafka-consumer-groups.sh --describe --group G` shows CURRENT-OFFSET, LOG-END-OFFSET and LAG.

Spark's Kafka connector commits nothing to Kafka, and neither does our source: the checkpoint is what a
restart resumes from, and stays so. The group is only for watching. Commits go from a thread of their own
after the batch's results are committed: a failed one is one line and is retried at the next batch; it
never fails or holds up a batch. Each commit carries a small lease (the query, pid, host and time) in the
offsets' metadata, refreshed while a live job waits, so a second job given the same --group-id refuses to
start rather than mix its offsets with a running job's.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time

from ..clients import open_consumer
from ..errors import UserError
from ..kafka_settings import KafkaSettings

log = logging.getLogger(__name__)
LEASE_S = 60.0  # a running job's commits are never older than this: a live job renews them a third as often


def default_group(query_id: str) -> str:
    """The group a query commits to unless --group-id names one: its own, so it is never another's."""
    return f"sfcrime-{query_id}"


def lease(query_id: str | None) -> str:
    return json.dumps({"job": "sfcrime", "query": query_id, "pid": os.getpid(), "host": socket.gethostname(),
                       "at": round(time.time())}, separators=(",", ":"))


def holder(metadata: str) -> dict | None:
    """The job whose lease an offset's metadata holds, or None (another tool's commit, or none)."""
    try:
        found = json.loads(metadata)
    except ValueError:
        return None
    return found if isinstance(found, dict) and found.get("job") == "sfcrime" else None


def check_group_free(settings: KafkaSettings, group_id: str, query_id: str | None, now: float | None = None) -> None:
    """One line, before Spark starts, when another running job (another query) commits to `group_id`."""
    now = time.time() if now is None else now
    with open_consumer(settings, group_id) as consumer:
        committed = consumer.committed_offsets(consumer.partitions())
    for _, metadata in committed.values():
        other = holder(metadata)
        if other and other.get("query") != query_id and now - float(other.get("at", 0)) < LEASE_S:
            raise UserError(f"consumer group {group_id!r} is in use by a running job (query {other.get('query')}, "
                            f"pid {other.get('pid')} on {other.get('host')}, {now - float(other['at']):.0f} s ago): "
                            "stop it first, or pass another --group-id")


class GroupCommitter:
    """Commits the latest counted offsets to the group from its own thread; `submit` never waits."""

    def __init__(self, settings: KafkaSettings, group_id: str | None, live: bool) -> None:
        self.settings, self.group_id, self.live = settings, group_id, live
        self.query_id: str | None = None
        self._pending: dict[int, int] | None = None
        self._committed: dict[int, int] | None = None
        self._failing = False
        self._wake = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="sfcrime-consumer-group", daemon=True)

    def start(self) -> "GroupCommitter":
        self._thread.start()
        return self

    def set_query(self, query_id: str) -> str:
        """The query is known once it starts: the default group is its own. Says where to look, once."""
        with self._wake:
            self.query_id = query_id
            self.group_id = self.group_id or default_group(query_id)
            self._wake.notify()
        print(f"consumer group {self.group_id}: kafka-consumer-groups.sh --bootstrap-server "
              f"{self.settings.bootstrap_servers} --describe --group {self.group_id} shows the job's lag",
              file=sys.stderr, flush=True)
        return self.group_id

    def submit(self, offsets: dict[int, int] | None) -> None:
        """After a batch's results are committed: its end offsets, the next to read of each partition."""
        if not offsets:
            return
        with self._wake:
            self._pending = dict(offsets) if self._pending is None else {**self._pending, **offsets}
            self._wake.notify()

    def close(self, timeout_s: float = 10.0) -> None:
        """Commit what is pending (the last batch's offsets), then stop."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout_s)

    def _run(self) -> None:
        consumer = None
        try:
            while True:
                with self._wake:
                    if not self._closing:
                        self._wake.wait(timeout=LEASE_S / 3 if self.live else None)
                    closing = self._closing
                    offsets = self._pending or (self._committed if self.live else None)
                    self._pending = None
                    group = self.group_id
                if offsets and group:
                    consumer = consumer or open_consumer(self.settings, group)
                    self._commit(consumer, offsets)
                elif offsets:  # the query is not known yet: keep them
                    with self._wake:
                        self._pending = {**offsets, **(self._pending or {})}
                if closing:
                    return
        except Exception as error:  # noqa: BLE001 - watching must never stop the job
            log.warning("consumer group offsets: %s", str(error).splitlines()[0] if str(error) else error)
        finally:
            if consumer is not None:
                consumer.close()

    def _commit(self, consumer, offsets: dict[int, int]) -> None:
        try:
            consumer.commit_offsets(offsets, lease(self.query_id))
        except UserError as error:
            with self._wake:  # retried with the next batch's offsets (or these, if none come)
                self._pending = {**offsets, **(self._pending or {})}
            if not self._failing:
                log.warning("could not commit the offsets read to consumer group %s (%s): retried at the next "
                            "batch; the job goes on", self.group_id, error)
            self._failing = True
            return
        if self._failing:
            log.info("offsets committed to consumer group %s again", self.group_id)
        self._failing = False
        self._committed = offsets
