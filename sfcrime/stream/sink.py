"""The query's sink (foreachBatch): each micro-batch counted in Python and added to the results exactly once.

Calls implausibly far ahead of the stream are set aside as dead letters (plausible_until); what each batch
read of each partition, and Kafka's end offsets, go with its counts (BatchObserver), for the watermark.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from pathlib import Path
from typing import Callable

from ..clients import read_messages
from ..errors import UserError
from ..kafka_settings import KafkaSettings
from ..results import ResultsStore
from ..results.rows import BatchCounts
from ..sf_time import local_time
from . import transforms as T
from .consumer_group import GroupCommitter
from .identity import batch_end_offsets, checkpoint_query_id
from .watermarks import KafkaEnds, Observation

log = logging.getLogger(__name__)


def plausible_until(panes: list[tuple[int, int]], front: float | None, max_ahead_s: int, pane_s: int,
                    now: float) -> int | None:
    """The start of the first pane whose calls are implausibly far ahead of the stream, or None.

    The rule (README, "Implausible event times"): start from the later of the stream's front (the latest
    plausible event time of earlier batches) and this batch's median event time; walk up this batch's
    panes in time order; the first pane more than `max_ahead_s` past everything accepted so far, or more
    than `max_ahead_s` past the wall clock, and every pane after it, are implausible. A long replay in one
    batch, or a stream that resumes after days, moves on in steps no larger than a pane and stays plausible;
    one call a year ahead is a jump, and would otherwise end every window.
    """
    if not panes:
        return None
    panes = sorted(panes)
    total, seen, median = sum(n for _, n in panes), 0, panes[-1][0]
    for start, n in panes:
        seen += n
        if 2 * seen >= total:
            median = start
            break
    reach = median + pane_s if front is None else max(front, median + pane_s)
    for start, _ in panes:
        if start > now + max_ahead_s or start > reach + max_ahead_s:
            return start
        reach = max(reach, start + pane_s)
    return None


# Spark tells a stop from a failure by matching this pattern against the error foreachBatch raised
# (StreamExecution.PROXY_ERROR), over the error's whole text with a regex that recurses once per character.
# A Spark job interrupted by the stop raised pages of Java trace here, and the match overflowed the stream
# thread's stack: hundreds of lines of java.lang.StackOverflowError under the job's resume line, after
# 2 of 11 Ctrl-Cs of a live job here. The batch is not committed either way, and runs again with the job.
STOPPED = ("py4j.protocol.Py4JJavaError: An error occurred while calling Spark in foreachBatch: "
           "java.lang.InterruptedException (the query was stopped)")


class BatchStopped(Exception):
    """The batch was cut short because the job stops the query: a short error Spark recognises as a stop."""


class BatchWriter:
    """foreachBatch: count one micro-batch and add it to the results, once per batch id."""

    def __init__(self, store: ResultsStore, pane_seconds: int, console_top: int, strict: bool, max_ahead_s: int = 86400,
                 identity: dict[str, str] | None = None, checkpoint: Path | None = None,
                 observe: Callable[[int], Observation] | None = None, console_every_s: float = 0.0) -> None:
        self.store, self.pane_seconds = store, pane_seconds
        self.console_every_s = console_every_s  # a new final window is printed at most this often
        self.observe = observe  # what the batch tells of the partitions: its end offsets, Kafka's, the time
        self.committer: GroupCommitter | None = None  # the batch's end offsets to a Kafka consumer group
        self.settings: KafkaSettings | None = None  # to read again the bytes of a call set aside here
        self.console_top, self.strict = console_top, strict
        self.max_ahead_s = max_ahead_s
        self.identity = dict(identity or {})
        self.checkpoint = checkpoint
        self.failure: str | None = None  # Spark wraps errors raised here in pages of Java: keep ours to report
        self._shown_final: int | None = None  # the console view's last final window, and when it was printed
        self._shown_at = float("-inf")
        self.stopping = False  # set by the job as it stops the query: no batch starts after that
        self._writing = threading.Condition()
        self._busy = False

    def __call__(self, batch, batch_id: int) -> None:
        with self._writing:
            if self.stopping:  # before a Spark job starts: nothing to cancel, and the batch runs again later
                raise BatchStopped(STOPPED)
            self._busy = True
        try:
            self.write(batch, batch_id)
        except Exception:
            if not self.stopping:
                raise
            raise BatchStopped(STOPPED) from None
        finally:
            with self._writing:
                self._busy = False
                self._writing.notify_all()

    def stop(self, wait_s: float) -> bool:
        """Start no more batches, and give the one being written up to `wait_s` to finish; False if it did not.

        Stopping the query cancels its Spark job, and each Python worker reading Kafka for it then died
        writing into a closed socket, with a traceback under the job's resume line (CI saw it, and 4 of
        36 Ctrl-Cs of a live job here). A batch takes a second or two; letting it finish is one less to redo."""
        with self._writing:
            self.stopping = True
            return self._writing.wait_for(lambda: not self._busy, wait_s)

    def write(self, batch, batch_id: int) -> None:
        # py4j holds a batch's Dataset (its plan, its broadcast blocks) until the Python proxies are freed, and
        # something PySpark builds per batch is freed only by a full collection. Left to Python's schedule,
        # past batches piled up in the JVM at ~50 MB a minute in the soak (README, "Soak"). Every batch, even
        # back to back: collecting every 5 s instead left the soak's live heap higher and less steady. It is cheap:
        # what the job made before its query started is frozen out of the collector (_run).
        started = time.perf_counter()
        gc.collect()
        collected = time.perf_counter()
        if self.checkpoint is not None and "query_id" not in self.identity:
            query_id = checkpoint_query_id(self.checkpoint)
            if query_id:
                self.identity["query_id"] = query_id
        # Always run the whole batch, even one already in the results (a re-run after a restart): its
        # stateful dedupe must commit every partition, or Spark fails the query
        # (STATE_STORE_COMMIT_VALIDATION_FAILED). write_batch then keeps it from being counted twice.
        counts, ahead_from = self.count(batch)
        if ahead_from is not None:
            log.warning("batch %d: calls from %s on are implausibly far ahead of the stream: dead letters",
                        batch_id, local_time(ahead_from, named=True))
        dead_letters = counts["dead_letters"]
        if dead_letters and self.strict:
            first = min(dead_letters, key=lambda r: (r["dl_partition"], r["dl_offset"]))
            self.failure = (f"malformed record at partition {first['dl_partition']} offset {first['dl_offset']}: "
                            f"{first['reason']} (--strict)")
            raise UserError(self.failure)
        counted = time.perf_counter()
        try:
            observation = self.observe(batch_id) if self.observe is not None else None
            written = self.store.write_batch(batch_id, counts, self.identity, observation)
            if self.committer is not None and observation is not None:
                self.committer.submit(observation.read_to)  # after the results: the group never runs ahead
        except UserError as error:
            self.failure = str(error)
            raise
        except Exception as error:
            if not self.store.database.disk_full(error):
                raise
            self.failure = (f"the disk under {self.store.where} is full ({error}): batch {batch_id} was not "
                            "counted, and nothing of it was written; free some space and start the job again with "
                            "the same --output: it counts on from that batch")
            raise UserError(self.failure) from None
        # Where addBatch's time goes on the Python side (-v); the Spark job is the `count` part.
        log.debug("batch %d sink: gc.collect %.0f ms, Spark job and transfer %.0f ms, results write %.0f ms",
                  batch_id, 1000 * (collected - started), 1000 * (counted - collected),
                  1000 * (time.perf_counter() - counted))
        if not written:
            log.info("batch %d is already in the results (a re-run after a restart): not counted again", batch_id)
        elif self.console_top and counts["crime_type_windows"]:
            self.print_windows()

    def count(self, batch) -> tuple[BatchCounts, int | None]:
        """The batch's counts, and where its implausible event times begin (or None).

        One Spark job per batch, which brings the batch's rows to Python (Arrow) to be counted there: a
        batch's fixed cost is what a live job's latency is made of (README, "Latency"), and a Spark
        aggregation costs a shuffle and a stage more. The panes the plausibility rule needs are the windows'
        counts summed over crime types; only when some calls are implausibly far ahead are the same rows
        counted again, with those calls set aside as dead letters."""
        table = batch.toArrow()
        counts = T.count_table(table)
        panes: dict[int, int] = {}
        for row in counts["crime_type_windows"]:
            panes[row["window_start"]] = panes.get(row["window_start"], 0) + row["count"]
        ahead_from = plausible_until(list(panes.items()), self.store.event_time_max(), self.max_ahead_s,
                                     self.pane_seconds, time.time())
        if ahead_from is not None:
            counts = T.count_table(table, ahead_from)
            self.keep_bytes(counts["dead_letters"])
        return counts, ahead_from

    def keep_bytes(self, dead_letters: list[dict]) -> None:
        """Spark kept the bytes of malformed records only; a call found implausibly far ahead here is a dead
        letter too, and keeps its key and value: read again from Kafka by offset (rare: a few calls ever)."""
        missing = [(r["dl_partition"], r["dl_offset"]) for r in dead_letters if r["value"] is None]
        if not missing or self.settings is None:
            return
        try:
            found = read_messages(self.settings, missing)
        except UserError as error:  # gone from the topic already (retention): the reason and place stay
            log.warning("the bytes of %d calls set aside could not be read again: %s", len(missing), error)
            return
        for row in dead_letters:
            row["key"], row["value"] = found.get((row["dl_partition"], row["dl_offset"]), (row["key"], row["value"]))

    def print_windows(self, every_s: float = 30.0) -> None:
        """The top crime types of the last final window and of the open one, labelled. Printed when a new
        window becomes final (at most every --console-every), else at most every `every_s`: a 1-second
        trigger, or a replay that ends a window a second, must not scroll the screen."""
        windows = self.store.top_windows(self.console_top, self.store.watermark())
        final = windows.get("final", (None, []))[0]
        now = time.monotonic()
        if now - self._shown_at < (every_s if final == self._shown_final else self.console_every_s):
            return
        self._shown_final, self._shown_at = final, now
        for label, (start, rows) in windows.items():
            what = "final" if label == "final" else "open, counts may still grow"
            print(f"top crime types, {label} window {local_time(start, named=True)} ({what}): "
                  + "; ".join(f"{name} {count:,}" for name, count in rows), flush=True)


class BatchObserver:
    """For each batch: where it reads each partition up to (the checkpoint's offset log) and Kafka's end
    offsets now, so the results store can tell which partitions are caught up and quiet (idle)."""

    def __init__(self, checkpoint_uri: str, spark, ends: KafkaEnds, idle_timeout_s: float) -> None:
        self.checkpoint_uri, self.spark, self.ends, self.idle_timeout_s = checkpoint_uri, spark, ends, idle_timeout_s

    def __call__(self, batch_id: int) -> Observation:
        read_to = batch_end_offsets(self.checkpoint_uri, batch_id, self.spark)
        return Observation(time.time(), self.idle_timeout_s, read_to, self.ends.read())
