"""Replay the calls into Kafka: event-time order, paced (max speed, a fixed rate or a speedup of event time).

Value = the source record as compact UTF-8 JSON, key = crime_id, acks=all. Every message is accounted for:
delivered, failed (with the broker's reason) or never handed over because the replay was interrupted.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from .clients import (DeliveryReport, Producer, check_reachable, ensure_topic, open_admin, open_consumer,
                      open_producer, read_columns, recreate_topic)
from .errors import TopicMissing, UserError
from .kafka_settings import KafkaSettings
from .dataset import Calls
from .progress import Progress

log = logging.getLogger(__name__)


@dataclass
class Pacing:
    """At most one of rate (messages/s) or speedup (event time / wall time); neither means max speed."""

    rate: float | None = None
    speedup: float | None = None

    def describe(self) -> str:
        if self.rate:
            return f"{self.rate:g} msg/s"
        if self.speedup:
            return f"{self.speedup:g}x event time"
        return "max speed"


class Pacer:
    """Sleeps just enough to keep the schedule; never sleeps at max speed."""

    def __init__(self, pacing: Pacing, sleep=time.sleep, clock=time.monotonic) -> None:
        self.pacing, self._sleep, self._clock = pacing, sleep, clock
        self._start: float | None = None
        self._first_event: float | None = None

    def wait(self, index: int, event_time: float) -> None:
        pacing = self.pacing
        if not pacing.rate and not pacing.speedup:
            return
        now = self._clock()
        if self._start is None:
            self._start = now
        if pacing.rate:
            due = self._start + index / pacing.rate
        else:
            if math.isnan(event_time):
                return
            if self._first_event is None:
                self._first_event = event_time
            due = self._start + max(0.0, event_time - self._first_event) / pacing.speedup
        if due > now:
            self._sleep(due - now)


def about(seconds: float) -> str:
    """A duration for people: `45 s`, `31 minutes`, `2.5 hours`, `90 days`."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} minutes"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 86400:.0f} days"


def replay_plan(calls: Calls, pacing: Pacing) -> str | None:
    """How long a paced replay will take, said before it starts (`--speedup 3600` on the whole file takes
    half an hour, which nothing said); None at max speed."""
    if pacing.rate:
        return f"replaying {len(calls):,} calls at {pacing.rate:g} a second: about {about(len(calls) / pacing.rate)}"
    if not pacing.speedup:
        return None
    times = [t for t in (calls.event_times[i] for i in calls.order) if not math.isnan(t)]
    span = max(times) - min(times) if times else 0.0
    return (f"replaying {about(span)} of calls at {pacing.speedup:g}x event time: about "
            f"{about(span / pacing.speedup)}")


@dataclass
class ReplaySummary:
    total: int
    handed: int = 0
    delivered: int = 0
    failed: int = 0
    unacknowledged: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    errors: dict[str, int] = field(default_factory=dict)
    failed_keys: list[bytes] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.interrupted and self.failed == 0 and self.unacknowledged == 0 and self.delivered == self.total

    def lines(self, skip: int = 0, continued: bool = False) -> list[str]:
        rate = self.delivered / self.seconds if self.seconds else 0.0
        out = [f"sent {self.delivered:,} of {self.total:,} calls, failed {self.failed:,}, "
               f"unacknowledged {self.unacknowledged:,}, {self.seconds:.2f} s, {rate:,.0f} messages/s"]
        for reason, count in sorted(self.errors.items(), key=lambda kv: -kv[1]):
            out.append(f"  {count:,} failed: {reason}")
        if self.failed_keys:
            out.append("  first failed crime_ids: " + ", ".join(k.decode(errors="replace") for k in self.failed_keys))
        if self.interrupted:
            resume = "--continue" if continued else f"--skip {skip + self.handed}"
            out.append(f"interrupted after handing over {self.handed:,} calls; resume with {resume}")
        return out


def messages_in(settings: KafkaSettings) -> int:
    """How many messages the topic holds now: end minus beginning offsets, over its partitions."""
    with open_admin(settings) as admin:
        ends, beginnings = admin.end_offsets(), admin.beginning_offsets()
    return sum(max(0, end - beginnings.get(p, 0)) for p, end in ends.items())


@dataclass
class Continuation:
    """What --continue found in the topic: the calls of the file it holds, and messages that are not."""

    held: int
    foreign: int
    left: int

    def line(self, total: int) -> str:
        foreign = f" (and {self.foreign:,} messages that are not calls of the file)" if self.foreign else ""
        if not self.left:
            return f"the topic holds all {total:,} calls of the file{foreign}: nothing to send"
        return f"the topic holds {self.held:,} of the file's {total:,} calls{foreign}: sending the other {self.left:,}"


def keep_unsent(calls: Calls, settings: KafkaSettings, progress: bool = True) -> Continuation:
    """--continue: leave in `calls` (in their order) only those the topic does not hold yet.

    Read by assignment up to the end offsets now and matched as --verify matches, byte for byte and as
    often as the file has each (the file repeats 4 calls): a call is left out once for each time the topic
    holds it. The file's values are the dictionary, so the topic's are never kept in memory.
    """
    in_file = {calls.values[i]: 0 for i in calls.order}
    foreign = 0
    with open_consumer(settings) as consumer:
        try:
            partitions = consumer.partitions()
        except TopicMissing:
            partitions = []  # nothing sent yet: every call is left
        start, end = consumer.beginning_offsets(partitions), consumer.end_offsets(partitions)
        with Progress("reading the topic", sum(end[p] - start[p] for p in partitions), enabled=progress) as bar:
            for columns in read_columns(consumer, start, end, on_batch=bar.advance, keys_and_times=False):
                for value in columns.values:
                    if value in in_file:
                        in_file[value] += 1
                    else:
                        foreign += 1
    total, left = len(calls), []
    for i in calls.order:
        if in_file[calls.values[i]]:
            in_file[calls.values[i]] -= 1
        else:
            left.append(i)
    calls.order = left
    return Continuation(held=total - len(left), foreign=foreign, left=len(left))


def replay_note(event_time: float, last_event: float | None, pacing: Pacing) -> str | None:
    """Where a paced replay is in event time and, with --speedup, how long it has left."""
    if not (pacing.rate or pacing.speedup) or math.isnan(event_time):
        return None
    from .sf_time import local_time

    note = f"at {local_time(event_time, named=True)}"
    if pacing.speedup and last_event is not None and not math.isnan(last_event):
        note += f", {about(max(0.0, last_event - event_time) / pacing.speedup)} left"
    return note


def replay(calls: Calls, settings: KafkaSettings, pacing: Pacing, partitions: int = 3,
           progress: bool = True, flush_timeout_s: float = 60.0, append: bool = False,
           recreate: bool = False) -> ReplaySummary:
    """Send every call once, in order; on Ctrl-C stop handing over, flush what was sent and report it.

    `calls` is spent afterwards: each call is let go of once the producer holds it (Calls.drain).

    A topic that already holds messages is refused unless `append` (add to it) or `recreate` (delete it and
    send into a new, empty one): a second replay would silently double every call (the job counts each
    once, but `--verify` and anyone else reading the topic would not).
    """
    existed = not append and settings.topic in check_reachable(settings)
    held = messages_in(settings) if existed else 0
    if held and recreate:
        recreate_topic(settings, partitions)
        log.warning("deleted topic %s (it held %s messages) and created it anew", settings.topic, f"{held:,}")
    elif held:
        raise UserError(f"topic {settings.topic!r} already holds {held:,} messages: sending the calls again would "
                        "duplicate them; pass --append to add them anyway, or --recreate to delete the topic and "
                        "send them into a new one")
    ensure_topic(settings, partitions)
    report = DeliveryReport()
    summary = ReplaySummary(total=len(calls))
    with open_producer(settings, report) as producer:
        log.info("replaying %s calls to %s at %s", f"{len(calls):,}", settings.describe(), pacing.describe())
        plan = replay_plan(calls, pacing)
        if plan and progress:
            print(plan, file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            _send_all(producer, calls, pacing, summary, progress)
        except KeyboardInterrupt:
            summary.interrupted = True
            log.warning("interrupted: flushing the %s calls handed over so far", f"{summary.handed:,}")
        finally:
            summary.unacknowledged = producer.flush(flush_timeout_s)
    summary.seconds = time.monotonic() - started
    summary.delivered, summary.failed = report.delivered, report.failed
    summary.errors, summary.failed_keys = report.errors, report.failed_keys
    return summary


class _CtrlC:
    """Ctrl-C between two calls, never between handing one over and counting it.

    Python raises KeyboardInterrupt at any bytecode: right after the client took a call but before
    `handed` counted it, the summary said "resume with --skip 324" for 325 calls in the topic, and the
    resumed replay sent one call twice. Inside `sending` a Ctrl-C is only noted and raised after the count.
    """

    def __init__(self) -> None:
        self.sending = False
        self.pending = False

    def __call__(self, signum, frame) -> None:
        if self.sending and not self.pending:
            self.pending = True  # a second Ctrl-C stops at once (a send blocked on a full queue)
        else:
            raise KeyboardInterrupt

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield  # only the main thread gets signals; a replay in a thread is stopped by its caller
            return
        previous = signal.signal(signal.SIGINT, self)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


def _send_all(producer: Producer, calls: Calls, pacing: Pacing, summary: ReplaySummary, progress: bool) -> None:
    """Hand every call to the producer on the pacing's schedule, counting in `summary.handed`."""
    pacer = Pacer(pacing)
    last_event = max((t for t in calls.event_times if not math.isnan(t)), default=math.nan) if pacing.speedup else None
    ctrl_c = _CtrlC()
    with ctrl_c.installed(), Progress("sending", len(calls), enabled=progress) as bar:
        send, poll, advance = producer.send, producer.poll, bar.advance
        step = 1000 if not (pacing.rate or pacing.speedup) else 100  # paced: a bar that moves
        for index, (key, value, event_time) in enumerate(calls.drain()):
            pacer.wait(index, event_time)
            ctrl_c.sending = True
            send(key, value)
            summary.handed += 1
            ctrl_c.sending = False
            if ctrl_c.pending:
                raise KeyboardInterrupt
            if summary.handed % step == 0:
                poll()
                advance(step, replay_note(event_time, last_event, pacing))
        advance(summary.handed % step)
