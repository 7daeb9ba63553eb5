"""The local broker: Apache Kafka in KRaft mode (a combined broker and controller, no ZooKeeper), run from
the jars `make setup` fetched (local/jars.py).

Its data lives in a folder (default `kafka-data/` in the repo), formatted on first start with
`kafka.tools.StorageTool format --standalone`, so a restart keeps every topic and message. The JVM is
tied to our process (PR_SET_PDEATHSIG), its heap bounded, its log in the data folder.
"""

from __future__ import annotations

import base64
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from ..config import REPO_DIR, UserError
from .java import java_executable
from .jars import KAFKA_VERSION, kafka_classpath

log = logging.getLogger(__name__)
_LIBRDKAFKA = logging.getLogger(__name__ + ".librdkafka")  # its lines while the broker starts are not news
_LIBRDKAFKA.propagate = False
_LIBRDKAFKA.addHandler(logging.NullHandler())

DEFAULT_DATA_DIR = REPO_DIR / "kafka-data"
DEFAULT_HEAP = "512m"
STATE_FILE = "sfcrime-node.json"  # the cluster id and controller port the storage was formatted with

LOG4J2 = """\
# Written by sfcrime: the broker logs to a file in its data folder, nothing to the console.
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = file
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log_file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
logger.state.name = state.change.logger
logger.state.level = warn
logger.request.name = kafka.request.logger
logger.request.level = warn
"""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: the JVM goes when we go, even on SIGKILL
    except OSError:
        pass
    os.setpgrp()  # Ctrl-C in the terminal reaches us only, and we stop the broker in order


def _cluster_id() -> str:
    """Kafka's Uuid text form: 16 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class KafkaNode:
    """`with KafkaNode(data_dir) as node: node.bootstrap_servers` — one KRaft broker+controller."""

    def __init__(self, data_dir: str | Path = DEFAULT_DATA_DIR, host: str = "127.0.0.1", port: int = 0,
                 heap: str = DEFAULT_HEAP, advertised_host: str | None = None,
                 scram_users: dict[str, str] | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = port or free_port(host)
        self.advertised_host = advertised_host or ("localhost" if host in ("127.0.0.1", "0.0.0.0") else host)
        self.heap = heap
        # With users, clients must log in with SCRAM-SHA-512 (SASL_PLAINTEXT). The users are created when the
        # storage is formatted (--add-scram); SCRAM does not work on the KRaft controller listener, which
        # stays PLAINTEXT on loopback. The first user is also the broker's own, for its inter-broker listener.
        self.scram_users = dict(scram_users or {})
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.advertised_host}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    # --------------------------------------------------------------------------------- configuration

    def _state(self) -> dict:
        """The cluster id and controller port, chosen once: the formatted storage records them."""
        path = self.data_dir / STATE_FILE
        if path.exists():
            return json.loads(path.read_text())
        return {"cluster_id": _cluster_id(), "controller_port": free_port("127.0.0.1"), "node_id": 1}

    def server_properties(self, state: dict) -> str:
        controller = f"127.0.0.1:{state['controller_port']}"
        protocol = "SASL_PLAINTEXT" if self.scram_users else "PLAINTEXT"
        sasl = []
        if self.scram_users:
            user, password = next(iter(self.scram_users.items()))
            sasl = ["sasl.enabled.mechanisms=SCRAM-SHA-512", "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
                    "listener.name.client.scram-sha-512.sasl.jaas.config="
                    f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{user}" password="{password}";']
        return "\n".join([
            "# Written by sfcrime (local/kafka.py) at each start; the storage itself is in log/.",
            "process.roles=broker,controller",
            f"node.id={state['node_id']}",
            f"controller.quorum.bootstrap.servers={controller}",
            f"listeners=CLIENT://{self.host}:{self.port},CONTROLLER://{controller}",
            f"advertised.listeners=CLIENT://{self.advertised_host}:{self.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=CLIENT",
            f"listener.security.protocol.map=CONTROLLER:PLAINTEXT,CLIENT:{protocol}",
            *sasl,
            f"log.dirs={self.data_dir / 'log'}",
            "num.partitions=3",
            # the replay creates its topic with the partitions it wants; a typo'd topic name should fail, not appear
            "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "",
        ])

    def _java(self, main_class: str, *args: str, log_level: str = "info") -> list[str]:
        """The JVM command for one of Kafka's main classes, logging to the data folder's server.log."""
        log4j = self.data_dir / "log4j2.properties"
        log4j.write_text(LOG4J2.format(level=log_level, log_file=self.log_file))
        return [java_executable(), f"-Xmx{self.heap}", f"-Xms{min(256, _megabytes(self.heap))}m",
                "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={log4j}", f"-Dkafka.logs.dir={self.data_dir}",
                "-cp", kafka_classpath(), main_class, *args]

    def _format_storage(self, state: dict, properties: Path) -> None:
        users = [f"SCRAM-SHA-512=[name={user},password={password}]" for user, password in self.scram_users.items()]
        command = self._java("kafka.tools.StorageTool", "format", "--standalone", "--ignore-formatted",
                             "-t", state["cluster_id"], "-c", str(properties),
                             *[arg for user in users for arg in ("--add-scram", user)], log_level="warn")
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise UserError(f"formatting Kafka's storage in {self.data_dir} failed: {detail[-1] if detail else result.returncode}")
        (self.data_dir / STATE_FILE).write_text(json.dumps(state))

    # ------------------------------------------------------------------------------------------ process

    def start(self, timeout_s: float = 60.0) -> "KafkaNode":
        if port_open(self.host, self.port):
            raise UserError(f"port {self.port} on {self.host} is already in use (another broker? pick one with --port)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        state = self._state()
        if port_open("127.0.0.1", state["controller_port"]):
            raise UserError(f"the controller port {state['controller_port']} of {self.data_dir} is in use: "
                            "is a broker already running on this data folder?")
        properties = self.data_dir / "server.properties"
        properties.write_text(self.server_properties(state))
        if not (self.data_dir / "log" / "meta.properties").exists():
            self._format_storage(state, properties)
        with open(self.data_dir / "console.out", "ab") as console:
            self.process = subprocess.Popen(self._java("kafka.Kafka", str(properties)), stdout=console,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            preexec_fn=_die_with_parent)
        self._wait_ready(timeout_s)
        log.info("Apache Kafka %s (KRaft) on %s, data in %s", KAFKA_VERSION, self.bootstrap_servers, self.data_dir)
        return self

    def client_properties(self) -> dict[str, str]:
        """What a client needs besides bootstrap.servers (librdkafka names), logged in as the first user."""
        if not self.scram_users:
            return {}
        user, password = next(iter(self.scram_users.items()))
        return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": user, "sasl.password": password}

    def _wait_ready(self, timeout_s: float) -> None:
        """Listening is not ready: wait until the broker answers metadata with itself in it."""
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise UserError(f"Kafka exited with code {self.process.returncode} at start; see {self.log_file}")
            if port_open(self.host, self.port, 0.2):
                admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "logger": _LIBRDKAFKA,
                                     **self.client_properties()})
                try:
                    if admin.list_topics(timeout=2).brokers:
                        return
                except Exception:  # not ready yet: KafkaException, or a timeout
                    pass
            if time.monotonic() > deadline:
                self.stop()
                raise UserError(f"Kafka did not get ready on {self.bootstrap_servers} within {timeout_s:g} s; see {self.log_file}")
            time.sleep(0.2)

    def stop(self, timeout_s: float = 30.0) -> None:
        """A controlled shutdown (SIGTERM): the log is flushed and closed cleanly for the next start."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would: for fault tests."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> "KafkaNode":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _megabytes(heap: str) -> int:
    """A JVM size ("512m", "1g") in megabytes."""
    number, unit = heap[:-1], heap[-1].lower()
    if not number.isdigit() or unit not in "mg":
        raise UserError(f"a heap size is like 512m or 1g, got {heap!r}")
    return int(number) * (1024 if unit == "g" else 1)


def run_foreground(host: str, port: int, data_dir: str | Path, heap: str) -> int:
    """`python -m sfcrime broker`: run until Ctrl-C, then stop the broker cleanly and return 0."""
    node = KafkaNode(data_dir, host=host, port=port, heap=heap)
    print(f"starting Apache Kafka {KAFKA_VERSION} (KRaft) ...", file=sys.stderr, flush=True)
    node.start()
    print(f"Kafka on {node.bootstrap_servers}, data in {node.data_dir}, log {node.log_file}; Ctrl-C to stop.",
          file=sys.stderr, flush=True)
    try:
        while node.process is not None and node.process.poll() is None:
            time.sleep(0.5)
        code = node.process.returncode if node.process else 0
        raise UserError(f"Kafka exited unexpectedly with code {code}; see {node.log_file}")
    except KeyboardInterrupt:
        print("stopping Kafka", file=sys.stderr, flush=True)
        return 0
    finally:
        node.stop()
