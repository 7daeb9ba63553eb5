"""The job's event-time watermark: one per Kafka partition, and the job's is the smallest of them.

A window is final once the job's watermark has passed its end. Partitions are read at different speeds
(a full-speed replay, maxOffsetsPerTrigger sharing a batch between them, a leader that moves), so a
watermark taken from the newest event time of any partition ran ahead of the slower ones, and their calls
came "late" into windows already called final. As Flink's Kafka source does, each partition keeps its
own: the latest event time read from it. The job's watermark is the smallest of them minus --watermark,
and it never goes back.

Idle partitions (Flink's `withIdleness`): a partition with nothing unread and no new message for
--idle-timeout (processing time) stops holding the watermark back; a new message makes it active again,
with its own event time. A partition with unread messages is never idle, however slow. One that has given
no event time yet (new, empty, or only malformed records) holds the watermark where it is until it gives
one or goes idle. When every partition is idle, the smallest event time over all of them counts: Flink
keeps the last watermark then, which ours can only equal or trail (it never goes back), and ours does not
depend on whether the check ran just before or just after the last partition went quiet.

Pure functions here; the results store keeps each partition's clock with the batch that moved it
(results.py), and the job feeds it Kafka's end offsets (KafkaEnds).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionClock:
    """What the job knows of one partition's progress in event time."""

    partition: int
    event_time: float | None = None  # the latest plausible event time read from it (epoch seconds)
    read_to: int = 0  # the offset the job has read it up to (exclusive): its latest batch's end
    end_offset: int | None = None  # Kafka's end offset when last asked; None: not known
    grew_at: float = 0.0  # wall-clock time its end offset was last seen to grow, or it was first seen
    idle: bool = False

    @property
    def unread(self) -> int | None:
        return None if self.end_offset is None else max(0, self.end_offset - self.read_to)


@dataclass(frozen=True)
class Observation:
    """What a batch (or a look at Kafka between batches) tells of the partitions besides its calls: where
    the batch read each partition up to, Kafka's end offsets (None: the broker did not answer), and when."""

    now: float
    idle_timeout_s: float
    read_to: dict[int, int] | None = None
    end_offsets: dict[int, int] | None = None


def observe(clocks: dict[int, PartitionClock], now: float, idle_timeout_s: float,
            event_times: dict[int, float] | None = None, read_to: dict[int, int] | None = None,
            end_offsets: dict[int, int] | None = None) -> dict[int, PartitionClock]:
    """The clocks after a batch (its latest event time and end offset per partition) or a look at Kafka's
    end offsets alone. `end_offsets` None: Kafka could not be asked, so no partition is taken for idle."""
    event_times, read_to = event_times or {}, read_to or {}
    known = set(clocks) | set(event_times) | set(read_to) | set(end_offsets or {})
    updated = {}
    for p in sorted(known):
        clock = clocks.get(p) or PartitionClock(p, grew_at=now)
        event_time = clock.event_time
        if p in event_times:
            event_time = event_times[p] if event_time is None else max(event_time, event_times[p])
        end, grew_at = clock.end_offset, clock.grew_at
        if end_offsets is not None and p in end_offsets:
            if end is not None and end_offsets[p] > end:  # a new message (a new partition starts at `now`)
                grew_at = now
            end = end_offsets[p]
        reached = max(clock.read_to, read_to.get(p, clock.read_to))
        idle = (end_offsets is not None and end is not None and reached >= end
                and now - grew_at >= idle_timeout_s)
        updated[p] = replace(clock, event_time=event_time, read_to=reached, end_offset=end, grew_at=grew_at,
                             idle=idle)
    return updated


def _counting(clocks: dict[int, PartitionClock]) -> list[PartitionClock]:
    """The partitions that hold the watermark: the active ones, or all of them when every one is idle."""
    active = [c for c in clocks.values() if not c.idle]
    return active if active else [c for c in clocks.values() if c.event_time is not None]


def job_watermark(clocks: dict[int, PartitionClock], previous: float | None, watermark_s: float) -> float | None:
    """The smallest event time of the partitions that count, minus `watermark_s`; never before `previous`.
    An active partition with no event time yet holds it where it is."""
    counting = _counting(clocks)
    if not counting or any(c.event_time is None for c in counting):
        return previous
    candidate = min(c.event_time for c in counting) - watermark_s
    return candidate if previous is None else max(previous, candidate)


def holding_back(clocks: dict[int, PartitionClock]) -> int | None:
    """The partition that holds the watermark back: an active one with no event time yet, else the one
    with the smallest event time among those that count."""
    counting = _counting(clocks)
    if not counting:
        return None
    waiting = [c.partition for c in counting if c.event_time is None]
    if waiting:
        return min(waiting)
    return min(counting, key=lambda c: (c.event_time, c.partition)).partition


def describe(clocks: dict[int, PartitionClock], show) -> str:
    """One line for the console: each partition's event time (`show` formats epoch seconds), which one
    holds the watermark back, which are idle."""
    held = holding_back(clocks)
    parts = []
    for p, clock in sorted(clocks.items()):
        when = "-" if clock.event_time is None else show(clock.event_time)
        mark = " idle" if clock.idle else " (holds the watermark)" if p == held and len(clocks) > 1 else ""
        parts.append(f"{p} {when}{mark}")
    return "; ".join(parts)


class IdlenessTicker:
    """A live job between batches: Kafka's end offsets, looked at every few seconds, make a partition that
    went quiet idle after --idle-timeout (or active again), and so move the watermark on without a batch.
    With no new data there would be no batch to notice that a partition has gone quiet."""

    def __init__(self, store, ends: KafkaEnds, idle_timeout_s: float, show) -> None:
        self.store, self.ends, self.idle_timeout_s, self.show = store, ends, idle_timeout_s, show
        self.every_s = min(5.0, max(0.5, idle_timeout_s / 4))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sfcrime-idleness", daemon=True)

    def start(self) -> "IdlenessTicker":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        import time

        lost = False
        while not self._stop.wait(self.every_s):
            ends = self.ends.read()
            if (ends is None) != lost:  # the health check says so (dashboard/health.py)
                lost = ends is None
                try:
                    self.store.set_meta(broker_lost_since=str(time.time()) if lost else "")
                except Exception:  # noqa: BLE001 - the store is closing
                    pass
            if ends is None:
                continue
            try:
                idle_before = {p for p, c in self.store.partition_clocks().items() if c.idle}
                before, after = self.store.observe_partitions(Observation(time.time(), self.idle_timeout_s,
                                                                          end_offsets=ends))
                idle_after = {p for p, c in self.store.partition_clocks().items() if c.idle}
            except Exception as error:  # noqa: BLE001 - the store is closing, or the disk is full: the batch says
                log.debug("idleness not looked at: %s", error)
                continue
            for p in sorted(idle_after - idle_before):
                log.info("partition %d is idle (nothing unread, no new message for %g s): it no longer holds the "
                         "watermark back", p, self.idle_timeout_s)
            for p in sorted(idle_before - idle_after):
                log.info("partition %d has new messages: it holds the watermark again", p)
            if after is not None and after != before:
                log.info("watermark %s (no batch: idle partitions)", self.show(after))


class KafkaEnds:
    """Kafka's end offset of every partition of the topic, asked from the driver (a batch, a tick); None
    when the broker does not answer: then no partition is taken for idle."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self._admin = None
        self._lock = threading.Lock()  # the batch sink and the idleness tick ask from different threads

    def read(self) -> dict[int, int] | None:
        from ..clients import open_admin

        with self._lock:
            try:
                if self._admin is None:
                    self._admin = open_admin(self.settings)
                return self._admin.end_offsets()
            except Exception as error:  # noqa: BLE001 - a broker away: idleness waits, the job goes on
                log.debug("end offsets not read: %s", str(error).splitlines()[0] if str(error) else error)
                return None

    def close(self) -> None:
        with self._lock:
            if self._admin is not None:
                self._admin.close()
                self._admin = None
