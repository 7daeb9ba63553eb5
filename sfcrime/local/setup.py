"""`make setup`'s Java half: a Java 17+, Apache Kafka and Spark's Kafka connector at pinned versions,
Kafka's own console tools on the venv's PATH, and the class-data archives that start the JVMs faster. Run as
`python -m sfcrime.local.setup`; a second run only checks. What it fetches and where: README, "Set-up".
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
import time
from pathlib import Path

from ..clients import ensure_topic, open_consumer, open_producer
from ..clients.seam import DeliveryReport
from ..errors import UserError
from ..kafka_settings import KafkaSettings
from . import class_archive, jars, kafka_archive, pyspark_zips
from .java import install_if_missing, java_executable
from .kafka import KafkaNode

# Kafka's own scripts (bin/*.sh in its tarball) and the classes they run.
KAFKA_TOOLS = {
    "kafka-console-consumer.sh": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-console-producer.sh": "org.apache.kafka.tools.ConsoleProducer",
    "kafka-topics.sh": "org.apache.kafka.tools.TopicCommand",
    "kafka-consumer-groups.sh": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-get-offsets.sh": "org.apache.kafka.tools.GetOffsetShell",
    "kafka-storage.sh": "kafka.tools.StorageTool",
}

KAFKA_TRAINING_MESSAGES = 2000  # for Kafka's class archive

TOOLS_LOG4J2 = jars.stderr_log4j2("Kafka's tools-log4j2: warnings and errors to stderr, as its tarball's bin/ scripts do.",
                                  "warn", "[%d] %p %m (%c)%n")

TOOL_SCRIPT = """\
#!/bin/sh
# Apache Kafka {version}'s {name}, from the jars `make setup` fetched (sfcrime/local/setup.py writes this),
# on Kafka's class archive when there is one (sfcrime/local/kafka_archive.py).
{bootstrap}ARCHIVE="{archive}"
CDS=""
case "$SFCRIME_CLASS_ARCHIVE" in
  [Oo][Ff][Ff]) ;;  # off in any case, as class_archive.enabled() reads it
  *) [ -f "$ARCHIVE" ] && CDS="-XX:SharedArchiveFile=$ARCHIVE {quiet}" ;;
esac
exec "{java}" ${{KAFKA_HEAP_OPTS:--Xmx256m}} $CDS $KAFKA_OPTS -Dlog4j2.configurationFile="{log4j}" \\
  -cp "{classpath}" {main_class} "$@"
"""


# Kafka's tools refuse to run without --bootstrap-server (a Java stack trace for kafka-topics.sh --describe),
# though every sfcrime command defaults to the same broker: the scripts of the tools that take one give it.
BOOTSTRAP_DEFAULT = """\
# --bootstrap-server defaults to $KAFKA_BOOTSTRAP_SERVERS, else localhost:9092, as in every sfcrime command.
SERVER="${KAFKA_BOOTSTRAP_SERVERS:-localhost:9092}"
NAMED=""
for ARG in "$@"; do
  case "$ARG" in
    --bootstrap-server|--bootstrap-server=*|--bootstrap-controller|--bootstrap-controller=*|--broker-list|--broker-list=*)
      NAMED=1 ;;
    --help) echo "(sfcrime: --bootstrap-server defaults to \\$KAFKA_BOOTSTRAP_SERVERS, else localhost:9092; here $SERVER)" >&2 ;;
  esac
done
[ -n "$NAMED" ] || set -- --bootstrap-server "$SERVER" "$@"
"""
NO_BOOTSTRAP_TOOLS = {"kafka-storage.sh"}  # formats a data folder: no broker to talk to


def tool_script(name: str, main_class: str, java: str, log4j: Path | str, classpath: str, archive: Path | str,
                quiet: str = class_archive.QUIET) -> str:
    """The sh script that runs one of Kafka's tools on our jars."""
    return TOOL_SCRIPT.format(version=jars.KAFKA_VERSION, name=name, java=java, log4j=log4j, classpath=classpath,
                              main_class=main_class, archive=archive, quiet=quiet,
                              bootstrap="" if name in NO_BOOTSTRAP_TOOLS else BOOTSTRAP_DEFAULT)


def install_kafka_tools(bin_dir: Path) -> list[Path]:
    """Kafka's console tools as scripts in bin_dir (the venv's bin, on PATH once it is activated)."""
    log4j = jars.JARS_DIR / "tools-log4j2.properties"
    log4j.write_text(TOOLS_LOG4J2)
    written = []
    for name, main_class in KAFKA_TOOLS.items():
        script = bin_dir / name
        script.write_text(tool_script(name, main_class, java_executable(), log4j, jars.kafka_classpath(),
                                      kafka_archive.archive_path()))
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        written.append(script)
    return written


def make_kafka_archive() -> str:
    """Kafka's class-data archive (kafka_archive.py), written by a broker when it stops after a short run
    (some seconds, once); a second run finds it and does nothing."""
    return class_archive.make_once(kafka_archive.archive_path(), "Kafka's JVMs", "a broker's short run (some seconds, once)",
                                   _kafka_training_run, "Kafka starts as usual, about a second slower")


def _kafka_training_run(staging: Path) -> str | None:
    """A broker that writes the archive to `staging` as it stops, after what it does for us, through our own
    clients: a topic made, calls written as the replay writes them, read back by a group. Why it failed, or None."""
    with tempfile.TemporaryDirectory(prefix=".kafka-training-", dir=class_archive.ARCHIVE_DIR) as tmp:
        node = KafkaNode(Path(tmp) / "data", archive_to=staging)
        try:
            settings = KafkaSettings(bootstrap_servers=node.start().bootstrap_servers, topic="training")
            ensure_topic(settings, 3)
            with open_producer(settings, DeliveryReport()) as producer:
                for i in range(KAFKA_TRAINING_MESSAGES):
                    producer.send(str(i).encode(), b'{"crime_id": "%d"}' % i)
                producer.flush(30)
            with open_consumer(settings, group_id="training") as consumer:
                consumer.subscribe()
                read, deadline = 0, time.monotonic() + 30
                while read < KAFKA_TRAINING_MESSAGES and time.monotonic() < deadline:
                    read += len(consumer.poll(500, 1))
        except Exception as error:  # set-up goes on without it: Kafka only starts slower
            return str(error).splitlines()[0] if str(error) else type(error).__name__
        finally:
            node.stop()  # the JVM writes the archive as it exits
    return None


def main() -> int:
    try:
        print(install_if_missing(), flush=True)
        jars.install(jars.kafka_jars(), f"Apache Kafka {jars.KAFKA_VERSION}")
        connector = jars.connector_jars()
        jars.install(connector, f"Spark's Kafka connector for Spark {jars.spark_version()}")
        print(jars.build_json_check(), flush=True)
        defaults = jars.install_spark_conf(connector, jars.json_check_jar_paths())
        if defaults:
            print(f"Spark's Kafka connector is on spark-submit's classpath ({defaults})", flush=True)
        else:
            print("pyspark is outside this repo's .venv: pass the connector yourself, e.g. "
                  f"spark-submit --packages {jars.connector_coordinate()} data_stream.py", flush=True)
        print(make_kafka_archive(), flush=True)
        bin_dir = Path(sys.prefix) / "bin"
        if sys.prefix != sys.base_prefix and os.access(bin_dir, os.W_OK):
            tools = install_kafka_tools(bin_dir)
            print(f"Kafka's console tools ({', '.join(t.name for t in tools[:3])}, ...) are in {bin_dir}", flush=True)
        print(pyspark_zips.make(), flush=True)
        print(class_archive.make(), flush=True)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
