"""The one seam over the two Kafka clients: confluent-kafka (librdkafka, the fast default) and kafka-python.

Everything else in the project talks to Kafka only through what this package exports:
- seam.py          the interface (Producer, Consumer, Admin: abstract classes, context managers) and read_columns
- confluent.py     confluent-kafka; kafka_python.py kafka-python (imported only when chosen)
- diagnosis.py     why a client got nowhere, in one line
- java_names.py    our properties in the Java client's names (Spark's connector, Kafka's tools)
"""

from __future__ import annotations

import logging
import time

from ..errors import UserError
from ..kafka_settings import KafkaSettings
from .diagnosis import any_port_open, port_open
from .java_names import java_client_config
from .seam import Admin, Columns, Consumer, DeliveryReport, Implementation, Producer, Record, read_columns

log = logging.getLogger(__name__)

__all__ = ["Admin", "Columns", "Consumer", "DeliveryReport", "Implementation", "Producer", "Record", "any_port_open",
           "broker_count", "check_reachable", "ensure_topic", "implementation", "java_client_config",
           "library_versions", "open_admin", "open_consumer", "open_producer", "port_open", "read_columns",
           "read_messages", "recreate_topic", "topic_identity"]


def implementation(settings: KafkaSettings) -> Implementation:
    """The one place the client library is chosen (settings.client): its producer, consumer and admin."""
    if settings.client == "kafka-python":
        from .kafka_python import IMPLEMENTATION
    else:
        from .confluent import IMPLEMENTATION
    return IMPLEMENTATION


def open_admin(settings: KafkaSettings) -> Admin:
    """Topics, ids, offsets and groups of settings.topic's broker, without reading a message."""
    return implementation(settings).admin(settings)


def open_producer(settings: KafkaSettings, report: DeliveryReport) -> Producer:
    return implementation(settings).producer(settings, report)


def open_consumer(settings: KafkaSettings, group_id: str | None = None, from_beginning: bool = True) -> Consumer:
    """A consumer of settings.topic: by assignment (assign, read_columns), or in `group_id` (subscribe)."""
    return implementation(settings).consumer(settings, group_id, from_beginning)


def check_reachable(settings: KafkaSettings) -> dict[str, int]:
    """Fail fast with one clear line when no broker answers; return {topic: partition count}."""
    with open_admin(settings) as admin:
        return admin.topics()


def ensure_topic(settings: KafkaSettings, partitions: int) -> int:
    """Create the topic if missing; return its partition count."""
    with open_admin(settings) as admin:
        existing = admin.topics()
        if settings.topic in existing:
            return existing[settings.topic]
        admin.create_topic(partitions)
    log.info("created topic %s with %d partitions", settings.topic, partitions)
    return partitions


def recreate_topic(settings: KafkaSettings, partitions: int) -> None:
    """Delete the topic and create it anew, empty. Kafka deletes a topic in the background: wait until
    the broker no longer lists it, or the creation would find the old one."""
    with open_admin(settings) as admin:
        admin.delete_topic()
        deadline = time.monotonic() + max(30.0, settings.timeout_s)
        while settings.topic in admin.topics():
            if time.monotonic() > deadline:
                raise UserError(f"topic {settings.topic!r} is still being deleted at {settings.bootstrap_servers}; "
                                "try again in a minute")
            time.sleep(0.2)
        admin.create_topic(partitions)
    log.info("recreated topic %s with %d partitions", settings.topic, partitions)


def topic_identity(settings: KafkaSettings) -> dict[str, str]:
    """The cluster id and the topic id, where the broker has them. One that can't be read is logged, not
    fatal: the job has checked the broker already."""
    identity: dict[str, str | None] = {}
    with open_admin(settings) as admin:
        for key, ask in (("cluster_id", admin.cluster_id), ("topic_id", admin.topic_id)):
            try:
                identity[key] = ask()
            except Exception as error:  # noqa: BLE001 - either library's own errors
                log.warning("could not read the %s: %s", key.replace("_", " "), error)
    return {k: v for k, v in identity.items() if v}


def broker_count(settings: KafkaSettings) -> int:
    """Brokers the bootstrap servers list in their metadata now (0 while none answers): a starting node is
    ready when this says so."""
    with open_admin(settings) as admin:
        return admin.broker_count()


def library_versions() -> dict[str, str]:
    from . import confluent

    return {"librdkafka": confluent.library_version()}


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
