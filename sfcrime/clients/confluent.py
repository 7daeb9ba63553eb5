"""confluent-kafka (librdkafka): the fast default client, about 40x kafka-python's send rate here."""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka import Consumer as _Consumer
from confluent_kafka import Producer as _Producer
from confluent_kafka.admin import AdminClient, NewTopic

from ..errors import TopicMissing, UserError
from ..kafka_settings import KafkaSettings
from .diagnosis import confluent_connect_error, confluent_error_detail, confluent_setting_error, unreachable
from .seam import Admin, Columns, Consumer, DeliveryReport, Implementation, Producer, Record

# librdkafka's own log lines (a connection refused, a handshake cut) come many a second while a broker is
# away; our one-line error says what they mean. They go to this logger, shown with -v (terminal.setup_logging).
log = logging.getLogger(__name__)
LIBRDKAFKA_LOG = logging.getLogger("sfcrime.librdkafka")
LIBRDKAFKA_LOG.setLevel(logging.CRITICAL)  # also on executors, where nobody configures logging

# A partition answering these has no leader right now; another broker or a moment may fix it.
_LEADERLESS = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE}
# A request in flight to a broker that just died: librdkafka fails it with a transport error, or, once the
# broker has left the metadata, "Broker handle destroyed" (seen in CI right after a leader was killed). The
# partition's new leader answers a moment later.
_FAILING_OVER = {KafkaError._TRANSPORT, KafkaError._DESTROY_BROKER}
# A group's coordinator is being elected or is loading the group's offsets: ask again.
_COORDINATOR_MOVING = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                       KafkaError.COORDINATOR_NOT_AVAILABLE}


_NO_NEW_PROTOCOL = {KafkaError.UNSUPPORTED_VERSION, KafkaError._UNSUPPORTED_FEATURE, KafkaError.INVALID_REQUEST}


def client_config(settings: KafkaSettings) -> dict:
    """What every librdkafka client here starts from: the broker, our logger, the user's properties."""
    config = {"bootstrap.servers": settings.bootstrap_servers, "logger": LIBRDKAFKA_LOG}
    config.update(settings.properties)
    return config


def made(client_class, config: dict):
    """A librdkafka client; settings it refuses are one line, not a traceback."""
    try:
        return client_class(config)
    except KafkaException as error:
        raise confluent_setting_error(error) from None


def library_version() -> str:
    import confluent_kafka

    return confluent_kafka.libversion()[0]


class ConfluentProducer(Producer):
    def __init__(self, settings: KafkaSettings, report: DeliveryReport) -> None:
        super().__init__(settings, report)
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
        config.update(client_config(settings))
        self._producer = made(_Producer, config)
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


class ConfluentConsumer(Consumer):
    def __init__(self, settings: KafkaSettings, group_id: str | None = None, from_beginning: bool = True) -> None:
        super().__init__(settings)
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
        config.update(client_config(settings))
        config["auto.offset.reset"] = "earliest" if from_beginning else "latest"
        self._config = config
        self._consumer = made(_Consumer, config)
        self._topic = settings.topic
        self._group_protocol = "classic"

    def _metadata(self):
        try:
            metadata = self._consumer.list_topics(self._topic, timeout=self.settings.timeout_s)
        except KafkaException as error:
            raise confluent_connect_error(self.settings, self._consumer, self._errors, error) from None
        topic = metadata.topics.get(self._topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise TopicMissing(f"topic {self._topic!r} does not exist at {self.settings.bootstrap_servers}")
        return topic

    def partitions(self) -> list[int]:
        return sorted(self._metadata().partitions)

    def _watermarks(self, partitions: list[int]) -> dict[int, tuple[int, int]]:
        """Low and high offsets; a partition whose leader is still being elected (a topic created a
        moment ago, a broker that just failed) is asked again until the timeout, as Kafka's own clients
        do, instead of failing the command."""
        deadline = time.monotonic() + self.settings.timeout_s
        result = {}
        for p in partitions:
            while True:
                try:
                    result[p] = self._consumer.get_watermark_offsets(
                        TopicPartition(self._topic, p), timeout=self.settings.timeout_s, cached=False)
                    break
                except KafkaException as error:
                    kafka_error = error.args[0]
                    code = kafka_error.code()
                    if (code in _LEADERLESS or code in _FAILING_OVER or kafka_error.retriable()) \
                            and time.monotonic() < deadline:
                        time.sleep(0.2)
                        continue
                    if code in _LEADERLESS:
                        raise UserError(f"partition {p} of topic {self._topic!r} at {self.settings.bootstrap_servers} "
                                        f"has no leader after {self.settings.timeout_s:g}s: "
                                        f"{kafka_error.str()}") from None
                    raise unreachable(self.settings, confluent_error_detail(kafka_error)) from None
        return result

    def end_offsets(self, partitions: list[int]) -> dict[int, int]:
        return {p: hi for p, (lo, hi) in self._watermarks(partitions).items()}

    def beginning_offsets(self, partitions: list[int]) -> dict[int, int]:
        return {p: lo for p, (lo, hi) in self._watermarks(partitions).items()}

    def assign(self, offsets: dict[int, int]) -> None:
        self._consumer.assign([TopicPartition(self._topic, p, o) for p, o in offsets.items()])

    def subscribe(self) -> None:
        """Joins the group with Kafka's new group protocol (KIP-848: the broker assigns partitions, no
        stop-the-world rebalance), and with the classic one where the broker or the user's properties
        refuse it. A consumer by assignment joins no group and commits as before."""
        if "group.protocol" not in self.settings.properties:
            try:
                member = _Consumer({**self._config, "group.protocol": "consumer"})
            except KafkaException as error:  # a classic-only property of the user's
                log.info("Kafka's new group protocol is not used: %s", error.args[0].str() if error.args else error)
            else:
                self._consumer.close()
                self._consumer, self._group_protocol = member, "consumer"
        self._consumer.subscribe([self._topic])

    def _fall_back_to_classic(self, error) -> bool:
        """A broker without the new group protocol (before Kafka 4.0, or with it turned off) says so at the
        first poll: join again the classic way."""
        if self._group_protocol != "consumer" or error.code() not in _NO_NEW_PROTOCOL:
            return False
        log.info("the broker refuses Kafka's new group protocol (%s): joining with the classic one", error.str())
        self._consumer.close()
        self._consumer, self._group_protocol = made(_Consumer, self._config), "classic"
        self._consumer.subscribe([self._topic])
        return True

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        return [Record(m.partition(), m.offset(), m.key(), m.value(), m.timestamp()[1])
                for m in self._checked(self._consumer.consume(max_records, timeout_s))]

    def poll_columns(self, max_records: int, timeout_s: float, keys_and_times: bool = True) -> Columns:
        messages = self._checked(self._consumer.consume(max_records, timeout_s))
        keys = list(map(Message.key, messages)) if keys_and_times else []
        timestamps = [m.timestamp()[1] for m in messages] if keys_and_times else []
        return Columns(list(map(Message.partition, messages)), list(map(Message.offset, messages)), keys,
                       list(map(Message.value, messages)), timestamps)

    def commit_offsets(self, offsets: dict[int, int], metadata: str = "") -> None:
        try:
            self._consumer.commit(offsets=[TopicPartition(self._topic, p, o, metadata) for p, o in offsets.items()],
                                  asynchronous=False)
        except KafkaException as error:
            raise UserError(error.args[0].str() if error.args else str(error)) from None

    def committed_offsets(self, partitions: list[int]) -> dict[int, tuple[int | None, str]]:
        """A group's coordinator may be moving or loading (NOT_COORDINATOR on a new broker's first group):
        asked again until the timeout, as Kafka's own clients do."""
        deadline = time.monotonic() + self.settings.timeout_s
        while True:
            try:
                found = self._consumer.committed([TopicPartition(self._topic, p) for p in partitions],
                                                 timeout=self.settings.timeout_s)
                return {tp.partition: (tp.offset if tp.offset >= 0 else None, tp.metadata or "") for tp in found}
            except KafkaException as error:
                kafka_error = error.args[0]
                if (kafka_error.retriable() or kafka_error.code() in _COORDINATOR_MOVING) and time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                raise UserError(f"cannot read the committed offsets of topic {self._topic!r} at "
                                f"{self.settings.bootstrap_servers}: {kafka_error.str()}") from None

    def _checked(self, messages: list) -> list:
        """The messages without errors; a real error (not end of partition) is one clear UserError."""
        if not any(map(Message.error, messages)):
            return messages  # the usual case, checked without a Python call per message

        for m in messages:
            error = m.error()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                if self._fall_back_to_classic(error):
                    return []
                raise UserError(f"Kafka error reading {self._topic}: {error.str()}")
        return [m for m in messages if m.error() is None]

    def close(self) -> None:
        self._consumer.close()


class ConfluentAdmin(Admin):
    """librdkafka's AdminClient, made on first use (and, for offsets, a consumer that joins no group): an
    admin kept for its offsets alone, as the job's idleness check keeps one, holds no other client."""

    offsets_reader = ConfluentConsumer

    def __init__(self, settings: KafkaSettings) -> None:
        super().__init__(settings)
        self._errors: list = []
        self._client: AdminClient | None = None

    @property
    def _admin(self) -> AdminClient:
        if self._client is None:
            config = client_config(self.settings)
            config["error_cb"] = self._errors.append
            self._client = made(AdminClient, config)
        return self._client

    def topics(self) -> dict[str, int]:
        try:
            metadata = self._admin.list_topics(timeout=self.settings.timeout_s)
        except KafkaException as error:
            raise confluent_connect_error(self.settings, self._admin, self._errors, error) from None
        return {name: len(t.partitions) for name, t in metadata.topics.items() if t.error is None}

    def create_topic(self, partitions: int) -> None:
        topic = self.settings.topic
        future = self._admin.create_topics([NewTopic(topic, partitions, -1)])[topic]  # -1: broker's default
        try:
            future.result(timeout=self.settings.timeout_s)
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise UserError(f"cannot create topic {topic!r}: {error.args[0].str()}") from None
        self._await_listed()

    def delete_topic(self) -> None:
        topic = self.settings.topic
        try:
            self._admin.delete_topics([topic])[topic].result(timeout=self.settings.timeout_s)
        except KafkaException as error:
            if error.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise UserError(f"cannot delete topic {topic!r}: {error.args[0].str()}") from None

    def cluster_id(self) -> str | None:
        return str(self._admin.list_topics(timeout=self.settings.timeout_s).cluster_id or "") or None

    def topic_id(self) -> str | None:
        from confluent_kafka import TopicCollection

        topic = self.settings.topic
        description = self._admin.describe_topics(TopicCollection([topic]))[topic].result(self.settings.timeout_s)
        # librdkafka writes the id in standard base64; Kafka (its tools, kafka-python here) URL-safe, unpadded
        topic_id = str(description.topic_id or "").rstrip("=").replace("+", "-").replace("/", "_")
        return topic_id if topic_id.strip("A") else None  # an all-zero id means the broker has none

    def broker_count(self) -> int:
        try:
            return len(self._admin.list_topics(timeout=min(2.0, self.settings.timeout_s)).brokers)
        except Exception:  # noqa: BLE001 - not ready yet: KafkaException, or a timeout
            return 0

    def group_offsets(self, group_id: str) -> dict[int, int]:
        from confluent_kafka import ConsumerGroupTopicPartitions

        request = [ConsumerGroupTopicPartitions(group_id)]
        try:
            answer = self._admin.list_consumer_group_offsets(request)[group_id].result(self.settings.timeout_s)
        except KafkaException as error:
            raise UserError(f"cannot read the offsets of group {group_id!r}: {error.args[0].str()}") from None
        return {tp.partition: tp.offset for tp in answer.topic_partitions
                if tp.topic == self.settings.topic and tp.offset >= 0}


IMPLEMENTATION = Implementation(ConfluentProducer, ConfluentConsumer, ConfluentAdmin)
