"""A Kafka source for Spark Structured Streaming on PySpark's Python Data Source API.

Spark's own connector (spark-sql-kafka-0-10) is a Maven download; where it can't be had, this source
gives the same columns (key, value, topic, partition, offset, timestamp, timestampType) and takes the
same options (kafka.bootstrap.servers, subscribe, startingOffsets, maxOffsetsPerTrigger, kafka.*), so
the job does not care which one runs.

Offsets are per-partition Kafka offsets, kept by Spark in its checkpoint as {"partition": offset}.
Each micro-batch is one input partition per Kafka partition range; executors read their range by
assignment (no consumer group) and hand Spark Arrow record batches.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadMaxRows, SupportsTriggerAvailableNow

if TYPE_CHECKING:
    from ..kafka_settings import KafkaSettings

log = logging.getLogger(__name__)

NAME = "sfkafka"
SCHEMA = ("key binary, value binary, topic string, partition int, offset long, "
          "timestamp timestamp, timestampType int")
_ARROW_BATCH_ROWS = 20_000


def _arrow_schema():
    import pyarrow as pa

    return pa.schema([("key", pa.binary()), ("value", pa.binary()), ("topic", pa.string()),
                      ("partition", pa.int32()), ("offset", pa.int64()),
                      ("timestamp", pa.timestamp("us", tz="UTC")), ("timestampType", pa.int32())])


ARROW_SCHEMA = _arrow_schema()


def settings_from_options(options) -> "KafkaSettings":
    """The source's options (Spark's kafka names) as sfcrime Kafka settings."""
    from ..config import DEFAULT_BOOTSTRAP, DEFAULT_TOPIC
    from ..kafka_settings import KafkaSettings

    options = {k.lower(): v for k, v in options.items()}  # Spark hands Python sources case-insensitive options
    properties = {k[len("kafka."):]: v for k, v in options.items()
                  if k.startswith("kafka.") and k != "kafka.bootstrap.servers"}
    return KafkaSettings(
        bootstrap_servers=options.get("kafka.bootstrap.servers", DEFAULT_BOOTSTRAP),
        topic=options.get("subscribe", DEFAULT_TOPIC),
        client="confluent",
        properties=properties,
        timeout_s=float(options.get("timeout", "15")),
    )


class KafkaRange(InputPartition):
    def __init__(self, partition: int, start: int, end: int) -> None:
        super().__init__((partition, start, end))
        self.partition, self.start, self.end = partition, start, end


class KafkaStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    def __init__(self, options) -> None:
        self.options = {k.lower(): v for k, v in options.items()}  # option names are case-insensitive
        self.settings = settings_from_options(self.options)
        self.starting_offsets = self.options.get("startingoffsets", "earliest").lower()
        max_offsets = self.options.get("maxoffsetspertrigger")
        self.max_offsets = int(max_offsets) if max_offsets else None
        self.fail_on_data_loss = self.options.get("failondataloss", "true").lower() != "false"
        self._consumer = None
        self._target: dict[str, int] | None = None
        self._latest: dict[str, int] | None = None

    def __getstate__(self):  # the driver's consumer stays on the driver
        state = dict(self.__dict__)
        state["_consumer"] = None
        return state

    def _driver_consumer(self):
        if self._consumer is None:
            from ..clients import open_consumer

            self._consumer = open_consumer(self.settings)
        return self._consumer

    def _end_offsets(self) -> dict[str, int]:
        consumer = self._driver_consumer()
        self._latest = {str(p): o for p, o in consumer.end_offsets(consumer.partitions()).items()}
        return self._latest

    def initialOffset(self) -> dict:
        consumer = self._driver_consumer()
        if self.starting_offsets == "latest":
            return self._end_offsets()
        if self.starting_offsets == "earliest":
            return {str(p): o for p, o in consumer.beginning_offsets(consumer.partitions()).items()}
        raise ValueError(f"startingOffsets must be earliest or latest, got {self.starting_offsets!r}")

    def prepareForTriggerAvailableNow(self) -> None:
        self._target = self._end_offsets()

    def getDefaultReadLimit(self):
        return ReadMaxRows(self.max_offsets) if self.max_offsets else ReadAllAvailable()

    def latestOffset(self, start: dict, limit) -> dict:
        latest = dict(self._target) if self._target is not None else self._end_offsets()
        if self.fail_on_data_loss and data_lost(start, latest):
            # Read once more (Tansu's ListOffsets can answer short when its fetch probe gets no answer);
            # still behind where the query has read: the topic was recreated or truncated.
            latest = self._end_offsets()
            if self._target is not None:
                self._target = dict(latest)
            lost = data_lost(start, latest)
            if lost:
                raise RuntimeError(f"topic {self.settings.topic!r} lost data (recreated?): {lost} "
                                   "(failOnDataLoss=true)")
        start = {p: start.get(p, 0) for p in latest}  # a partition added since start is read from 0
        # With failOnDataLoss=false, offsets never go back: a batch never ends before where it starts.
        latest = {p: max(o, start[p]) for p, o in latest.items()}
        if isinstance(limit, ReadMaxRows):
            return cap_offsets(start, latest, limit.max_rows)
        if self._target is not None and self.max_offsets:
            # availableNow hands Python sources ReadAllAvailable; like Spark's Kafka source we still keep
            # maxOffsetsPerTrigger there, in several batches up to the target (the availableNow contract).
            return cap_offsets(start, latest, self.max_offsets)
        return latest

    def reportLatestOffset(self):
        return self._latest

    def partitions(self, start: dict, end: dict):
        return [KafkaRange(int(p), start.get(p, 0), stop) for p, stop in sorted(end.items(), key=lambda kv: int(kv[0]))
                if stop > start.get(p, 0)]

    def read(self, partition: KafkaRange):
        """Runs on an executor: read [start, end) of one Kafka partition, yield Arrow record batches."""
        import pyarrow as pa

        from ..clients import open_consumer, read_columns

        topic = self.settings.topic
        with open_consumer(self.settings) as consumer:
            for columns in read_columns(consumer, {partition.partition: partition.start},
                                        {partition.partition: partition.end}, batch=_ARROW_BATCH_ROWS):
                n = len(columns.offsets)
                yield pa.RecordBatch.from_arrays([
                    pa.array(columns.keys, pa.binary()), pa.array(columns.values, pa.binary()),
                    pa.array([topic] * n, pa.string()), pa.array([partition.partition] * n, pa.int32()),
                    pa.array(columns.offsets, pa.int64()),
                    pa.array(columns.timestamps_ms, pa.timestamp("ms", tz="UTC")).cast(pa.timestamp("us", tz="UTC")),
                    pa.array([0] * n, pa.int32()),  # 0 = CreateTime, as Spark's connector reports it
                ], schema=ARROW_SCHEMA)

    def commit(self, end: dict) -> None:
        pass  # offsets live in Spark's checkpoint; nothing is committed to Kafka

    def stop(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def data_lost(start: dict, latest: dict) -> str | None:
    """A partition the query has read that is gone or now ends before where the query has read, or None."""
    for p, offset in sorted(start.items(), key=lambda kv: int(kv[0])):
        if p not in latest:
            return f"partition {p} is gone (read to offset {offset})"
        if latest[p] < offset:
            return f"partition {p} ends at offset {latest[p]}, but the query has read it to {offset}"
    return None


def cap_offsets(start: dict[str, int], latest: dict[str, int], max_rows: int) -> dict[str, int]:
    """At most max_rows new offsets, shared across partitions in proportion to their backlog (as Spark's
    own Kafka source does), every partition with a backlog moving at least one offset."""
    backlog = {p: max(0, latest[p] - start.get(p, 0)) for p in latest}
    total = sum(backlog.values())
    if total <= max_rows:
        return dict(latest)
    end = {}
    remaining = max_rows
    for p in sorted(backlog, key=lambda p: (-backlog[p], p)):
        share = min(backlog[p], max(1 if backlog[p] else 0, int(max_rows * backlog[p] / total)), remaining)
        end[p] = start.get(p, 0) + share
        remaining -= share
    return end


class KafkaDataSource(DataSource):
    """`spark.dataSource.register(KafkaDataSource)`, then `spark.readStream.format("sfkafka")`."""

    @classmethod
    def name(cls) -> str:
        return NAME

    def schema(self) -> str:
        return SCHEMA

    def streamReader(self, schema) -> KafkaStreamReader:
        ignore_terminal_interrupt()
        return KafkaStreamReader(self.options)


def ignore_terminal_interrupt() -> None:
    """streamReader() runs in the Python process Spark's JVM starts to plan our source's batches, in the
    terminal's process group. Ctrl-C reached it there and it died in its socket read with a traceback under
    the job's last line; the job (the driver) stops the query itself, and this process ends with it."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
