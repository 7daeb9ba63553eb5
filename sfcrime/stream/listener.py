"""The query's progress listener: one line per micro-batch on the console, kept in the results too, and a
heartbeat while the topic has nothing new."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from datetime import datetime

from pyspark.sql.streaming import StreamingQueryListener

from ..results.rows import ProgressRow
from ..sf_time import local_time
from .watermarks import describe

log = logging.getLogger(__name__)


def clock() -> str:
    return datetime.now().astimezone().strftime("%H:%M:%S %Z")


def duplicates_of(progress) -> int:
    """Messages the dedupe dropped as a crime_id already counted (Spark's numDroppedDuplicateRows)."""
    total = 0
    for op in progress.stateOperators:
        try:
            total += int((op.customMetrics or {}).get("numDroppedDuplicateRows", 0))
        except (TypeError, ValueError, AttributeError):
            pass
    return total


def durations_of(progress, write_ms: float | None = None) -> str | None:
    """Spark's own breakdown of the batch's time (durationMs: latestOffset, queryPlanning, addBatch,
    walCommit, commitOffsets, ...) as JSON: where a micro-batch's fixed cost goes (README, "Latency").
    With `write_ms`, the results store's share of addBatch too, as "resultsWrite"."""
    try:
        durations = {k: int(v) for k, v in dict(progress.durationMs or {}).items()}
    except (TypeError, ValueError, AttributeError):
        return None
    if write_ms is not None:
        durations["resultsWrite"] = write_ms
    return json.dumps(durations, sort_keys=True)


def input_rate(progress) -> float | None:
    """Rows in per second. Spark's inputRowsPerSecond divides by the time since the batch before, so a run's
    first batch says 0 however many rows it read: it gets its rows over its own duration instead."""
    rate = progress.inputRowsPerSecond
    if (not rate or rate != rate) and progress.numInputRows and progress.batchDuration:  # 0, None or NaN
        return progress.numInputRows * 1000 / progress.batchDuration
    return rate


def progress_row(progress, backlog: int | None, watermark_s: float | None = None,
                 write_ms: float | None = None) -> ProgressRow:
    """A StreamingQueryProgress as a row of the results' progress table."""
    return ProgressRow(progress.batchId, progress.timestamp, progress.numInputRows, input_rate(progress),
                       progress.processedRowsPerSecond, progress.batchDuration, watermark_s,
                       sum(op.numRowsTotal for op in progress.stateOperators), backlog, duplicates_of(progress),
                       durations_of(progress, write_ms))


def backlog_of(progress) -> int | None:
    """Latest offsets in the topic minus offsets processed, from the source's progress."""
    try:
        source = progress.sources[0]
        latest, end = json.loads(source.latestOffset or "null"), json.loads(source.endOffset or "null")
    except (IndexError, ValueError, TypeError):
        return None
    if not isinstance(latest, dict) or not isinstance(end, dict):
        return None
    if latest and isinstance(next(iter(latest.values())), dict):  # Spark's connector: {topic: {partition: n}}
        latest, end = next(iter(latest.values())), next(iter(end.values()), {})
    return sum(max(0, int(v) - int(end.get(k, 0))) for k, v in latest.items())


class ProgressReporter(StreamingQueryListener):
    """The course project's progress reporter: a line per micro-batch, at most one every `every_s` (each
    batch is kept in the results), and a heartbeat while the topic has nothing new."""

    def __init__(self, store, topic: str, heartbeat_s: float = 60.0, every_s: float = 0.0) -> None:
        self.store, self.topic, self.heartbeat_s, self.every_s = store, topic, heartbeat_s, every_s
        self.last_batch = -1  # the last batch kept (its line printed or held): run() waits for it before its last line
        self._quiet = False  # after run()'s last line: batches still go to the results, not to the console
        self._printing = threading.Lock()
        self._last_line = time.monotonic()
        self._held: str | None = None  # the latest batch line not printed yet, for want of every_s
        self._batch_line_at = float("-inf")  # when a batch line was last printed: the run's first always is

    def onQueryStarted(self, event) -> None:
        log.info("query started: id %s run %s", event.id, event.runId)

    def onQueryProgress(self, event) -> None:
        progress = event.progress
        backlog = backlog_of(progress)
        watermark = self.store.watermark()
        row = progress_row(progress, backlog, watermark, self.store.write_ms(progress.batchId))
        self.store.write_progress(row)
        shown = "- (no calls yet)" if watermark is None else local_time(watermark, named=True)
        clocks = self.store.partition_clocks()
        line = (f"batch {progress.batchId}: {progress.numInputRows:,} rows, "
                f"{row.input_rps or 0:,.0f} in/s, {progress.processedRowsPerSecond or 0:,.0f} processed/s, "
                f"{(progress.batchDuration or 0) / 1000:.2f} s, watermark {shown}, duplicates {row.duplicates:,}, "
                f"state {row.state_rows:,} keys, backlog {'-' if backlog is None else f'{backlog:,}'}"
                + (f"; event time by partition: {describe(clocks, lambda t: local_time(t)[5:])}" if clocks else ""))
        with self._printing:
            self._held, self.last_batch = line, progress.batchId
            if time.monotonic() - self._batch_line_at >= self.every_s:
                self._print_held()
        self._last_line = time.monotonic()

    def onQueryIdle(self, event) -> None:
        now = time.monotonic()
        with self._printing:  # the traffic stopped: its last batch line, if it was held back
            if now - self._batch_line_at >= self.every_s:
                self._print_held()
        if now - self._last_line >= self.heartbeat_s:
            self._last_line = now
            batch = self.last_batch
            self._say(f"{clock()} waiting for new calls in topic {self.topic!r} "
                      f"({f'last batch {batch}' if batch >= 0 else 'no batch yet in this run'})")

    def onQueryTerminated(self, event) -> None:
        pass  # run() reports how the query ended, in one line

    def say_last(self, line: str) -> None:
        """Print run()'s last line: no batch line may come after it, though Spark calls us from its own thread."""
        with self._printing:
            self._print_held()
            self._quiet = True
            print(line, file=sys.stderr, flush=True)

    def flush(self) -> None:
        """The batch line held back, if any: the console's last batch line is the job's last batch."""
        with self._printing:
            self._print_held()

    def _print_held(self) -> None:  # holding self._printing
        if self._held is not None and not self._quiet:
            print(self._held, file=sys.stderr, flush=True)
            self._batch_line_at = time.monotonic()
        self._held = None

    def say(self, line: str) -> None:
        """A line of the job's own beside the batch lines (none after the last line)."""
        self._say(line)

    def _say(self, line: str) -> None:
        with self._printing:
            if not self._quiet:
                print(line, file=sys.stderr, flush=True)


def catch_up(listener: ProgressReporter, query, seconds: float = 5.0) -> None:
    """Wait until the listener, which Spark calls asynchronously, has kept the query's last batch; print its line."""
    last = query.lastProgress
    last_id = None if last is None else last["batchId"] if isinstance(last, dict) else last.batchId
    deadline = time.monotonic() + seconds
    while last_id is not None and listener.last_batch < last_id and time.monotonic() < deadline:
        time.sleep(0.05)
    listener.flush()
