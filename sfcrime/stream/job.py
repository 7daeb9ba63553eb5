"""The streaming job's wiring: Spark session, Kafka source, the query, its sink and progress listener.

Plan: source -> parse_calls (strict JSON) -> dedupe by crime_id for good (malformed records pass through
keyed by their offset) -> dispositions described -> each message's pane, hour and day -> foreachBatch: the
batch's rows counted in Python, implausible event times set aside, the counts added to the SQLite results
(exactly once per batch id, with the job's own event-time watermark), malformed records to the dead
letters. No Spark watermark: nothing is dropped for being late.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import signal
import sqlite3
import sys
import threading
import time
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Callable

from pyspark.errors import StreamingQueryException
from pyspark.sql.streaming import StreamingQueryListener

from ..clients import any_port_open, check_reachable, java_client_config, open_consumer, read_messages
from ..config import KafkaSettings, UserError
from ..dataset import load_radio_codes
from ..local.jars import connector_jar_paths, json_check_jar_paths
from ..report import local_time
from ..results import OutputLock, ResultStore, identity_clash, path_in
from . import transforms as T
from .identity import (batch_end_offsets, checkpoint_damage, checkpoint_offsets, checkpoint_query_id, describe_losses,
                       offsets_gone_back, resume_point, retention_losses, start_over, topic_identity)
from .options import StreamOptions, duration_seconds
from .session import build_session
from .source import NAME as PYTHON_SOURCE_NAME
from .source import KafkaDataSource
from .consumer_group import GroupCommitter, check_group_free
from .watermarks import IdlenessTicker, KafkaEnds, Observation, describe

log = logging.getLogger(__name__)
KAFKA_PROVIDER_CLASS = "org.apache.spark.sql.kafka010.KafkaSourceProvider"


# The job's Spark settings where spark-submit sets none (--spark-conf wins over them).
SPARK_DEFAULTS = {
    # Spark's 200 cost 5x the time; each is a dedupe state store to load and commit every batch, so fewer make
    # each batch cheaper (2 against 4: batch p50 4.8 s against 6.1 s live, README "Latency"). A checkpoint keeps
    # the number it was made with. On a cluster: about the executors' cores.
    "spark.sql.shuffle.partitions": "2",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.streaming.noDataMicroBatches.enabled": "true",
    "spark.python.worker.reuse": "true",
    "spark.sql.adaptive.enabled": "false",  # stateful streaming ignores it; quieter logs
    "spark.sql.streaming.stopTimeout": "30s",  # a source stuck on a lost broker must not hold Ctrl-C for ever
    # The dedupe keeps a key per call for ever: in RocksDB (native memory and local disk, changelog checkpoints:
    # each batch uploads only the keys it added) rather than in the JVM heap, where the default store keeps
    # every key and writes them out again in snapshots. Live at 2,000 calls/s, side by side: latency p50
    # 1.38 s against 1.65 s (README "Latency"). A checkpoint keeps the store it was made with.
    "spark.sql.streaming.stateStore.providerClass":
        "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
    "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
    # Spark's own metrics for Prometheus on the driver's UI (README, "Operating it"): executors at
    # /metrics/executors/prometheus, the driver and the streaming query (input and processed rates, latency,
    # state rows) at /metrics/prometheus/.
    "spark.ui.prometheus.enabled": "true",
    "spark.sql.streaming.metricsEnabled": "true",
    "spark.metrics.conf.*.sink.prometheusServlet.class": "org.apache.spark.metrics.sink.PrometheusServlet",
    "spark.metrics.conf.*.sink.prometheusServlet.path": "/metrics/prometheus",
}


def start_spark(options: StreamOptions):
    """The job's session; a setting Spark refuses (--spark-conf, --master) is one line. When the JVM itself
    exits, it has printed its reason just above."""
    jars = (connector_jar_paths() if options.source == "kafka" else []) + json_check_jar_paths()
    master = options.master or ""
    if master.startswith("spark://") and not any_port_open(master.removeprefix("spark://")):
        # Spark itself tries for a minute, then says only that its context was stopped
        raise UserError(f"no Spark master answers at {master} (start one with `python -m sfcrime spark-cluster`)")
    try:
        spark = build_session("sfcrime-stream", options.master, SPARK_DEFAULTS, options.spark_conf, options.timezone,
                              jars or None)
        spark.conf.get("spark.sql.session.timeZone")  # makes the session state now: its settings fail here, if at all
        return spark
    except UserError:  # ours already (no Java, say): as it is
        raise
    except Exception as error:
        raise UserError(f"Spark did not start: {first_line(error)}") from None


def ship_package(spark, output: Path) -> None:
    """Executors import sfcrime (the source's read() runs there): ship it, for clusters without our venv."""
    package = Path(__file__).resolve().parent.parent
    archive = output / "sfcrime-package.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in package.rglob("*.py"):
            zf.write(path, path.relative_to(package.parent))
    spark.sparkContext.addPyFile(str(archive))


def connector_available(spark) -> bool:
    """Asks Spark's own class loader: the connector's jars (spark.jars, --packages) are there, not in py4j's."""
    return bool(spark._jvm.org.apache.spark.util.Utils.classIsLoadable(KAFKA_PROVIDER_CLASS))


def require_connector(spark) -> None:
    """The classic "Failed to find data source: kafka", as one line that names the fix."""
    if not connector_available(spark):
        from ..local.jars import connector_coordinate

        raise UserError("Spark's Kafka connector is not on the classpath: run `make setup`, or "
                        f"spark-submit --packages {connector_coordinate()} data_stream.py; or use --source python")


def open_source(spark, options: StreamOptions, settings: KafkaSettings, skip_lost: bool = False):
    """Spark's Kafka connector (the default), or ours on the Python Data Source API: the same options.
    `skip_lost`: messages deleted before they were read are skipped (the loss is recorded: check_retention)."""
    source_options = {
        "kafka.bootstrap.servers": settings.bootstrap_servers,
        "subscribe": settings.topic,
        "startingOffsets": options.starting_offsets,
        "failOnDataLoss": "false" if skip_lost else "true",
    }
    if options.max_offsets_per_trigger:
        source_options["maxOffsetsPerTrigger"] = str(options.max_offsets_per_trigger)
    if options.source == "kafka":
        source_options.update({f"kafka.{k}": v for k, v in java_client_config(settings.properties).items()})
        fmt = "kafka"  # _run has made sure the connector is there (require_connector)
    else:
        source_options.update({f"kafka.{k}": v for k, v in settings.properties.items()})
        spark.dataSource.register(KafkaDataSource)
        fmt = PYTHON_SOURCE_NAME
        source_options["timeout"] = str(settings.timeout_s)
    log.info("Kafka source: %s (%s)", "Spark's connector" if fmt == "kafka" else "Python Data Source", settings.describe())
    reader = spark.readStream.format(fmt)
    for key, value in source_options.items():
        reader = reader.option(key, value)
    return reader.load()


def warm_python_workers(spark) -> threading.Thread:
    """Start the executors' Python workers, with pandas, pyarrow and the JSON check loaded, while the driver
    plans the query: when the JSON check runs in them, the first batch's tasks otherwise wait for them (about
    4 s of a --once replay here). Workers are reused (spark.python.worker.reuse), so the first batch gets these."""
    from pyspark.sql import functions as F

    def run() -> None:
        try:
            slots = spark.sparkContext.defaultParallelism
            probe = spark.range(0, slots, 1, slots).select(T.strict_json_reason(F.lit(b"{}")).alias("reason"))
            probe.write.format("noop").mode("overwrite").save()
        except Exception as error:  # only a head start: the query starts its workers itself if this fails
            log.debug("warming the Python workers failed: %s", first_line(error))

    thread = threading.Thread(target=run, name="warm-python-workers", daemon=True)
    thread.start()
    return thread


def build_stream(raw, descriptions: dict[str, str | None], pane_seconds: int, jvm_json_check: bool | None = None):
    """The streaming plan: every message comes out once, as a call to count or as a malformed record;
    a call sent again, however much later, comes out once. Each batch's rows are what count_table needs."""
    calls = T.parse_calls(raw, jvm_json_check)
    return T.count_columns(T.with_descriptions(T.dedupe_calls(calls), descriptions), pane_seconds)


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


class BatchWriter:
    """foreachBatch: count one micro-batch and add it to the results, once per batch id."""

    def __init__(self, store, pane_seconds: int, console_top: int, strict: bool, max_ahead_s: int = 86400,
                 identity: dict[str, str] | None = None, checkpoint: Path | None = None,
                 observe: Callable[[int], Observation] | None = None) -> None:
        self.store, self.pane_seconds = store, pane_seconds
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

    def __call__(self, batch, batch_id: int) -> None:
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
        except sqlite3.OperationalError as error:
            if "full" not in str(error):
                raise
            self.failure = (f"the disk under {self.store.path.parent} is full ({error}): batch {batch_id} was not "
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

    def count(self, batch) -> tuple[dict[str, list[dict]], int | None]:
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
        window becomes final, else at most every `every_s`: a 1-second trigger must not scroll the screen."""
        windows = self.store.top_windows(self.console_top, self.store.watermark())
        final = windows.get("final", (None, []))[0]
        now = time.monotonic()
        if final == self._shown_final and now - self._shown_at < every_s:
            return
        self._shown_final, self._shown_at = final, now
        for label, (start, rows) in windows.items():
            what = "final" if label == "final" else "open, counts may still grow"
            print(f"top crime types, {label} window {local_time(start, named=True)} ({what}): "
                  + "; ".join(f"{name} {count:,}" for name, count in rows), flush=True)


def duplicates_of(progress) -> int:
    """Messages the dedupe dropped as a crime_id already counted (Spark's numDroppedDuplicateRows)."""
    total = 0
    for op in progress.stateOperators:
        try:
            total += int((op.customMetrics or {}).get("numDroppedDuplicateRows", 0))
        except (TypeError, ValueError, AttributeError):
            pass
    return total


def durations_of(progress) -> str | None:
    """Spark's own breakdown of the batch's time (durationMs: latestOffset, queryPlanning, addBatch,
    walCommit, commitOffsets, ...) as JSON: where a micro-batch's fixed cost goes (README, "Latency")."""
    try:
        return json.dumps({k: int(v) for k, v in dict(progress.durationMs or {}).items()}, sort_keys=True)
    except (TypeError, ValueError, AttributeError):
        return None


def progress_row(progress, backlog: int | None, watermark_s: float | None = None) -> tuple:
    """A StreamingQueryProgress as a row of the results' progress table. late_rows is always 0: nothing is
    dropped for being late any more (late calls are counted; results.revisions says where)."""
    state_rows = sum(op.numRowsTotal for op in progress.stateOperators)
    return (progress.batchId, progress.timestamp, progress.numInputRows, progress.inputRowsPerSecond,
            progress.processedRowsPerSecond, progress.batchDuration, watermark_s, 0, state_rows, backlog,
            duplicates_of(progress), durations_of(progress))


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


class BatchObserver:
    """For each batch: where it reads each partition up to (the checkpoint's offset log) and Kafka's end
    offsets now, so the results store can tell which partitions are caught up and quiet (idle)."""

    def __init__(self, checkpoint_uri: str, spark, ends: KafkaEnds, idle_timeout_s: float) -> None:
        self.checkpoint_uri, self.spark, self.ends, self.idle_timeout_s = checkpoint_uri, spark, ends, idle_timeout_s

    def __call__(self, batch_id: int) -> Observation:
        read_to = batch_end_offsets(self.checkpoint_uri, batch_id, self.spark)
        return Observation(time.time(), self.idle_timeout_s, read_to, self.ends.read())


class ProgressReporter(StreamingQueryListener):
    """The course project's progress reporter: one line per micro-batch, also kept in the results, and a
    heartbeat while the topic has nothing new."""

    def __init__(self, store, topic: str, heartbeat_s: float = 60.0) -> None:
        self.store, self.topic, self.heartbeat_s = store, topic, heartbeat_s
        self.last_batch = -1  # the last batch whose line was printed: run() waits for it before its own last line
        self._quiet = False  # after run()'s last line: batches still go to the results, not to the console
        self._printing = threading.Lock()
        self._last_line = time.monotonic()

    def onQueryStarted(self, event) -> None:
        log.info("query started: id %s run %s", event.id, event.runId)

    def onQueryProgress(self, event) -> None:
        progress = event.progress
        backlog = backlog_of(progress)
        watermark = self.store.watermark()
        row = progress_row(progress, backlog, watermark)
        self.store.write_progress(row)
        shown = "- (no calls yet)" if watermark is None else local_time(watermark, named=True)
        clocks = self.store.partition_clocks()
        self._say(f"batch {progress.batchId}: {progress.numInputRows:,} rows, "
                  f"{progress.inputRowsPerSecond or 0:,.0f} in/s, {progress.processedRowsPerSecond or 0:,.0f} processed/s, "
                  f"{(progress.batchDuration or 0) / 1000:.2f} s, watermark {shown}, duplicates {row[10]:,}, "
                  f"state {row[8]:,} keys, backlog {'-' if backlog is None else f'{backlog:,}'}"
                  + (f"; event time by partition: {describe(clocks, lambda t: local_time(t)[5:])}" if clocks else ""))
        self.last_batch, self._last_line = progress.batchId, time.monotonic()

    def onQueryIdle(self, event) -> None:
        now = time.monotonic()
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
            self._quiet = True
            print(line, file=sys.stderr, flush=True)

    def say(self, line: str) -> None:
        """A line of the job's own beside the batch lines (none after the last line)."""
        self._say(line)

    def _say(self, line: str) -> None:
        with self._printing:
            if not self._quiet:
                print(line, file=sys.stderr, flush=True)


def first_line(error) -> str:
    """Spark's query errors carry the whole logical plan after the message: keep the message, and the
    first line of the root cause when there is one ("Exception thrown in awaitResult:" alone says nothing)."""
    java = getattr(error, "java_exception", None)  # py4j's own error: "An error occurred while calling o326.start."
    text = str(java.toString() if java is not None else error).strip()
    line = text.splitlines()[0].strip() if text else repr(error)
    root, seen = error, 0
    while getattr(root, "_cause", None) is not None and seen < 20:  # pyspark's captured cause chain
        root, seen = root._cause, seen + 1
    root_text = str(getattr(root, "_desc", "") or "").strip() if root is not error else ""
    root_line = root_text.splitlines()[0].strip() if root_text else ""
    if root_line and root_line not in line:
        line = f"{line.rstrip(': ')}: {root_line}"
    return line[:500]


def check_results_belong(store, checkpoint: Path, identity: dict[str, str], settings) -> None:
    """Results are added to only by the query, topic and broker they were made from: one line otherwise.

    The query is its checkpoint's id: a new checkpoint numbers its batches from 0 again, and every batch id
    the results already hold would be skipped. The topic is its id where the broker has topic ids, and
    otherwise its offsets: a partition ending before what the checkpoint has read was recreated.
    """
    meta, where = store.meta(), store.path.parent
    hint = "pass --start-over to discard the results and the checkpoint, or use another --output"
    damage = checkpoint_damage(checkpoint)
    if damage:
        raise UserError(f"the checkpoint is damaged: {damage}; resuming from it could count from a wrong place: "
                        f"restore {checkpoint} from a copy, or pass --start-over to count from the beginning "
                        "(the results go too)")
    query_id = checkpoint_query_id(checkpoint)
    if store.has_batches():
        if query_id is None:
            raise UserError(f"{where} holds results, but the checkpoint {checkpoint} is new or empty: its batch "
                            f"ids would start again at 0 and be skipped as counted; {hint}")
        if meta.get("query_id", query_id) != query_id:
            raise UserError(f"{where} holds results of query {meta['query_id']}, but the checkpoint {checkpoint} "
                            f"is query {query_id}; {hint}")
    elif any((checkpoint / "commits").glob("[0-9]*")):
        raise UserError(f"the checkpoint {checkpoint} has counted batches that the results in {where} do not "
                        f"hold (results deleted?): resuming would skip them; {hint}")
    planned = [int(p.name) for p in (checkpoint / "offsets").glob("[0-9]*") if p.name.isdigit()]
    counted = store.last_batch()
    if counted is not None and query_id is not None and (not planned or max(planned) < counted):
        raise UserError(f"the checkpoint is damaged: {checkpoint} ends before batch {counted}, which the results "
                        "hold (its last batches were deleted); resuming would plan that batch again over other "
                        f"offsets: restore {checkpoint} from a copy, or pass --start-over to count from the "
                        "beginning (the results go too)")
    clash = identity_clash(meta, identity)
    if clash:
        raise UserError(f"{where} holds results of another {clash} (topic {settings.topic!r} at "
                        f"{settings.bootstrap_servers}, recreated or another broker); {hint}")
    if query_id is not None and checkpoint_offsets(checkpoint):
        with open_consumer(settings) as consumer:
            gone_back = offsets_gone_back(checkpoint, consumer.end_offsets(consumer.partitions()))
        if gone_back:
            raise UserError(f"topic {settings.topic!r} at {settings.bootstrap_servers} was recreated or lost data: "
                            f"{gone_back}; {hint}")


def check_retention(store, checkpoint: Path | None, settings: KafkaSettings, accept: bool) -> bool:
    """Messages deleted from the topic (Kafka's retention) before the job read them: one line naming them and
    the ways on, or, with --accept-data-loss, recorded in the results. True when the sources must skip them."""
    read_to = checkpoint_offsets(checkpoint) if checkpoint is not None else None
    if not read_to:
        return False
    with open_consumer(settings) as consumer:
        losses = retention_losses(read_to, consumer.beginning_offsets(consumer.partitions()))
    if not losses:
        return False
    lost = describe_losses(losses)
    if not accept:
        raise UserError(f"Kafka's retention deleted messages of topic {settings.topic!r} that the job had not read: "
                        f"{lost}; the answers cannot be exact without them: pass --accept-data-loss to count on from "
                        "what is left (the loss is recorded with the results), or --start-over to count what is "
                        "left from the beginning")
    store.record_losses(losses)
    log.warning("counting on without messages Kafka's retention deleted (--accept-data-loss): %s; the answers "
                "say they are short of them", lost)
    return True


def checkpoint_location(checkpoint: str | None, output: Path) -> str:
    """A local folder, made absolute; a URI (hdfs://, s3a://, file://) passes unchanged, for a cluster
    whose executors must all reach the checkpoint (their state stores write there)."""
    if checkpoint and "://" in checkpoint:
        return checkpoint
    return str((Path(checkpoint) if checkpoint else output / "checkpoint").resolve())


ONCE_BROKER_TIMEOUT_S = 30


def broker_timeout_s(options: StreamOptions) -> float | None:
    """--broker-timeout, else 30 s for --once (a command in a terminal must not hang on a broker that is
    gone) and no limit for a live job: a service rides an outage out, saying so every minute and on
    /healthz, because ending it would not bring the broker back. None: no limit."""
    if options.broker_timeout is None:
        return ONCE_BROKER_TIMEOUT_S if options.once else None
    return None if options.broker_timeout == "never" else duration_seconds(options.broker_timeout)


def clock() -> str:
    return datetime.now().astimezone().strftime("%H:%M:%S %Z")


def await_query(query, bootstrap_servers: str, timeout_s: float | None, say: Callable[[str], None],
                down_since: float | None = None, check_every_s: float = 10.0) -> str | None:
    """Wait for the query to end: None when it did, "interrupted" on Ctrl-C, "lost broker" when no broker
    address has taken a connection for `timeout_s` (None: never). With no query, wait for a broker that is
    away: "back" once one answers. While none answers, one line a minute.

    Our own SIGINT handler only sets a flag: pyspark's cancels jobs over py4j from inside the signal
    handler, re-entering a py4j call in progress, and a Ctrl-C ended in pages of tracebacks. Spark's Kafka
    connector retries a vanished broker for minutes and then fails in a hundred lines; a closed port says it
    in one.
    """
    interrupted = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    try:
        last_check = time.monotonic()
        said = down_since
        while not interrupted.is_set():
            if query is None:
                time.sleep(1)
            elif query.awaitTermination(1):
                return None
            now = time.monotonic()
            if now - last_check < (check_every_s if query is not None else 2.0):
                continue
            last_check = now
            if any_port_open(bootstrap_servers):
                if down_since is not None and now - down_since >= 60:
                    say(f"{clock()} the broker at {bootstrap_servers} answers again after {now - down_since:.0f} s")
                if down_since is not None and query is None:
                    return "back"
                down_since = said = None
                continue
            down_since = now if down_since is None else down_since
            said = down_since if said is None else said
            if timeout_s is not None and now - down_since >= timeout_s:
                return "lost broker"
            if now - said >= 60:  # the first after a minute: a short outage passes without a word
                said = now
                say(f"{clock()} no broker has answered at {bootstrap_servers} for {now - down_since:.0f} s: waiting "
                    "for it (every finished batch is kept; --broker-timeout gives up)")
        return "interrupted"
    finally:
        signal.signal(signal.SIGINT, previous)


def run_query(writer, options: StreamOptions, settings: KafkaSettings, batch_writer: "BatchWriter",
              listener: "ProgressReporter", on_start: Callable[[object], None]):
    """Start the query and wait for it: (the query, how it ended, as await_query says). A query that failed
    only because a Python worker was late, or (live) because its source gave up on a broker that is away,
    starts again from its checkpoint, the second once a broker answers again: nothing is lost or doubled."""
    timeout_s, late_starts = broker_timeout_s(options), 0
    while True:
        try:
            query = writer.start()
        except Exception as error:  # e.g. a checkpoint folder that can't be made
            raise UserError(f"the streaming query did not start: {first_line(error)}") from None
        on_start(query)
        try:
            ended = await_query(query, settings.bootstrap_servers, timeout_s, listener.say)
        except StreamingQueryException:
            ended = None  # awaitTermination re-raises the query's failure with the whole plan: reported in one line
        error = query.exception() if ended is None and batch_writer.failure is None else None
        if error is None:
            return query, ended
        if python_worker_late(error) and late_starts < QUERY_ATTEMPTS - 1:
            late_starts += 1
            log.warning("the query stopped because a Python worker did not start within Spark's fixed 10 s "
                        "(a busy machine): starting it again from its checkpoint in %d s (attempt %d of %d)",
                        QUERY_ATTEMPT_PAUSE_S * late_starts, late_starts + 1, QUERY_ATTEMPTS)
            time.sleep(QUERY_ATTEMPT_PAUSE_S * late_starts)
            continue
        if not options.once and not any_port_open(settings.bootstrap_servers):
            listener.say(f"{clock()} the query stopped while no broker answers at {settings.bootstrap_servers}: it "
                         "starts again from its checkpoint once one does")
            ended = await_query(None, settings.bootstrap_servers, timeout_s, listener.say, down_since=time.monotonic())
            if ended == "back":
                continue
        return query, ended


# Spark gives a Python worker it starts for planning (our source's reader, in the driver) a fixed 10 s to
# connect back (PythonWorkerFactory); on a loaded machine importing pyspark can take longer. The query then
# fails with nothing lost: it starts again from its checkpoint, and the results take each batch once. A
# busy spell can outlast a few seconds (CI once saw three late starts in a row, 13 s apart), so each new
# attempt first waits a little longer, about a minute in all. `make setup` puts compiled bytecode in
# pyspark's zips (local/pyspark_zips.py), which halves the import.
QUERY_ATTEMPTS = 5
QUERY_ATTEMPT_PAUSE_S = 5
PYTHON_WORKER_LATE = "Python worker failed to connect back"


def python_worker_late(error) -> bool:
    """The query failed only because a Python worker did not connect back to Spark in time."""
    return error is not None and PYTHON_WORKER_LATE in first_line(error)


def reading(topic: str, checkpoint: Path | None) -> str:
    """What the query was reading, for a line about a lost broker: the topic's partitions and the offsets
    the latest batch reads up to (from the checkpoint's offset log)."""
    offsets = checkpoint_offsets(checkpoint) if checkpoint is not None else None
    if not offsets:
        return f"topic {topic!r}"
    shown = ", ".join(f"{p} up to offset {o:,}" for p, o in sorted(offsets.items()))
    return f"topic {topic!r} (partition{'s' if len(offsets) > 1 else ''} {shown})"


def catch_up(listener: ProgressReporter, query, seconds: float = 5.0) -> None:
    """Wait until the listener, which Spark calls asynchronously, has printed the query's last batch."""
    last = query.lastProgress
    last_id = None if last is None else last["batchId"] if isinstance(last, dict) else last.batchId
    deadline = time.monotonic() + seconds
    while last_id is not None and listener.last_batch < last_id and time.monotonic() < deadline:
        time.sleep(0.05)


def stop_query(query) -> None:
    """Stop the query; a source stuck on a vanished broker may not stop in time (spark.sql.streaming.stopTimeout)."""
    try:
        query.stop()
    except Exception as error:  # noqa: BLE001 - we are leaving anyway; say why it was not clean
        log.info("the query did not stop cleanly: %s", str(error).splitlines()[0] if str(error) else error)


def run(options: StreamOptions, settings: KafkaSettings) -> int:
    """Run the job until Ctrl-C, or with `once` until everything available now is processed."""
    output = Path(options.output)
    checkpoint_uri = checkpoint_location(options.checkpoint, output)
    # The identity checks read the checkpoint's files; on shared storage (hdfs://, s3a://) Spark's own
    # checks remain, ours need a local folder.
    checkpoint = None if "://" in checkpoint_uri else Path(checkpoint_uri)
    descriptions = load_radio_codes(options.radio_codes)  # read before Spark starts: a bad file is one line
    topics = check_reachable(settings)
    window_s, pane_s = duration_seconds(options.window), duration_seconds(options.pane)
    missing = (f"topic {settings.topic!r} does not exist at {settings.bootstrap_servers} "
               "(replay the calls first: python kafka_server.py)")
    if settings.topic not in topics and options.once:
        raise UserError(missing)
    with OutputLock(output):  # before --start-over deletes anything: never under a running job
        if settings.topic not in topics:
            wait_for_topic(settings, missing)
        return _run(options, settings, output, checkpoint, checkpoint_uri, window_s, pane_s, descriptions)


def wait_for_topic(settings, why: str, every_s: float = 2.0, heartbeat_s: float = 60.0) -> None:
    """A live job started before the producer waits for its topic, saying so, rather than fail."""
    print(f"waiting: {why}; Ctrl-C stops", file=sys.stderr, flush=True)
    started = last = time.monotonic()
    while settings.topic not in check_reachable(settings):
        time.sleep(every_s)
        if time.monotonic() - last >= heartbeat_s:
            last = time.monotonic()
            print(f"still waiting for topic {settings.topic!r} ({time.monotonic() - started:.0f} s)",
                  file=sys.stderr, flush=True)
    print(f"topic {settings.topic!r} is there: starting", file=sys.stderr, flush=True)


def _run(options: StreamOptions, settings: KafkaSettings, output: Path, checkpoint: Path | None, checkpoint_uri: str, window_s: int,
         pane_s: int, descriptions: dict[str, str | None]) -> int:
    if options.start_over:
        if checkpoint is None:
            raise UserError(f"--start-over deletes local folders only: delete {checkpoint_uri} yourself, "
                            "or use a new --checkpoint")
        start_over(output, checkpoint, path_in(output))
    identity = topic_identity(settings)
    if options.group_id:  # before Spark starts: one line when another running job commits to it
        check_group_free(settings, options.group_id, checkpoint_query_id(checkpoint) if checkpoint else None)
    store = ResultStore(output)
    try:
        if checkpoint is not None:
            check_results_belong(store, checkpoint, identity, settings)
            resuming = resume_point(checkpoint)
            if resuming:
                print(resuming, file=sys.stderr, flush=True)
        skip_lost = check_retention(store, checkpoint, settings, options.accept_data_loss)
        store.check_settings({"topic": settings.topic, "window": options.window, "slide": options.pane,
                              "watermark": options.watermark, "timezone": options.timezone,
                              "window_seconds": str(window_s), "pane_seconds": str(pane_s),
                              "watermark_seconds": str(duration_seconds(options.watermark))})
    except BaseException:
        store.close()
        raise
    spark = start_spark(options)
    idle_timeout_s = duration_seconds(options.idle_timeout)
    store.set_meta(spark_ui_url=spark.sparkContext.uiWebUrl, spark_app_id=spark.sparkContext.applicationId,
                   idle_timeout_seconds=str(idle_timeout_s), started_at=str(time.time()), broker_lost_since="")
    listener = None
    warming = None
    ends = KafkaEnds(dataclasses.replace(settings, timeout_s=min(settings.timeout_s, 5.0)))  # a look, not a wait
    ticker = None
    committer = GroupCommitter(settings, options.group_id, live=not options.once).start()
    try:
        if options.source == "kafka":
            require_connector(spark)  # before anything else starts: nothing to wait for on the way out
        ship_package(spark, output)
        jvm_json_check = T.jvm_json_check(spark)
        log.info("JSON check: %s", "in the JVM (Jackson)" if jvm_json_check else "in Python workers")
        # Only for the JSON check's UDF: warming loads pandas and pyarrow in every worker, which our source's
        # read() does not need; for it, warming cost 11 core-seconds and 4 s more of a 3,000-call --once.
        if not jvm_json_check:
            warming = warm_python_workers(spark)
        print(f"Spark {spark.version} UI: {spark.sparkContext.uiWebUrl}", file=sys.stderr, flush=True)
        raw = open_source(spark, options, settings, skip_lost or options.accept_data_loss)
        stream = build_stream(raw, descriptions, pane_s, jvm_json_check)
        listener = ProgressReporter(store, settings.topic)
        spark.streams.addListener(listener)
        batch_writer = BatchWriter(store, pane_s, options.console_top, options.strict,
                                   duration_seconds(options.max_ahead), identity, checkpoint,
                                   BatchObserver(checkpoint_uri, spark, ends, idle_timeout_s))
        batch_writer.committer, batch_writer.settings = committer, settings
        writer = (stream.writeStream.queryName("sfcrime_calls")
                  .foreachBatch(batch_writer)
                  .option("checkpointLocation", checkpoint_uri))
        writer = writer.trigger(availableNow=True) if options.once else writer.trigger(processingTime=options.trigger)
        # Everything made so far (pyspark, pandas, pyarrow, the session) lives as long as the job: freeze it out
        # of the collector, so the full collection before each batch scans only what batches leave behind
        # (about 45 ms a batch less, 1 ms instead of 45 here).
        gc.collect()
        gc.freeze()
        if not options.once:  # a live job's partitions may go quiet between batches
            ticker = IdlenessTicker(store, ends, idle_timeout_s, lambda t: local_time(t, named=True)).start()
        started = time.monotonic()
        resume = f"resume with the same --output {output}" + (f" --checkpoint {options.checkpoint}" if options.checkpoint else "")

        def on_start(query) -> None:
            if committer.query_id is None:
                store.set_meta(consumer_group=committer.set_query(str(query.id)))

        query, ended = run_query(writer, options, settings, batch_writer, listener, on_start)
        if ticker is not None:  # nothing of it may come after the job's last line
            ticker.stop()
        if ended == "interrupted":
            # A batch that finished just before Ctrl-C has its line printed by the listener, asynchronously:
            # let it come first, and nothing after ours, so the last line says how to go on.
            catch_up(listener, query)
            listener.say_last(f"stopping (Ctrl-C); every finished batch is kept: {resume}")
            stop_query(query)
            return 130
        if ended == "lost broker":
            stop_query(query)
            raise UserError(f"lost the broker at {settings.bootstrap_servers} while reading {reading(settings.topic, checkpoint)}: "
                            f"nothing has answered there for {broker_timeout_s(options):g} s; every finished batch is "
                            f"kept: start it again and {resume}")
        error = query.exception()
        if batch_writer.failure is not None:
            raise UserError(batch_writer.failure)
        if error is not None:
            if checkpoint is not None:  # messages deleted under the running job: named in one line
                check_retention(store, checkpoint, settings, options.accept_data_loss)
            if "No space left on device" in str(getattr(error, "java_exception", None) or error) \
                    or "No space left on device" in first_line(error):
                raise UserError(f"the disk under the checkpoint {checkpoint_uri} is full (No space left on device): "
                                "the batch it was writing was not counted; free some space and start the job again "
                                f"with the same --output: {resume}")
            raise UserError(f"the streaming query failed: {first_line(error)}")
        for progress in query.recentProgress:  # the listener is asynchronous: make sure the last ones are kept
            store.write_progress(progress_row(progress, backlog_of(progress), store.watermark()))
        catch_up(listener, query)
        log.info("processed everything available in %.1f s; results in %s", time.monotonic() - started, store.path)
        return 0
    finally:
        gc.unfreeze()  # a caller that goes on (the demo, a test) gets its objects back to the collector
        if ticker is not None:
            ticker.stop()
        committer.close()  # after the query stopped: the last batch the results hold is committed too
        if warming is not None:
            warming.join(timeout=30)
        if listener is not None:
            spark.streams.removeListener(listener)
        spark.stop()
        ends.close()
        store.close()
