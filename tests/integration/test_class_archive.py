"""The class-data archives `make setup` makes: a Spark JVM started by python maps Spark's and keeps every
setting of the conf folder (class_archive.py); the broker and Kafka's console tools map Kafka's
(kafka_archive.py); a stale archive is dropped without a word."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from sfcrime.local import class_archive, kafka_archive
from sfcrime.local.jars import kafka_classpath, spark_home
from sfcrime.local.kafka import KafkaNode
from sfcrime.local.setup import make_kafka_archive
from sfcrime.local.java import java_executable
from tests.conftest import PYTHON, REPO

BIN = Path(PYTHON).parent

pytestmark = pytest.mark.slow

SESSION = """
import json, sys
from pathlib import Path
from sfcrime.local import class_archive
if len(sys.argv) > 1:
    class_archive.archive_path = lambda: Path(sys.argv[1])
from sfcrime.stream.session import build_session
spark = build_session("archive-test", "local[1]", {"spark.ui.enabled": "false"})
pid = spark.sparkContext._gateway.proc.pid
print(json.dumps({
    "sum": spark.range(10).selectExpr("sum(id)").collect()[0][0],
    "maps": Path(f"/proc/{pid}/maps").read_text(),
    "arguments": list(spark._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments()),
    "jars": spark.conf.get("spark.jars", ""),
}))
spark.stop()
"""


def start_session(*args):
    done = subprocess.run([PYTHON, "-c", SESSION, *args], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    *printed, answer = done.stdout.strip().splitlines()
    return json.loads(answer), "\n".join(printed) + done.stderr  # what the JVM printed, and pyspark


def test_spark_started_by_python_maps_the_archive_and_keeps_the_conf_folders_settings():
    archive = class_archive.archive_path()
    assert archive.is_file(), f"make setup made no class-data archive: see {class_archive.ARCHIVE_DIR / 'training.log'}"
    assert class_archive.make().endswith("(already made)")  # a second set-up does nothing
    conf = Path(os.environ["SPARK_CONF_DIR"])  # the tests' copy of the venv's conf folder (conftest.quick_jvms)
    session, stderr = start_session()
    assert session["sum"] == 45
    assert str(archive) in session["maps"], "the JVM did not map the archive"
    assert "-XX:TieredStopAtLevel=1" in session["arguments"]  # the conf folder's spark.driver.extraJavaOptions
    jars = class_archive.defaults_value(conf / "spark-defaults.conf", "spark.jars").split(",")
    assert jars and [j.removeprefix("file://") for j in session["jars"].split(",")] == jars  # its spark-defaults.conf
    assert " INFO " not in stderr and "cds" not in stderr  # its log4j2.properties: Spark's INFO lines stay off


def test_an_archive_the_jvm_cannot_use_is_dropped_without_a_word(tmp_path):
    """An archive of another class path, as after the venv moved: the JVM would print a warning on stdout."""
    stale, elsewhere = tmp_path / "stale.jsa", tmp_path / "conf"
    elsewhere.mkdir()
    subprocess.run([java_executable(), f"-XX:ArchiveClassesAtExit={stale}", "-cp", f"{elsewhere}:{spark_home()}/jars/*",
                    "org.apache.spark.launcher.Main", "org.apache.spark.deploy.SparkSubmit", "--version"],
                   capture_output=True, timeout=120)  # Spark's small launcher (it exits 1 here): a 1 MB archive, 2 s
    assert stale.is_file()
    session, stderr = start_session(str(stale))
    assert session["sum"] == 45
    assert str(stale) not in session["maps"]
    assert "cds" not in stderr and "archive" not in stderr.lower()


def test_the_broker_and_kafkas_console_tools_map_kafkas_archive(tmp_path):
    archive = kafka_archive.archive_path()
    assert archive.is_file(), "make setup made no class-data archive of Kafka's JVMs"
    assert make_kafka_archive().endswith("(already made)")  # a second set-up does nothing
    assert archive.parent == class_archive.ARCHIVE_DIR and class_archive.archive_path().is_file()  # neither removed the other
    with KafkaNode(tmp_path / "kafka") as node:
        assert str(archive) in Path(f"/proc/{node.process.pid}/maps").read_text(), "the broker did not map it"
        loads = tmp_path / "classes.txt"
        env = {**os.environ, "KAFKA_OPTS": f"{os.environ.get('KAFKA_OPTS', '')} -Xlog:class+load=info:file={loads}"}
        listed = subprocess.run([str(BIN / "kafka-topics.sh"), "--bootstrap-server", node.bootstrap_servers, "--list"],
                                capture_output=True, text=True, timeout=90, env=env)
        assert listed.returncode == 0, listed.stderr
        assert "cds" not in listed.stdout + listed.stderr
    shared = [line for line in loads.read_text().splitlines() if "source: shared objects file (top)" in line]
    assert any(" org.apache.kafka.clients." in line for line in shared), "the tool loaded Kafka's classes from its jars"


def test_a_kafka_archive_the_jvm_cannot_use_is_dropped_without_a_word(tmp_path, monkeypatch):
    """An archive of another class path, as after the repo moved: the broker starts as usual, saying nothing."""
    stale, elsewhere = tmp_path / "stale.jsa", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run([java_executable(), f"-XX:ArchiveClassesAtExit={stale}", "-cp", f"{elsewhere}:{kafka_classpath()}",
                    "kafka.tools.StorageTool", "random-uuid"], capture_output=True, timeout=120)
    assert stale.is_file()
    monkeypatch.setattr(kafka_archive, "archive_path", lambda: stale)
    with KafkaNode(tmp_path / "kafka") as node:
        assert str(stale) not in Path(f"/proc/{node.process.pid}/maps").read_text()
        assert f"-XX:SharedArchiveFile={stale}" in Path(f"/proc/{node.process.pid}/cmdline").read_text()
    console = (tmp_path / "kafka" / "console.out").read_text()
    assert "cds" not in console.lower() and "archive" not in console.lower(), console
