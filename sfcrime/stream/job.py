"""The streaming job's wiring: the Spark session, the Kafka source, the plan, and run() that puts them
together with the sink (sink.py), the progress listener (listener.py) and the query's lifecycle (query.py),
after the start-up checks (startup_checks.py).

Plan: source -> parse_calls (strict JSON) -> dedupe by crime_id for good (malformed records pass through
keyed by their offset) -> dispositions described -> each message's pane, hour and day -> foreachBatch: the
batch's rows counted in Python, implausible event times set aside, the counts added to the results
(exactly once per batch id, with the job's own event-time watermark), malformed records to the dead
letters. No Spark watermark: nothing is dropped for being late.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import socket
import sys
import threading
import time
import zipfile
from pathlib import Path

from ..clients import any_port_open, check_reachable, java_client_config
from ..errors import UserError
from ..kafka_settings import KafkaSettings
from ..dataset import load_radio_codes
from ..local.jars import connector_jar_paths, json_check_jar_paths
from ..results import OutputLock, ResultsStore
from ..sf_time import local_time
from . import transforms as T
from .consumer_group import GroupCommitter, check_group_free
from .identity import checkpoint_query_id, resume_point, start_over, topic_identity
from .listener import ProgressReporter, backlog_of, catch_up, progress_row
from .options import StreamOptions
from .query import reading, run_query, stop_query
from .session import build_session
from .sink import BatchObserver, BatchWriter
from .source import NAME as PYTHON_SOURCE_NAME
from .source import KafkaDataSource
from .spark_errors import first_line, jvm_ended
from .startup_checks import check_results_belong, check_retention, checkpoint_location, wait_for_topic
from .warm_up import warm_up
from .watermarks import IdlenessTicker, KafkaEnds

log = logging.getLogger(__name__)
KAFKA_PROVIDER_CLASS = "org.apache.spark.sql.kafka010.KafkaSourceProvider"
STOP_WAIT_S = 15.0  # on Ctrl-C, how long the batch being written may take to finish before it is cut short


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
# A checkpoint on the local disk is written through Hadoop's FileSystem API, not Spark's default FileContext.
# Without Hadoop's native library every local file Hadoop makes costs a `chmod` process, and through
# FileContext `readlink`s too: 34 ms a file against 10 ms here. A batch writes four (its offset log, its
# commit log, a state changelog per partition): live at 2,000 calls/s, batch p50 0.142 s against 0.237 s
# (docs/benchmarks.md). Both write Hadoop's .crc beside each file, which the damaged-checkpoint check reads,
# and both make a file appear whole, by a rename. A shared checkpoint (hdfs://, s3a://) keeps Spark's default.
LOCAL_CHECKPOINT_DEFAULTS = {
    "spark.sql.streaming.checkpointFileManagerClass":
        "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager",
}


def start_spark(options: StreamOptions, local_checkpoint: bool = True):
    """The job's session; a setting Spark refuses (--spark-conf, --master) is one line. When the JVM itself
    exits, it has printed its reason just above."""
    jars = (connector_jar_paths() if options.source == "kafka" else []) + json_check_jar_paths()
    master = options.master or ""
    if master.startswith("spark://") and not any_port_open(master.removeprefix("spark://")):
        # Spark itself tries for a minute, then says only that its context was stopped
        raise UserError(f"no Spark master answers at {master} (start one with `python -m sfcrime spark-cluster`)")
    try:
        defaults = {**SPARK_DEFAULTS, **(LOCAL_CHECKPOINT_DEFAULTS if local_checkpoint else {})}
        spark = build_session("sfcrime-stream", options.master, defaults, options.spark_conf, options.timezone,
                              jars or None)
        spark.conf.get("spark.sql.session.timeZone")  # makes the session state now: its settings fail here, if at all
        return spark
    except UserError:  # ours already (no Java, say): as it is
        raise
    except Exception as error:
        raise UserError(f"Spark did not start: {first_line(error)}") from None


# What executors never import: the batch baseline and set-up's training run stay on the driver's machine.
NOT_SHIPPED = ("baseline", "local/training.py")


def ship_package(spark, output: Path) -> None:
    """Executors import sfcrime (the source's read() runs there): ship it, for clusters without our venv."""
    spark.sparkContext.addPyFile(str(package_zip(output)))


def package_zip(output: Path) -> Path:
    """OUTPUT/sfcrime-package.zip: sfcrime's Python files, but for those NOT_SHIPPED."""
    package = Path(__file__).resolve().parent.parent
    archive = output / "sfcrime-package.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in package.rglob("*.py"):
            inside = path.relative_to(package).as_posix()
            if not any(inside == left or inside.startswith(left + "/") for left in NOT_SHIPPED):
                zf.write(path, path.relative_to(package.parent))
    return archive


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


def run(options: StreamOptions, settings: KafkaSettings) -> int:
    """Run the job until Ctrl-C, or with `once` until everything available now is processed."""
    output = Path(options.output)
    checkpoint_uri = checkpoint_location(options.checkpoint, output)
    # The identity checks read the checkpoint's files; on shared storage (hdfs://, s3a://) Spark's own
    # checks remain, ours need a local folder.
    checkpoint = None if "://" in checkpoint_uri else Path(checkpoint_uri)
    descriptions = load_radio_codes(options.radio_codes)  # read before Spark starts: a bad file is one line
    topics = check_reachable(settings)
    missing = (f"topic {settings.topic!r} does not exist at {settings.bootstrap_servers} "
               "(replay the calls first: python kafka_server.py)")
    if settings.topic not in topics and options.once:
        raise UserError(missing)
    with OutputLock(output):  # before --start-over deletes anything: never under a running job
        if settings.topic not in topics:
            wait_for_topic(settings, missing)
        if options.start_over:
            if checkpoint is None:
                raise UserError(f"--start-over deletes local folders only: delete {checkpoint_uri} yourself, "
                                "or use a new --checkpoint")
            start_over(output, checkpoint, options.place)
        identity = topic_identity(settings)
        if options.group_id:  # before Spark starts: one line when another running job commits to it
            check_group_free(settings, options.group_id, checkpoint_query_id(checkpoint) if checkpoint else None)
        store = open_results(options, settings, checkpoint, identity)
        return Job(options, settings, store, checkpoint, checkpoint_uri, identity).run(descriptions)


def open_results(options: StreamOptions, settings: KafkaSettings, checkpoint: Path | None,
                 identity: dict[str, str]) -> ResultsStore:
    """The results store, once it is sure to belong to this query and topic (startup_checks.py)."""
    store = options.place.open_store()
    try:
        if checkpoint is not None:
            check_results_belong(store, checkpoint, identity, settings)
            resuming = resume_point(checkpoint)
            if resuming:
                print(resuming, file=sys.stderr, flush=True)
        store.check_settings({"topic": settings.topic, "window": options.window, "slide": options.pane,
                              "watermark": options.watermark, "timezone": options.timezone,
                              "window_seconds": str(options.window_s), "pane_seconds": str(options.pane_s),
                              "watermark_seconds": str(options.watermark_s)})
        return store
    except BaseException:
        store.close()
        raise


class Job:
    """One run of the streaming query over a results store that has passed the start-up checks. Owns what
    it starts (Spark, the listener, the idleness ticker, the group committer) and stops it all."""

    def __init__(self, options: StreamOptions, settings: KafkaSettings, store: ResultsStore, checkpoint: Path | None,
                 checkpoint_uri: str, identity: dict[str, str]) -> None:
        self.options, self.settings, self.store = options, settings, store
        self.checkpoint, self.checkpoint_uri, self.identity = checkpoint, checkpoint_uri, identity
        self.resume = (f"resume with the same --output {options.output}"
                       + (f" --checkpoint {options.checkpoint}" if options.checkpoint else ""))
        self.spark = self.listener = self.warming = self.ticker = None
        self.ends = KafkaEnds(dataclasses.replace(settings, timeout_s=min(settings.timeout_s, 5.0)))  # a look, not a wait
        self.committer = GroupCommitter(settings, options.group_id, live=not options.once)

    def run(self, descriptions: dict[str, str | None]) -> int:
        try:
            skip_lost = check_retention(self.store, self.checkpoint, self.settings, self.options.accept_data_loss)
            self.spark = start_spark(self.options, local_checkpoint=self.checkpoint is not None)
            self.committer.start()
            writer, batch_writer = self.plan(descriptions, skip_lost)
            started = time.monotonic()
            query, ended = run_query(writer, self.options, self.settings, batch_writer, self.listener, self.on_start)
            if self.ticker is not None:  # nothing of it may come after the job's last line
                self.ticker.stop()
            return self.ended(query, ended, batch_writer, started)
        except Exception as error:
            ended = jvm_ended(self.spark, error) if self.spark is not None else None
            if ended is None:
                raise
            raise UserError(f"{ended} under the running job: every finished batch is kept: start it again and "
                            f"{self.resume}") from None
        finally:
            self.close()

    def plan(self, descriptions: dict[str, str | None], skip_lost: bool):
        """The query, ready to start: the source, the plan, the sink and the listener (and, live, the ticker)."""
        options, spark, store = self.options, self.spark, self.store
        store.set_meta(spark_ui_url=spark.sparkContext.uiWebUrl, spark_app_id=spark.sparkContext.applicationId,
                       idle_timeout_seconds=str(options.idle_timeout_s), started_at=str(time.time()),
                       broker_lost_since="", job_pid=str(os.getpid()), job_host=socket.gethostname())
        if options.source == "kafka":
            require_connector(spark)  # before anything else starts: nothing to wait for on the way out
        ship_package(spark, Path(options.output))
        jvm_json_check = T.jvm_json_check(spark)
        log.info("JSON check: %s", "in the JVM (Jackson)" if jvm_json_check else "in Python workers")
        # Only for the JSON check's UDF: warming loads pandas and pyarrow in every worker, which our source's
        # read() does not need; for it, warming cost 11 core-seconds and 4 s more of a 3,000-call --once.
        if not jvm_json_check:
            self.warming = warm_python_workers(spark)
        print(f"Spark {spark.version} UI: {spark.sparkContext.uiWebUrl}", file=sys.stderr, flush=True)

        def plan(raw):
            return build_stream(raw, descriptions, options.pane_s, jvm_json_check)

        # before the listener: these batches are no one's progress
        warm_up(spark, plan, options.warm_up_batches, Path(options.output), [code for code in descriptions if code],
                self.settings.topic)
        raw = open_source(spark, options, self.settings, skip_lost or options.accept_data_loss)
        stream = plan(raw)
        self.listener = ProgressReporter(store, self.settings.topic, every_s=options.console_every_s)
        spark.streams.addListener(self.listener)
        batch_writer = BatchWriter(store, options.pane_s, options.console_top, options.strict, options.max_ahead_s,
                                   self.identity, self.checkpoint,
                                   BatchObserver(self.checkpoint_uri, spark, self.ends, options.idle_timeout_s),
                                   options.console_every_s)
        batch_writer.committer, batch_writer.settings = self.committer, self.settings
        writer = (stream.writeStream.queryName("sfcrime_calls")
                  .foreachBatch(batch_writer)
                  .option("checkpointLocation", self.checkpoint_uri))
        writer = writer.trigger(availableNow=True) if options.once else writer.trigger(processingTime=options.trigger)
        # Everything made so far (pyspark, pandas, pyarrow, the session) lives as long as the job: freeze it out
        # of the collector, so the full collection before each batch scans only what batches leave behind
        # (about 45 ms a batch less, 1 ms instead of 45 here).
        gc.collect()
        gc.freeze()
        if not options.once:  # a live job's partitions may go quiet between batches
            self.ticker = IdlenessTicker(store, self.ends, options.idle_timeout_s,
                                         lambda t: local_time(t, named=True)).start()
        return writer, batch_writer

    def on_start(self, query) -> None:
        if self.committer.query_id is None:
            self.store.set_meta(consumer_group=self.committer.set_query(str(query.id)))

    def ended(self, query, ended: str | None, batch_writer: BatchWriter, started: float) -> int:
        """How the query ended, in one line (or an error of one line); 0 when it processed everything."""
        options, settings, store = self.options, self.settings, self.store
        if ended == "interrupted":
            batch_writer.stop(wait_s=STOP_WAIT_S)  # the batch being written finishes, and no other starts
            self.committer.close()  # its offsets to the group now: what it says of them comes before our last line
            # A batch that finished just before Ctrl-C has its line printed by the listener, asynchronously:
            # let it come first, and nothing after ours, so the last line says how to go on.
            catch_up(self.listener, query)
            self.listener.say_last(f"stopping (Ctrl-C); every finished batch is kept: {self.resume}")
            stop_query(query)
            return 130
        if ended == "lost broker":
            batch_writer.stop(wait_s=0)  # the batch in flight waits on the broker: cut it short
            stop_query(query)
            raise UserError(f"lost the broker at {settings.bootstrap_servers} while reading "
                            f"{reading(settings.topic, self.checkpoint)}: nothing has answered there for "
                            f"{options.broker_timeout_s:g} s; every finished batch is kept: start it again and {self.resume}")
        error = query.exception()
        if batch_writer.failure is not None:
            raise UserError(batch_writer.failure)
        if error is not None:
            self.failed(error)
        for progress in query.recentProgress:  # the listener is asynchronous: make sure the last ones are kept
            store.write_progress(progress_row(progress, backlog_of(progress), store.watermark(),
                                              store.write_ms(progress.batchId)))
        catch_up(self.listener, query)
        log.info("processed everything available in %.1f s; results in %s", time.monotonic() - started, store.where)
        return 0

    def failed(self, error) -> None:
        """The query failed: why, in one line."""
        if self.checkpoint is not None:  # messages deleted under the running job: named in one line
            check_retention(self.store, self.checkpoint, self.settings, self.options.accept_data_loss)
        if "No space left on device" in str(getattr(error, "java_exception", None) or error) \
                or "No space left on device" in first_line(error):
            raise UserError(f"the disk under the checkpoint {self.checkpoint_uri} is full (No space left on device): "
                            "the batch it was writing was not counted; free some space and start the job again "
                            f"with the same --output: {self.resume}")
        raise UserError(f"the streaming query failed: {first_line(error)}")

    def close(self) -> None:
        if self.listener is not None:  # a batch line held back (--console-every) comes before an error's line
            self.listener.flush()
        gc.unfreeze()  # a caller that goes on (the demo, a test) gets its objects back to the collector
        if self.ticker is not None:
            self.ticker.stop()
        self.committer.close()  # after the query stopped: the last batch the results hold is committed too
        if self.warming is not None:
            self.warming.join(timeout=30)
        if self.spark is not None and jvm_ended(self.spark) is None:  # a JVM gone answers nothing
            if self.listener is not None:
                self.spark.streams.removeListener(self.listener)
            self.spark.stop()
        self.ends.close()
        self.store.close()
