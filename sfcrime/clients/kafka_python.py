"""kafka-python: kept (`--client kafka-python`) because the course material uses it."""

from __future__ import annotations

import base64
import dataclasses
import threading
import time
import uuid
from typing import Callable, TypeVar

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import OffsetAndMetadata
from kafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

from ..errors import TopicMissing, UserError
from ..kafka_settings import KafkaSettings
from .diagnosis import kafka_python_error, unreachable
from .seam import Admin, Consumer, DeliveryReport, Implementation, Producer, Record

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

Client = TypeVar("Client")


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


def build(settings: KafkaSettings, client: Callable[..., Client], **config) -> Client:
    """A kafka-python client on the settings' broker and properties, or one clear UserError.

    Built on a thread of its own and given up after the timeout: its bootstrap can hang for ever (seen with
    a TLS client against a plaintext broker), whatever bootstrap_timeout_ms says."""
    config.update(kafka_python_config(settings.properties))
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["client"] = client(bootstrap_servers=settings.bootstrap_servers,
                                       bootstrap_timeout_ms=int(settings.timeout_s * 1000), **config)
        except BaseException as error:  # handed to the caller's thread
            outcome["error"] = error

    worker = threading.Thread(target=target, name="kafka-python-bootstrap", daemon=True)
    worker.start()
    worker.join(settings.timeout_s + 5)
    if worker.is_alive():
        raise unreachable(settings, "no answer to the handshake (is security.protocol right?)")
    error = outcome.get("error")
    if isinstance(error, (KafkaError, OSError, ValueError, TypeError)):
        raise kafka_python_error(settings, error) from None
    if error is not None:
        raise error
    return outcome["client"]


class KafkaPythonProducer(Producer):
    def __init__(self, settings: KafkaSettings, report: DeliveryReport) -> None:
        super().__init__(settings, report)
        self._producer = build(settings, KafkaProducer, acks="all", linger_ms=20, batch_size=1_000_000, retries=5,
                               max_request_size=8_388_608, enable_idempotence=True)
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
        pass  # kafka-python's own thread serves the callbacks

    def flush(self, timeout_s: float) -> int:
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaTimeoutError:
            pass
        sent = self.report.delivered + self.report.failed
        return max(0, self._pending - sent)

    def close(self) -> None:
        self._producer.close(timeout=5)


class KafkaPythonConsumer(Consumer):
    def __init__(self, settings: KafkaSettings, group_id: str | None = None, from_beginning: bool = True) -> None:
        super().__init__(settings)
        self._topic = settings.topic
        self._consumer = build(settings, KafkaConsumer, group_id=group_id, enable_auto_commit=bool(group_id),
                               auto_offset_reset="earliest" if from_beginning else "latest",
                               request_timeout_ms=max(int(settings.timeout_s * 1000), 31000),
                               fetch_max_bytes=52_428_800, max_partition_fetch_bytes=10_485_760)

    def _tps(self, partitions):
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

    def subscribe(self) -> None:
        self._consumer.subscribe([self._topic])

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        return [
            Record(m.partition, m.offset, m.key, m.value, m.timestamp)
            for messages in batches.values() for m in messages
        ]

    def commit_offsets(self, offsets: dict[int, int], metadata: str = "") -> None:
        try:
            self._consumer.commit({tp: OffsetAndMetadata(offsets[tp.partition], metadata, -1)
                                   for tp in self._tps(offsets)})
        except KafkaError as error:
            raise UserError(str(error)) from None

    def committed_offsets(self, partitions: list[int]) -> dict[int, tuple[int | None, str]]:
        found = {}
        for tp in self._tps(partitions):
            committed = self._consumer.committed(tp, metadata=True)
            found[tp.partition] = (None, "") if committed is None else (committed.offset, committed.metadata or "")
        return found

    def close(self) -> None:
        self._consumer.close(autocommit=False)


class KafkaPythonAdmin(Admin):
    """kafka-python's KafkaAdminClient, opened on first use (and, for offsets, a consumer that joins no group)."""

    offsets_reader = KafkaPythonConsumer

    def __init__(self, settings: KafkaSettings) -> None:
        super().__init__(settings)
        self._client: KafkaAdminClient | None = None

    @property
    def _admin(self) -> KafkaAdminClient:
        if self._client is None:
            self._client = build(self.settings, KafkaAdminClient, request_timeout_ms=int(self.settings.timeout_s * 1000))
        return self._client

    def topics(self) -> dict[str, int]:
        try:
            described = self._admin.describe_topics()
        except KafkaError as error:  # the broker went away after the client was built
            raise kafka_python_error(self.settings, error) from None
        return {t["name"]: len(t["partitions"]) for t in described if not t["error_code"]}

    def create_topic(self, partitions: int) -> None:
        try:
            self._admin.create_topics([NewTopic(self.settings.topic, partitions, -1)])  # -1: the broker's default
        except TopicAlreadyExistsError:
            pass
        except KafkaError as error:
            raise UserError(f"cannot create topic {self.settings.topic!r}: {error}") from None
        self._await_listed()

    def delete_topic(self) -> None:
        try:
            self._admin.delete_topics([self.settings.topic])
        except UnknownTopicOrPartitionError:
            pass
        except KafkaError as error:
            raise UserError(f"cannot delete topic {self.settings.topic!r}: {error}") from None

    def cluster_id(self) -> str | None:
        return self._admin.describe_cluster().get("cluster_id") or None

    def topic_id(self) -> str | None:
        [described] = self._admin.describe_topics([self.settings.topic])
        topic_id = uuid.UUID(str(described.get("topic_id") or 0).zfill(32))  # Kafka's tools write it in base64
        return base64.urlsafe_b64encode(topic_id.bytes).rstrip(b"=").decode() if topic_id.int else None

    def broker_count(self) -> int:
        """Asked on a client of its own, bootstrapped within 2 s as librdkafka asks: the admin's own client would
        wait out the whole timeout while no broker answers."""
        quick = dataclasses.replace(self.settings, timeout_s=min(2.0, self.settings.timeout_s))
        try:
            admin = build(quick, KafkaAdminClient, request_timeout_ms=int(quick.timeout_s * 1000))
        except UserError:  # not ready yet
            return 0
        try:
            return len(admin.describe_cluster().get("brokers", []))
        except Exception:  # noqa: BLE001 - not ready yet
            return 0
        finally:
            admin.close()

    def group_offsets(self, group_id: str) -> dict[int, int]:
        try:
            answer = self._admin.list_group_offsets({group_id: None}).get(group_id, {})
        except KafkaError as error:
            raise UserError(f"cannot read the offsets of group {group_id!r}: {error}") from None
        return {tp.partition: meta.offset for tp, meta in answer.items()
                if tp.topic == self.settings.topic and meta.offset >= 0}

    def close(self) -> None:
        super().close()
        if self._client is not None:
            self._client.close()
            self._client = None


IMPLEMENTATION = Implementation(KafkaPythonProducer, KafkaPythonConsumer, KafkaPythonAdmin)
