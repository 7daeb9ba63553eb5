"""The one seam over the two Kafka clients: confluent-kafka (librdkafka, the fast default) and kafka-python.

Against the embedded broker librdkafka sends about 40x faster than kafka-python, so it is the default;
kafka-python stays supported (`--client kafka-python`) because the course material uses it.
Everything else in the project talks to Kafka only through the functions and classes here.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Callable, NamedTuple

from .config import KafkaSettings, TopicMissing, UserError

log = logging.getLogger(__name__)

# Kafka property (Java/librdkafka name) -> kafka-python keyword.
_KAFKA_PYTHON_NAMES = {
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.username": "sasl_plain_username",
    "sasl.password": "sasl_plain_password",
    "ssl.ca.location": "ssl_cafile",
    "ssl.certificate.location": "ssl_certfile",
    "ssl.key.location": "ssl_keyfile",
    "ssl.key.password": "ssl_password",
    "client.id": "client_id",
    "linger.ms": "linger_ms",
    "batch.size": "batch_size",
    "compression.type": "compression_type",
    "request.timeout.ms": "request_timeout_ms",
    "retries": "retries",
    "acks": "acks",
}
_INT_VALUED = {"linger_ms", "batch_size", "request_timeout_ms", "retries", "max_in_flight_requests_per_connection",
               "fetch_max_bytes", "max_partition_fetch_bytes", "max_poll_records", "session_timeout_ms"}


class Columns(NamedTuple):
    partitions: list[int]
    offsets: list[int]
    keys: list[bytes | None]
    values: list[bytes | None]
    timestamps_ms: list[int]


class Record(NamedTuple):
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


def kafka_python_config(properties: dict[str, str]) -> dict:
    """Translate Kafka property names into kafka-python keywords (unknown ones: dots become underscores)."""
    config = {}
    for name, value in properties.items():
        keyword = _KAFKA_PYTHON_NAMES.get(name, name.replace(".", "_"))
        if keyword in _INT_VALUED:
            value = int(value)
        config[keyword] = value
    if config.get("acks") not in (None, "all"):
        config["acks"] = int(config["acks"])
    return config


_JAAS_MODULES = {"PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
                 "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
                 "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule"}


def java_client_config(properties: dict[str, str]) -> dict[str, str]:
    """Translate librdkafka property names into the Java client's, for Spark's Kafka connector.

    sasl.username/password become a sasl.jaas.config; a PEM CA file becomes a PEM truststore. Names the
    Java client shares (security.protocol, sasl.mechanism, ...) and Java-only ones pass through unchanged.
    """
    config = dict(properties)
    user, password = config.pop("sasl.username", None), config.pop("sasl.password", None)
    if user is not None and "sasl.jaas.config" not in config:
        module = _JAAS_MODULES.get(config.get("sasl.mechanism", "PLAIN").upper(), _JAAS_MODULES["PLAIN"])
        quoted = [v.replace("\\", "\\\\").replace('"', '\\"') for v in (user, password or "")]
        config["sasl.jaas.config"] = f'{module} required username="{quoted[0]}" password="{quoted[1]}";'
    ca = config.pop("ssl.ca.location", None)
    if ca is not None and "ssl.truststore.location" not in config:
        config.update({"ssl.truststore.type": "PEM", "ssl.truststore.location": ca})
    return config


def _within_deadline(settings: KafkaSettings, build: Callable):
    """Build a kafka-python client, giving up after the timeout: its bootstrap can hang for ever (seen with a
    TLS client against a plaintext broker), whatever bootstrap_timeout_ms says."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["client"] = build()
        except BaseException as error:  # handed to the caller's thread
            outcome["error"] = error

    worker = threading.Thread(target=target, name="kafka-python-bootstrap", daemon=True)
    worker.start()
    worker.join(settings.timeout_s + 5)
    if worker.is_alive():
        raise _unreachable(settings, "no answer to the handshake (is security.protocol right?)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["client"]


def _kafka_python_error(settings: KafkaSettings, error: Exception) -> UserError:
    from kafka.errors import KafkaConfigurationError

    if isinstance(error, (KafkaConfigurationError, ValueError, TypeError)):
        return UserError(f"bad Kafka setting for kafka-python: {error}")
    return _unreachable(settings, type(error).__name__)


def _unreachable(settings: KafkaSettings, detail: str = "") -> UserError:
    reason = f": {detail}" if detail else ""
    if _any_port_open(settings.bootstrap_servers):  # something listens: a protocol mismatch, not a missing broker
        advice = ("something listens there but gave no metadata; does the broker require SASL or TLS, "
                  "or the client ask for what the broker does not speak? see --security-protocol")
    else:
        advice = "start one with `python -m sfcrime broker`, or set --bootstrap-servers"
    return UserError(f"cannot reach Kafka at {settings.bootstrap_servers} within {settings.timeout_s:g}s{reason} "
                     f"({advice})")


def _any_port_open(bootstrap_servers: str) -> bool:
    from .local.kafka import port_open

    for address in bootstrap_servers.split(","):
        host, _, port = address.strip().rpartition(":")
        if host and port.isdigit() and port_open(host.strip("[]"), int(port), 1.0):
            return True
    return False


# librdkafka's own log lines (a connection refused, a handshake cut) come many a second while a broker is
# away; our one-line error says what they mean. They go to this logger, shown with -v (config.setup_logging).
LIBRDKAFKA_LOG = logging.getLogger("sfcrime.librdkafka")
LIBRDKAFKA_LOG.setLevel(logging.CRITICAL)  # also on executors, where nobody configures logging


def _confluent_base(settings: KafkaSettings) -> dict:
    config = {"bootstrap.servers": settings.bootstrap_servers, "logger": LIBRDKAFKA_LOG}
    config.update(settings.properties)
    return config


def _confluent_error_detail(error) -> str:
    text = str(error)
    return text if len(text) < 200 else text[:200] + "..."


# ----------------------------------------------------------------------------------------------- admin


def check_reachable(settings: KafkaSettings) -> dict[str, int]:
    """Fail fast with one clear line when no broker answers; return {topic: partition count}."""
    if settings.client == "kafka-python":
        admin = _kafka_python_admin(settings)
        try:
            return {t["name"]: len(t["partitions"]) for t in admin.describe_topics() if not t["error_code"]}
        finally:
            admin.close()
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    errors: list = []
    config = _confluent_base(settings)
    config["error_cb"] = errors.append
    admin = AdminClient(config)
    try:
        metadata = admin.list_topics(timeout=settings.timeout_s)
    except KafkaException as error:
        raise _confluent_connect_error(settings, admin, errors, error) from None
    return {name: len(t.partitions) for name, t in metadata.topics.items() if t.error is None}


def _confluent_connect_error(settings: KafkaSettings, client, errors: list, error: Exception) -> UserError:
    """Why a librdkafka client got no metadata, in one line: a refused login says so, not "unreachable".

    librdkafka hands its connection errors to error_cb only when the client is polled: poll once to have them.
    """
    client.poll(0)
    from confluent_kafka import KafkaError

    for err in errors:
        if err.code() == KafkaError._AUTHENTICATION:
            return UserError(f"Kafka at {settings.bootstrap_servers} refused the login: {_short(err.str())}")
    for err in errors:
        if any(word in err.str() for word in ("SSL", "SASL", "handshake")):
            return _unreachable(settings, _short(err.str()))
    return _unreachable(settings, _confluent_error_detail(error.args[0]))


def _short(librdkafka_text: str) -> str:
    """'sasl_ssl://h:9092/bootstrap: SASL ... failed: ... (after 36ms in state AUTH_REQ)' without the noise."""
    text = re.sub(r"^\S+://\S+?: ", "", librdkafka_text)
    return re.sub(r" \(after \d+ms in state \w+\)$", "", text)


def _kafka_python_admin(settings: KafkaSettings):
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        return _within_deadline(settings, lambda: KafkaAdminClient(
            bootstrap_servers=settings.bootstrap_servers,
            request_timeout_ms=int(settings.timeout_s * 1000),
            bootstrap_timeout_ms=int(settings.timeout_s * 1000),
            **kafka_python_config(settings.properties),
        ))
    except (KafkaError, OSError, ValueError, TypeError) as error:
        raise _kafka_python_error(settings, error) from None


def ensure_topic(settings: KafkaSettings, partitions: int) -> int:
    """Create the topic if missing; return its partition count."""
    existing = check_reachable(settings)
    if settings.topic in existing:
        return existing[settings.topic]
    if settings.client == "kafka-python":
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        admin = _kafka_python_admin(settings)
        try:
            admin.create_topics([NewTopic(settings.topic, partitions, -1)])  # -1: the broker's default replication
        except TopicAlreadyExistsError:
            pass
        finally:
            admin.close()
    else:
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient(_confluent_base(settings))
        future = admin.create_topics([NewTopic(settings.topic, partitions, -1)])[settings.topic]  # -1: broker's default
        try:
            future.result(timeout=settings.timeout_s)
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise UserError(f"cannot create topic {settings.topic!r}: {error.args[0].str()}") from None
    log.info("created topic %s with %d partitions", settings.topic, partitions)
    return partitions


# -------------------------------------------------------------------------------------------- producer


class DeliveryReport:
    """Counts what the broker acknowledged and what it refused; keeps the keys of the first failures."""

    def __init__(self) -> None:
        self.delivered = 0
        self.failed = 0
        self.errors: dict[str, int] = {}
        self.failed_keys: list[bytes] = []

    def ok(self) -> None:
        self.delivered += 1

    def fail(self, key: bytes | None, reason: str) -> None:
        self.failed += 1
        self.errors[reason] = self.errors.get(reason, 0) + 1
        if len(self.failed_keys) < 20:
            self.failed_keys.append(key or b"")


class Producer:
    """send() hands a message to the client; flush() waits for acks and returns how many are unacknowledged."""

    def __init__(self, settings: KafkaSettings, report: DeliveryReport) -> None:
        self.settings = settings
        self.report = report

    def send(self, key: bytes, value: bytes) -> None:
        raise NotImplementedError

    def flush(self, timeout_s: float) -> int:
        raise NotImplementedError

    def close(self) -> None:
        pass


class ConfluentProducer(Producer):
    def __init__(self, settings: KafkaSettings, report: DeliveryReport) -> None:
        super().__init__(settings, report)
        from confluent_kafka import Producer as _Producer

        config = {
            "acks": "all",
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "queue.buffering.max.kbytes": 65536,  # bounds memory: about 64 MB in flight at most
            "message.timeout.ms": 60000,
            # Retries after a transient error (a leader not yet elected on a new topic) would otherwise land
            # behind later batches: out of event-time order, or twice. Idempotence keeps order, once each.
            "enable.idempotence": True,
        }
        config.update(_confluent_base(settings))
        self._producer = _Producer(config)
        self._produce = self._producer.produce
        self._poll = self._producer.poll
        self._topic = settings.topic

        def on_delivery(error, message) -> None:
            if error is None:
                report.ok()
            else:
                report.fail(message.key(), error.str())

        self._on_delivery = on_delivery

    def send(self, key: bytes, value: bytes) -> None:
        while True:
            try:
                self._produce(self._topic, value, key, on_delivery=self._on_delivery)
                return
            except BufferError:  # the local queue is full: let acks drain it
                self._poll(0.05)

    def poll(self) -> None:
        self._poll(0)

    def flush(self, timeout_s: float) -> int:
        return self._producer.flush(timeout_s)


class KafkaPythonProducer(Producer):
    def __init__(self, settings: KafkaSettings, report: DeliveryReport) -> None:
        super().__init__(settings, report)
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        config = {"acks": "all", "linger_ms": 20, "batch_size": 1_000_000, "retries": 5,
                  "max_request_size": 8_388_608, "enable_idempotence": True}
        config.update(kafka_python_config(settings.properties))
        try:
            self._producer = _within_deadline(settings, lambda: KafkaProducer(
                bootstrap_servers=settings.bootstrap_servers,
                bootstrap_timeout_ms=int(settings.timeout_s * 1000),
                **config,
            ))
        except (KafkaError, OSError, ValueError, TypeError) as error:
            raise _kafka_python_error(settings, error) from None
        self._pending = 0

    def send(self, key: bytes, value: bytes) -> None:
        report = self.report
        future = self._producer.send(self.settings.topic, value=value, key=key)
        self._pending += 1

        def on_error(error) -> None:
            report.fail(key, type(error).__name__)

        future.add_callback(lambda _: report.ok())
        future.add_errback(on_error)

    def poll(self) -> None:
        pass

    def flush(self, timeout_s: float) -> int:
        from kafka.errors import KafkaTimeoutError

        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaTimeoutError:
            pass
        sent = self.report.delivered + self.report.failed
        return max(0, self._pending - sent)

    def close(self) -> None:
        self._producer.close(timeout=5)


def open_producer(settings: KafkaSettings, report: DeliveryReport) -> Producer:
    return (KafkaPythonProducer if settings.client == "kafka-python" else ConfluentProducer)(settings, report)


# -------------------------------------------------------------------------------------------- consumer


class Consumer:
    """Reads by partition assignment (no group) unless subscribe() names a group."""

    def partitions(self) -> list[int]:
        raise NotImplementedError

    def end_offsets(self, partitions: list[int]) -> dict[int, int]:
        """The offset after the last message of each partition."""
        raise NotImplementedError

    def beginning_offsets(self, partitions: list[int]) -> dict[int, int]:
        raise NotImplementedError

    def assign(self, offsets: dict[int, int]) -> None:
        raise NotImplementedError

    def subscribe(self, group_id: str, from_beginning: bool) -> None:
        raise NotImplementedError

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        raise NotImplementedError

    def poll_columns(self, max_records: int, timeout_s: float, keys_and_times: bool = True) -> Columns:
        """Like poll, as column lists: no object per record, for the Spark source's hot loop.

        keys_and_times=False may leave the keys and timestamps empty, for readers that need neither."""
        records = self.poll(max_records, timeout_s)
        return Columns([r.partition for r in records], [r.offset for r in records], [r.key for r in records],
                       [r.value for r in records], [r.timestamp_ms for r in records])

    def close(self) -> None:
        pass

class ConfluentConsumer(Consumer):
    def __init__(self, settings: KafkaSettings, group_id: str | None = None, **extra) -> None:
        from confluent_kafka import Consumer as _Consumer

        self.settings = settings
        self._errors: list = []
        config = {
            "group.id": group_id or "sfcrime-reader",
            "enable.auto.commit": bool(group_id),
            "enable.auto.offset.store": True,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "fetch.max.bytes": 52_428_800,
            "queued.max.messages.kbytes": 131072,
            "fetch.wait.max.ms": 100,  # a live reader sees a new message within 0.1 s (default 500 ms)
            # With the local queue past queued.min.messages, librdkafka postpones the next fetch by this much
            # (default 1000 ms): a reader that works between polls, as --verify does, then stalls ~1 s.
            "fetch.queue.backoff.ms": 10,
            "error_cb": self._errors.append,
        }
        config.update(_confluent_base(settings))
        config.update(extra)
        self._consumer = _Consumer(config)
        self._topic = settings.topic

    def _metadata(self):
        from confluent_kafka import KafkaException

        try:
            metadata = self._consumer.list_topics(self._topic, timeout=self.settings.timeout_s)
        except KafkaException as error:
            raise _confluent_connect_error(self.settings, self._consumer, self._errors, error) from None
        topic = metadata.topics.get(self._topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise TopicMissing(f"topic {self._topic!r} does not exist at {self.settings.bootstrap_servers}")
        return topic

    def partitions(self) -> list[int]:
        return sorted(self._metadata().partitions)

    def _watermarks(self, partitions: list[int]) -> dict[int, tuple[int, int]]:
        from confluent_kafka import KafkaException, TopicPartition

        result = {}
        for p in partitions:
            try:
                result[p] = self._consumer.get_watermark_offsets(
                    TopicPartition(self._topic, p), timeout=self.settings.timeout_s, cached=False)
            except KafkaException as error:
                raise _unreachable(self.settings, _confluent_error_detail(error.args[0])) from None
        return result

    def end_offsets(self, partitions: list[int]) -> dict[int, int]:
        return {p: hi for p, (lo, hi) in self._watermarks(partitions).items()}

    def beginning_offsets(self, partitions: list[int]) -> dict[int, int]:
        return {p: lo for p, (lo, hi) in self._watermarks(partitions).items()}

    def assign(self, offsets: dict[int, int]) -> None:
        from confluent_kafka import TopicPartition

        self._consumer.assign([TopicPartition(self._topic, p, o) for p, o in offsets.items()])

    def subscribe(self, group_id: str, from_beginning: bool) -> None:
        self._consumer.subscribe([self._topic])

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        return [Record(m.partition(), m.offset(), m.key(), m.value(), m.timestamp()[1])
                for m in self._checked(self._consumer.consume(max_records, timeout_s))]

    def poll_columns(self, max_records: int, timeout_s: float, keys_and_times: bool = True) -> Columns:
        from confluent_kafka import Message

        messages = self._checked(self._consumer.consume(max_records, timeout_s))
        keys = list(map(Message.key, messages)) if keys_and_times else []
        timestamps = [m.timestamp()[1] for m in messages] if keys_and_times else []
        return Columns(list(map(Message.partition, messages)), list(map(Message.offset, messages)), keys,
                       list(map(Message.value, messages)), timestamps)

    def _checked(self, messages: list) -> list:
        """The messages without errors; a real error (not end of partition) is one clear UserError."""
        from confluent_kafka import KafkaError, Message

        if not any(map(Message.error, messages)):
            return messages  # the usual case, checked without a Python call per message

        for m in messages:
            error = m.error()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                raise UserError(f"Kafka error reading {self._topic}: {error.str()}")
        return [m for m in messages if m.error() is None]

    def close(self) -> None:
        self._consumer.close()


class KafkaPythonConsumer(Consumer):
    def __init__(self, settings: KafkaSettings, group_id: str | None = None, from_beginning: bool = True) -> None:
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        self.settings = settings
        self._topic = settings.topic
        try:
            self._consumer = _within_deadline(settings, lambda: KafkaConsumer(
                bootstrap_servers=settings.bootstrap_servers,
                group_id=group_id,
                enable_auto_commit=bool(group_id),
                auto_offset_reset="earliest" if from_beginning else "latest",
                bootstrap_timeout_ms=int(settings.timeout_s * 1000),
                request_timeout_ms=max(int(settings.timeout_s * 1000), 31000),
                fetch_max_bytes=52_428_800,
                max_partition_fetch_bytes=10_485_760,
                **kafka_python_config(settings.properties),
            ))
        except (KafkaError, OSError, ValueError, TypeError) as error:
            raise _kafka_python_error(settings, error) from None

    def _tps(self, partitions):
        from kafka import TopicPartition

        return [TopicPartition(self._topic, p) for p in partitions]

    def partitions(self) -> list[int]:
        deadline = time.monotonic() + self.settings.timeout_s
        while True:
            found = self._consumer.partitions_for_topic(self._topic)
            if found:
                return sorted(found)
            if time.monotonic() > deadline:
                raise TopicMissing(f"topic {self._topic!r} does not exist at {self.settings.bootstrap_servers}")
            time.sleep(0.2)

    def end_offsets(self, partitions: list[int]) -> dict[int, int]:
        return {tp.partition: o for tp, o in self._consumer.end_offsets(self._tps(partitions)).items()}

    def beginning_offsets(self, partitions: list[int]) -> dict[int, int]:
        return {tp.partition: o for tp, o in self._consumer.beginning_offsets(self._tps(partitions)).items()}

    def assign(self, offsets: dict[int, int]) -> None:
        tps = self._tps(offsets)
        self._consumer.assign(tps)
        for tp in tps:
            self._consumer.seek(tp, offsets[tp.partition])

    def subscribe(self, group_id: str, from_beginning: bool) -> None:
        self._consumer.subscribe([self._topic])

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        return [
            Record(m.partition, m.offset, m.key, m.value, m.timestamp)
            for messages in batches.values() for m in messages
        ]

    def close(self) -> None:
        self._consumer.close(autocommit=False)


def open_consumer(settings: KafkaSettings, group_id: str | None = None, from_beginning: bool = True) -> Consumer:
    if settings.client == "kafka-python":
        return KafkaPythonConsumer(settings, group_id, from_beginning)
    extra = {"auto.offset.reset": "earliest" if from_beginning else "latest"}
    return ConfluentConsumer(settings, group_id, **extra)


def read_columns(consumer: Consumer, start: dict[int, int], end: dict[int, int], batch: int = 20000,
                 stall_timeout_s: float = 30.0, on_batch: Callable[[int], None] | None = None,
                 keys_and_times: bool = True):
    """Yield Columns covering offsets [start, end) of each partition (in order within each), nothing else.

    Columns rather than a record at a time: this is the hot loop of the Spark source and of --verify.
    keys_and_times=False: keys and timestamps may come empty (--verify needs neither).
    """
    position = {p: s for p, s in start.items() if end.get(p, s) > s}
    if not position:
        return
    consumer.assign(dict(position))
    last_progress = time.monotonic()
    while position:
        # never ask for more than is left: consume(n) would wait out its timeout for the missing rest
        remaining = sum(end[p] - o for p, o in position.items())
        columns = consumer.poll_columns(min(batch, remaining), 0.1, keys_and_times)  # short: return what has come
        if not columns.offsets:
            if time.monotonic() - last_progress > stall_timeout_s:
                missing = ", ".join(f"partition {p} offsets {o}..{end[p]}" for p, o in sorted(position.items()))
                raise UserError(f"no data for {stall_timeout_s:g}s while reading {missing}: "
                                "the broker lost or withholds it")
            continue
        last_progress = time.monotonic()
        last = dict(zip(columns.partitions, columns.offsets))  # each partition's last offset in this batch
        if all(o < end[p] for p, o in last.items()):
            keep = columns  # the usual case: every record is wanted (offsets only grow within a partition)
        else:
            wanted = [i for i, (p, o) in enumerate(zip(columns.partitions, columns.offsets))
                      if position.get(p, -1) <= o < end[p]]
            keep = Columns(*([column[i] for i in wanted] if column else column for column in columns))
            last = dict(zip(keep.partitions, keep.offsets))
        for p, o in last.items():
            position[p] = o + 1
        for p in [p for p, o in position.items() if o >= end[p]]:
            del position[p]
        if keep.offsets:
            if on_batch:
                on_batch(len(keep.offsets))
            yield keep
