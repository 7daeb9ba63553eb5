"""/metrics: the job in Prometheus' text format, read from the results it writes at each scrape.

Names follow Prometheus' conventions: the `sfcrime_` prefix, base units (seconds, messages), `_total` on
counters, labels for dimensions (partition, reason), never a metric per value. prometheus_client writes
the format. Lag and event times are the job's last look at Kafka (each batch, and every few seconds while
a live job waits); `sfcrime_up` says whether they are current.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily

from ..config import UserError
from ..results import connect, path_in, read_clocks, watermark_of
from .health import DEFAULT_STALL_AFTER_S, job_health

__all__ = ["CONTENT_TYPE_LATEST", "exposition"]


def _counter(name: str, doc: str, value: float, labels: dict[str, str] | None = None):
    family = CounterMetricFamily(name, doc, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


def _gauge(name: str, doc: str, value: float | None, unit: str = ""):
    family = GaugeMetricFamily(name, doc, unit=unit)
    if value is not None:
        family.add_metric([], value)
    return family


class ResultsCollector:
    """Collected at each scrape: the results change under a running job."""

    def __init__(self, output: str | Path, stall_after_s: float = DEFAULT_STALL_AFTER_S) -> None:
        self.output, self.stall_after_s = output, stall_after_s

    def collect(self):
        from ..report import revised_windows

        now = time.time()
        health = job_health(self.output, self.stall_after_s, now)
        yield _gauge("sfcrime_up", "1 while the streaming job runs, else 0", 1.0 if health.status != "not running"
                     and health.status != "no results" else 0.0)
        yield _gauge("sfcrime_healthy", "1 while /healthz answers 200 (running, not stalled, broker answering)",
                     1.0 if health.healthy else 0.0)
        try:
            with connect(path_in(self.output), readonly=True) as db:
                yield from self._from_results(db, now)
                yield _counter("sfcrime_revised_windows", "Final windows a late call was counted into",
                               revised_windows(db, dict(db.execute("SELECT key, value FROM meta"))))
        except (UserError, sqlite3.Error):
            return  # no results yet: sfcrime_up says so

    def _from_results(self, db: sqlite3.Connection, now: float):
        one = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
        meta = dict(db.execute("SELECT key, value FROM meta"))
        yield _counter("sfcrime_calls_counted", "Calls counted, each crime_id once",
                       one("SELECT COALESCE(SUM(count), 0) FROM locations"))
        dead = CounterMetricFamily("sfcrime_dead_letters", "Malformed records set aside, by reason", labels=["reason"])
        for reason, n in db.execute("SELECT reason, COUNT(*) FROM dead_letters GROUP BY reason ORDER BY reason"):
            dead.add_metric([reason], n)
        yield dead
        yield _counter("sfcrime_duplicates_dropped", "Messages dropped as a crime_id already counted",
                       one("SELECT COALESCE(SUM(duplicates), 0) FROM progress"))
        yield _counter("sfcrime_late_calls", "Calls counted into a window that was already final",
                       one("SELECT COALESCE(SUM(calls), 0) FROM revisions"))
        yield _counter("sfcrime_batches", "Micro-batches counted", one("SELECT COUNT(*) FROM batches"))
        lost = CounterMetricFamily("sfcrime_messages_lost", "Messages Kafka deleted before the job read them "
                                   "(--accept-data-loss): the answers are short of them", labels=["partition"])
        try:
            for partition, n in db.execute("SELECT partition, SUM(messages) FROM data_loss GROUP BY partition"):
                lost.add_metric([str(partition)], n)
        except sqlite3.OperationalError:  # results from before losses were recorded
            pass
        yield lost
        last = db.execute("SELECT duration_ms, input_rows FROM progress ORDER BY batch_id DESC LIMIT 1").fetchone()
        yield _gauge("sfcrime_last_batch_duration_seconds", "The last micro-batch's duration",
                     None if last is None or last[0] is None else last[0] / 1000)
        yield _gauge("sfcrime_last_batch_input_rows", "Messages the last micro-batch read", None if last is None else last[1])
        written = one("SELECT MAX(written_at) FROM batches")
        yield _gauge("sfcrime_last_batch_timestamp_seconds", "When the last batch's results were committed", written)
        yield _gauge("sfcrime_seconds_since_last_batch", "Seconds since the last batch's results were committed",
                     None if written is None else max(0.0, now - written))
        watermark, newest = watermark_of(meta), meta.get("event_time_max")
        yield _gauge("sfcrime_watermark_timestamp_seconds", "The job's event-time watermark: windows ending by it "
                     "are final", watermark)
        yield _gauge("sfcrime_watermark_delay_seconds", "How far the watermark is behind the newest event time read",
                     None if watermark is None or newest is None else float(newest) - watermark)
        clocks = read_clocks(db)
        lag = GaugeMetricFamily("sfcrime_consumer_lag_messages", "Messages in the partition the job has not read "
                                "(Kafka's end offset at the job's last look minus the offset read to)", labels=["partition"])
        event = GaugeMetricFamily("sfcrime_partition_event_time_seconds", "The partition's latest event time read",
                                  labels=["partition"])
        idle = GaugeMetricFamily("sfcrime_partition_idle", "1 when the partition is idle and does not hold the "
                                 "watermark back", labels=["partition"])
        for p, clock in sorted(clocks.items()):
            if clock.unread is not None:
                lag.add_metric([str(p)], clock.unread)
            if clock.event_time is not None:
                event.add_metric([str(p)], clock.event_time)
            idle.add_metric([str(p)], 1.0 if clock.idle else 0.0)
        yield from (lag, event, idle)


def exposition(output: str | Path, stall_after_s: float = DEFAULT_STALL_AFTER_S) -> bytes:
    """The text a scrape gets (CONTENT_TYPE_LATEST)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ResultsCollector(output, stall_after_s))
    return generate_latest(registry)
