"""Shared fixtures: one real Apache Kafka broker per test session, a fresh topic per test, sample data files.

Set SFCRIME_TEST_BOOTSTRAP=host:port to run the integration tests against an existing Kafka instead.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATASET = REPO / "police-department-calls-for-service.json.gz"
PYTHON = sys.executable


def pytest_configure(config):
    """Started in the background by a shell without job control, pytest (and every process a test starts)
    inherits SIGINT ignored, and the Ctrl-C tests would press Ctrl-C on processes that cannot hear it.
    A handler here is reset to the default in each child, as in a terminal."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# Each test's seconds in a fresh-clone `make test` (setup, call and teardown), to order the tests by.
DURATIONS = Path(__file__).with_name("durations.json")
_durations: dict[str, float] = {}


def pytest_addoption(parser):
    parser.addoption("--record-durations", action="store_true",
                     help=f"write each test's seconds to {DURATIONS.relative_to(REPO)} (make test orders by them)")


def pytest_collection_modifyitems(items):
    """Longest first, by the seconds recorded in durations.json (a test not there: 30 s if marked slow, else
    0). With several workers that take work from each other (make test), the last to start are short ones,
    and the workers end together instead of one running a long test alone."""
    recorded = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    items.sort(key=lambda item: recorded.get(item.nodeid, 30.0 if item.get_closest_marker("slow") else 0.0),
               reverse=True)


def pytest_runtest_logreport(report):
    _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session):
    """--record-durations: this run's seconds replace those recorded for the same tests."""
    if session.config.getoption("--record-durations") and not hasattr(session.config, "workerinput"):
        recorded = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
        ordered = sorted({**recorded, **_durations}.items(), key=lambda kv: -kv[1])
        DURATIONS.write_text(json.dumps({name: round(seconds, 1) for name, seconds in ordered}, indent=0) + "\n")


QUICK_JIT = "-XX:TieredStopAtLevel=1"
QUICK_SPARK_JVM = f"{QUICK_JIT} -XX:+UseSerialGC"  # a test's Spark JVM: see quick_jvms


@pytest.fixture(scope="session", autouse=True)
def quick_jvms(tmp_path_factory):
    """The JVMs tests start (Spark's, through SPARK_CONF_DIR; a standalone cluster's master and workers,
    through SPARK_DAEMON_JAVA_OPTS; Kafka's, through KAFKA_OPTS) use the C1 compiler only, and Spark's the
    serial garbage collector. (A master or worker took about 14 s of CPU with C2 and G1, 5.5 s with these.)

    A test's JVM lives a minute or two: on 2 cores C2's compiler threads take more CPU than the code they
    optimise gives back, and a test job runs in about half the time without them (measured side by side).
    G1's concurrent threads cost a small heap's job CPU too: a 3,000-call --once took a median of 21.7
    core-seconds with the serial collector against 24.4 with G1 (8 alternated runs each). The suite's four
    workers share 2 cores, so CPU is its time. Only the JIT and the collector differ, never what runs.
    (Kafka's own start sets a collector; two would stop the JVM.)
    """
    import shutil

    import pyspark

    saved = {name: os.environ.get(name) for name in ("SPARK_CONF_DIR", "SPARK_DAEMON_JAVA_OPTS", "KAFKA_OPTS")}
    source = Path(saved["SPARK_CONF_DIR"] or Path(pyspark.__file__).parent / "conf")
    conf = tmp_path_factory.mktemp("spark-conf")
    if source.is_dir():
        shutil.copytree(source, conf, dirs_exist_ok=True)
    with open(conf / "spark-defaults.conf", "a", encoding="utf-8") as defaults:
        defaults.write(f"\nspark.driver.extraJavaOptions {QUICK_SPARK_JVM}\n"
                       f"spark.executor.extraJavaOptions {QUICK_SPARK_JVM}\n")
    os.environ["SPARK_CONF_DIR"] = str(conf)
    os.environ["SPARK_DAEMON_JAVA_OPTS"] = f"{saved['SPARK_DAEMON_JAVA_OPTS'] or ''} {QUICK_SPARK_JVM}".strip()
    os.environ["KAFKA_OPTS"] = f"{saved['KAFKA_OPTS'] or ''} {QUICK_JIT}".strip()
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


# Each worker's session broker serves one test at a time and idles between them, the whole run long: one
# network thread, two I/O threads and a no-op record every 5 s (Kafka's default 0.5 s) took it from 3.2% of a
# core to 1.8% idle (side by side, 90 s each), about 30 s of the suite's time on 2 cores.
QUIET_BROKER = {"num.network.threads": "1", "num.io.threads": "2", "background.threads": "2",
                "metadata.max.idle.interval.ms": "5000"}


@pytest.fixture(scope="session")
def bootstrap_servers(tmp_path_factory):
    existing = os.environ.get("SFCRIME_TEST_BOOTSTRAP")
    if existing:
        yield existing
        return
    from sfcrime.local.kafka import KafkaNode

    with KafkaNode(tmp_path_factory.mktemp("kafka"), properties=QUIET_BROKER) as broker:
        yield broker.bootstrap_servers


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    """A real PostgreSQL on a free port, started as a user would (`python -m sfcrime postgres`), for the
    session; its URL. Set SFCRIME_TEST_POSTGRES=URL to use an existing server instead."""
    if os.environ.get("SFCRIME_TEST_POSTGRES"):
        yield os.environ["SFCRIME_TEST_POSTGRES"]
        return
    import re
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path_factory.mktemp("postgres")
    server = subprocess.Popen([PYTHON, "-m", "sfcrime", "postgres", "--port", str(port), "--data-dir",
                               str(folder / "data")], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=(folder / "server.err").open("w"), text=True, start_new_session=True)
    line = server.stdout.readline()
    match = re.search(r"--results (postgresql://\S+)", line)
    assert match, line + (folder / "server.err").read_text()
    yield match.group(1)
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(60)


@pytest.fixture
def results_db(postgres_url):
    """A fresh database on the test server, as a URL."""
    name = f"t{uuid.uuid4().hex[:12]}"
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield postgres_url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def topic(request):
    name = request.node.name.replace("[", "-").replace("]", "")[:40]
    return f"t-{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def kafka(bootstrap_servers, topic):
    from sfcrime.kafka_settings import KafkaSettings

    return KafkaSettings(bootstrap_servers=bootstrap_servers, topic=topic, timeout_s=10)


@pytest.fixture(scope="session")
def all_records():
    with gzip.open(DATASET, "rt", encoding="utf-8") as f:
        return json.load(f)


def write_calls(path: Path, records: list, compress: str | None = None) -> Path:
    text = json.dumps(records, indent=4)
    if compress == "gz":
        path = path.with_suffix(".json.gz")
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    elif compress == "bz2":
        import bz2

        path = path.with_suffix(".json.bz2")
        with bz2.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def sample_records(all_records):
    """3,000 consecutive calls from the file (newest-first, about 22 hours), one repeated call included."""
    sample = all_records[108_500:111_500]
    assert sum(1 for r in sample if r["crime_id"] == "183131152") == 2
    return sample


@pytest.fixture(scope="session")
def sample_file(tmp_path_factory, sample_records):
    return write_calls(tmp_path_factory.mktemp("data") / "sample", sample_records, "gz")


def kill_if_running(process: subprocess.Popen) -> None:
    """A test's cleanup: a command it started in a session of its own, still running after a failure, goes
    with its JVM and Python workers (SIGKILL to the process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def run_cli(*args, timeout=120, env=None, input_text=None):
    """Run `python -m sfcrime ...` (or a script) as a user would; return the CompletedProcess."""
    command = [PYTHON, *args] if str(args[0]).endswith(".py") else [PYTHON, "-m", "sfcrime", *args]
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=full_env,
                          input=input_text)


def read_topic(bootstrap_servers: str, topic: str, expected: int, timeout_s: float = 30.0) -> list:
    """Read a topic with confluent-kafka directly (independently of sfcrime's client seam)."""
    import time

    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": "test-reader",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})  # a start deleted: the first kept
    metadata = consumer.list_topics(topic, timeout=10)
    partitions = sorted(metadata.topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    messages, deadline = [], time.monotonic() + timeout_s
    while len(messages) < expected and time.monotonic() < deadline:
        for message in consumer.consume(1000, 0.5):
            assert message.error() is None, message.error()
            messages.append(message)
    # a little longer, to see any message beyond what was expected
    for message in consumer.consume(1000, 1.0):
        messages.append(message)
    consumer.close()
    return messages


def produce_raw(bootstrap_servers: str, topic: str, values: list[bytes | None], partition: int | None = None,
                partitions: int = 3, keys: list[bytes | None] | None = None):
    """Write messages with confluent-kafka directly (hostile input for the job, gaps for verify), creating
    the topic first if needed (our broker does not create topics on first use); every one must be acked."""
    from confluent_kafka import KafkaException, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    if topic not in admin.list_topics(timeout=10).topics:
        try:
            admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout=30)
        except KafkaException as error:
            assert "already exists" in str(error), error
    failures = []
    producer = Producer({"bootstrap.servers": bootstrap_servers, "acks": "all"})
    on_delivery = lambda err, msg: failures.append(err) if err else None  # noqa: E731
    for value, key in zip(values, keys or [None] * len(values)):
        if partition is None:
            producer.produce(topic, value, key, on_delivery=on_delivery)
        else:
            producer.produce(topic, value, key, partition=partition, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert not failures, failures[:3]


def wait_for(what: str, read, done, timeout: float = 60.0, alive=()):
    """Poll `read()` until `done(value)`, failing at once if a process in `alive` ends; fail with the last
    value seen."""
    deadline, value = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        for process in alive:
            assert process.poll() is None, f"ended while waiting for {what}"
        value = read()
        if done(value):
            return value
        time.sleep(0.3)
    raise AssertionError(f"not within {timeout:g} s: {what}; last seen: {value!r}")
