"""The one seam over the two Kafka clients: confluent-kafka (librdkafka, the fast default) and kafka-python.

Everything else in the project talks to Kafka only through what this package exports:
- seam.py          the interface (Producer, Consumer: abstract classes, context managers) and read_columns
- confluent.py     confluent-kafka; kafka_python.py kafka-python (imported only when chosen)
- diagnosis.py     why a client got nowhere, in one line
- java_names.py    our properties in the Java client's names (Spark's connector, Kafka's tools)
"""

from __future__ import annotations

import logging
import time

from ..config import KafkaSettings, UserError
from .diagnosis import any_port_open, port_open
from .java_names import java_client_config
from .seam import Columns, Consumer, DeliveryReport, Producer, Record, read_columns

log = logging.getLogger(__name__)

__all__ = ["Columns", "Consumer", "DeliveryReport", "Producer", "Record", "any_port_open", "check_reachable",
           "ensure_topic", "java_client_config", "recreate_topic", "open_consumer", "open_producer",
           "port_open", "read_columns", "read_messages", "topic_identity", "broker_count", "library_versions"]


def _library(settings: KafkaSettings):
    if settings.client == "kafka-python":
        from . import kafka_python

        return kafka_python
    from . import confluent

    return confluent


def check_reachable(settings: KafkaSettings) -> dict[str, int]:
    """Fail fast with one clear line when no broker answers; return {topic: partition count}."""
    return _library(settings).topics(settings)


def ensure_topic(settings: KafkaSettings, partitions: int) -> int:
    """Create the topic if missing; return its partition count."""
    existing = check_reachable(settings)
    if settings.topic in existing:
        return existing[settings.topic]
    _library(settings).create_topic(settings, partitions)
    log.info("created topic %s with %d partitions", settings.topic, partitions)
    return partitions


def recreate_topic(settings: KafkaSettings, partitions: int) -> None:
    """Delete the topic and create it anew, empty. Kafka deletes a topic in the background: wait until
    the broker no longer lists it, or the creation would find the old one."""
    library = _library(settings)
    library.delete_topic(settings)
    deadline = time.monotonic() + max(30.0, settings.timeout_s)
    while settings.topic in check_reachable(settings):
        if time.monotonic() > deadline:
            raise UserError(f"topic {settings.topic!r} is still being deleted at {settings.bootstrap_servers}; "
                            "try again in a minute")
        time.sleep(0.2)
    library.create_topic(settings, partitions)
    log.info("recreated topic %s with %d partitions", settings.topic, partitions)


def topic_identity(settings: KafkaSettings) -> dict[str, str]:
    """The cluster id and the topic id, where the broker has them. Asked with librdkafka whichever client was
    chosen: kafka-python has no call for topic ids."""
    from . import confluent

    return confluent.topic_identity(settings)


def broker_count(settings: KafkaSettings) -> int:
    """Brokers the bootstrap servers list in their metadata now (0 while none answers): a starting node is
    ready when this says so."""
    from . import confluent

    return confluent.broker_count(settings)


def library_versions() -> dict[str, str]:
    from . import confluent

    return {"librdkafka": confluent.library_version()}


def open_producer(settings: KafkaSettings, report: DeliveryReport) -> Producer:
    if settings.client == "kafka-python":
        from .kafka_python import KafkaPythonProducer

        return KafkaPythonProducer(settings, report)
    from .confluent import ConfluentProducer

    return ConfluentProducer(settings, report)


def open_consumer(settings: KafkaSettings, group_id: str | None = None, from_beginning: bool = True) -> Consumer:
    """A consumer of settings.topic: by assignment (assign, read_columns), or in `group_id` (subscribe)."""
    if settings.client == "kafka-python":
        from .kafka_python import KafkaPythonConsumer

        return KafkaPythonConsumer(settings, group_id, from_beginning)
    from .confluent import ConfluentConsumer

    return ConfluentConsumer(settings, group_id, from_beginning)


def read_messages(settings: KafkaSettings, wanted: list[tuple[int, int]]) -> dict[tuple[int, int], tuple[bytes | None, bytes | None]]:
    """The key and value of each (partition, offset) asked for, read again by assignment: for the rare
    message judged bad only after Spark's read (a dead letter keeps its bytes). One not there is left out."""
    offsets: dict[int, list[int]] = {}
    for partition, offset in wanted:
        offsets.setdefault(partition, []).append(offset)
    asked, found = set(wanted), {}
    with open_consumer(settings) as consumer:
        for columns in read_columns(consumer, {p: min(o) for p, o in offsets.items()},
                                    {p: max(o) + 1 for p, o in offsets.items()}, stall_timeout_s=settings.timeout_s):
            for partition, offset, key, value in zip(columns.partitions, columns.offsets, columns.keys, columns.values):
                if (partition, offset) in asked:
                    found[(partition, offset)] = (key, value)
    return found
