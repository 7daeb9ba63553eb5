"""/metrics: the job in Prometheus' text format, read from the results it writes at each scrape.

Names follow Prometheus' conventions: the `sfcrime_` prefix, base units (seconds, messages), `_total` on
counters, labels for dimensions (partition, reason), never a metric per value. prometheus_client writes
the format. Lag and event times are the job's last look at Kafka (each batch, and every few seconds while
a live job waits); `sfcrime_up` says whether they are current.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily

from ..errors import UserError
from ..results import ResultsPlace, ResultsReader, as_place
from .health import DEFAULT_STALL_AFTER_S, job_health

log = logging.getLogger(__name__)
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

    def __init__(self, place: ResultsPlace, stall_after_s: float = DEFAULT_STALL_AFTER_S) -> None:
        self.place, self.stall_after_s = place, stall_after_s

    def collect(self):
        now = time.time()
        health = job_health(self.place, self.stall_after_s, now)
        yield _gauge("sfcrime_up", "1 while the streaming job runs, else 0", 1.0 if health.status != "not running"
                     and health.status != "no results" else 0.0)
        yield _gauge("sfcrime_healthy", "1 while /healthz answers 200 (running, not stalled, broker answering)",
                     1.0 if health.healthy else 0.0)
        try:
            with self.place.open_reader() as results:
                yield from self._counters(results)
                yield from self._gauges(results, now)
                yield from self._partitions(results)
        except UserError:
            return  # no results yet: sfcrime_up says so
        except Exception as error:  # the backend's own errors: the scrape shows what it has
            log.debug("metrics: results not read: %s", error)

    @staticmethod
    def _counters(results: ResultsReader):
        yield _counter("sfcrime_calls_counted", "Calls counted, each crime_id once", results.total_calls())
        dead = CounterMetricFamily("sfcrime_dead_letters", "Malformed records set aside, by reason", labels=["reason"])
        for reason, n in results.malformed_reasons().items():
            dead.add_metric([reason], n)
        yield dead
        yield _counter("sfcrime_duplicates_dropped", "Messages dropped as a crime_id already counted",
                       results.duplicates())
        yield _counter("sfcrime_late_calls", "Calls counted into a window that was already final", results.late_calls())
        yield _counter("sfcrime_batches", "Micro-batches counted", results.batches())
        yield _counter("sfcrime_revised_windows", "Final windows a late call was counted into", results.revised_windows())
        lost = CounterMetricFamily("sfcrime_messages_lost", "Messages Kafka deleted before the job read them "
                                   "(--accept-data-loss): the answers are short of them", labels=["partition"])
        by_partition: dict[int, int] = {}
        for partition, _, _, n in results.data_loss():
            by_partition[partition] = by_partition.get(partition, 0) + n
        for partition, n in sorted(by_partition.items()):
            lost.add_metric([str(partition)], n)
        yield lost

    @staticmethod
    def _gauges(results: ResultsReader, now: float):
        last = results.last_progress()
        yield _gauge("sfcrime_last_batch_duration_seconds", "The last micro-batch's duration",
                     None if last is None or last[0] is None else last[0] / 1000)
        yield _gauge("sfcrime_last_batch_input_rows", "Messages the last micro-batch read", None if last is None else last[1])
        yield _gauge("sfcrime_last_batch_results_write_seconds", "The last micro-batch's write into the results "
                     "store, one transaction", None if last is None or last[2] is None else last[2] / 1000)
        written = results.last_written()
        yield _gauge("sfcrime_last_batch_timestamp_seconds", "When the last batch's results were committed", written)
        yield _gauge("sfcrime_seconds_since_last_batch", "Seconds since the last batch's results were committed",
                     None if written is None else max(0.0, now - written))
        watermark, newest = results.watermark(), results.meta().get("event_time_max")
        yield _gauge("sfcrime_watermark_timestamp_seconds", "The job's event-time watermark: windows ending by it "
                     "are final", watermark)
        yield _gauge("sfcrime_watermark_delay_seconds", "How far the watermark is behind the newest event time read",
                     None if watermark is None or newest is None else float(newest) - watermark)

    @staticmethod
    def _partitions(results: ResultsReader):
        lag = GaugeMetricFamily("sfcrime_consumer_lag_messages", "Messages in the partition the job has not read "
                                "(Kafka's end offset at the job's last look minus the offset read to)", labels=["partition"])
        event = GaugeMetricFamily("sfcrime_partition_event_time_seconds", "The partition's latest event time read",
                                  labels=["partition"])
        idle = GaugeMetricFamily("sfcrime_partition_idle", "1 when the partition is idle and does not hold the "
                                 "watermark back", labels=["partition"])
        for p, clock in sorted(results.clocks().items()):
            if clock.unread is not None:
                lag.add_metric([str(p)], clock.unread)
            if clock.event_time is not None:
                event.add_metric([str(p)], clock.event_time)
            idle.add_metric([str(p)], 1.0 if clock.idle else 0.0)
        yield from (lag, event, idle)


def exposition(place: ResultsPlace | str | Path, stall_after_s: float = DEFAULT_STALL_AFTER_S) -> bytes:
    """The text a scrape gets (CONTENT_TYPE_LATEST)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ResultsCollector(as_place(place), stall_after_s))
    return generate_latest(registry)
