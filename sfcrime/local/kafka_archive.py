"""A class-data archive (the JDK's CDS) for Kafka's JVMs: the broker, its storage format and the console
tools map Kafka's classes, already parsed and verified, instead of loading them again from 93 jars. A broker
is ready in about 2.6 s instead of 4.0 s on 2 cores, on a third less CPU (`bench broker`).

`make setup` makes it from a broker's short run (a topic made, written and read back:
setup.make_kafka_archive); KafkaNode and the tools' scripts start their JVMs on it. As with Spark's archive
(class_archive.py), the JVM checks it against its own build and the class path and drops one that no longer
matches without a word: a stale archive costs time, never an answer. SFCRIME_CLASS_ARCHIVE=off starts Kafka
as usual.
"""

from __future__ import annotations

from pathlib import Path

from .class_archive import ARCHIVE_DIR, QUIET, archive_key, enabled
from .jars import KAFKA_VERSION, kafka_classpath
from .java import java_executable


def archive_path() -> Path:
    """The archive for this Kafka and this java: another of either needs its own."""
    return ARCHIVE_DIR / f"kafka-{KAFKA_VERSION}-{archive_key(java_executable(), kafka_classpath())}.jsa"


def java_options() -> list[str]:
    """Options for a Kafka JVM to start on the archive; none when there is none, or it is turned off."""
    if not enabled():
        return []
    archive = archive_path()
    if not archive.is_file():
        return []
    return [f"-XX:SharedArchiveFile={archive}", *QUIET.split()]
