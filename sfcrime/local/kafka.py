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
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from ..clients import port_open
from ..config import REPO_DIR
from ..errors import UserError
from ..kafka_settings import KafkaSettings
from . import kafka_archive
from .java import java_executable
from .jars import KAFKA_VERSION, kafka_classpath
from .tls import CA_FILE, make_certificates, write_private

log = logging.getLogger(__name__)

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
    """A port nothing is bound to, for a JVM to listen on a few seconds later.

    Taken below the kernel's ephemeral range: a port from bind(0) is in that range, where any outgoing
    connection, or another JVM's own random port, may take it before Kafka binds it (CI once saw
    "Address already in use" for a controller port picked that way)."""
    lowest_ephemeral = _ephemeral_ports()[0]
    if lowest_ephemeral > PICKED_PORTS_FROM + 1000:
        for port in secrets.SystemRandom().sample(range(PICKED_PORTS_FROM, lowest_ephemeral), 64):
            if port in _HANDED_OUT:  # not bound yet, perhaps: a broker's client and controller ports must differ
                continue
            with socket.socket() as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
            _HANDED_OUT.add(port)
            return port
    with socket.socket() as sock:  # an unusual range, or a crowded machine: the kernel's pick
        sock.bind((host, 0))
        return sock.getsockname()[1]


PICKED_PORTS_FROM = 20000
_HANDED_OUT: set[int] = set()


def _ephemeral_ports() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: the JVM goes when we go, even on SIGKILL
    except OSError:
        pass
    os.setpgrp()  # Ctrl-C in the terminal reaches us only, and we stop the broker in order


def generated_users() -> dict[str, str]:
    """The secured broker's one user, with a password nobody typed (it goes to client.properties only)."""
    return {"sfcrime": secrets.token_urlsafe(18)}


def _cluster_id() -> str:
    """Kafka's Uuid text form: 16 random bytes, URL-safe base64 without padding; like Kafka's own
    Uuid.randomUuid, never one starting with "-", which a command line would take for an option."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class KafkaNode:
    """`with KafkaNode(data_dir) as node: node.bootstrap_servers` — one KRaft broker+controller.

    Security of the client listener: PLAINTEXT by default; with `scram_users`, SASL_PLAINTEXT demanding
    SCRAM-SHA-512; with `tls`, SASL_SSL (a user and password are generated and kept in the data folder if
    none are given). Users are created when the storage is formatted (`--add-scram`). SCRAM does not work on
    the KRaft controller listener, so that one stays PLAINTEXT on loopback. In a cluster (`voters`), each node
    is one of a static controller quorum and topics default to `replication` copies.
    """

    def __init__(self, data_dir: str | Path = DEFAULT_DATA_DIR, host: str = "127.0.0.1", port: int = 0,
                 heap: str = DEFAULT_HEAP, advertised_host: str | None = None,
                 scram_users: dict[str, str] | None = None, tls: bool = False,
                 node_id: int = 1, voters: dict[int, int] | None = None, cluster_id: str | None = None,
                 properties: dict[str, str] | None = None, archive_to: Path | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = port or free_port(host)
        self.advertised_host = advertised_host or ("localhost" if host in ("127.0.0.1", "0.0.0.0") else host)
        self.heap = heap
        self.scram_users = dict(scram_users or {})
        self.tls = tls
        self.node_id = node_id
        self.voters = voters  # {node id: controller port}; None for a single node (--standalone)
        self.cluster_id = cluster_id  # shared by a cluster's nodes; a new one for a single node
        self.properties = dict(properties or {})  # more server settings, after ours (the last of a key wins)
        self.archive_to = archive_to  # set-up's training run: the broker writes Kafka's class archive when it stops
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.advertised_host}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def protocol(self) -> str:
        return "SASL_SSL" if self.tls else "SASL_PLAINTEXT" if self.scram_users else "PLAINTEXT"

    # --------------------------------------------------------------------------------- configuration

    def _state(self) -> dict:
        """The cluster id, controller port and users, chosen once: the formatted storage records them."""
        path = self.data_dir / STATE_FILE
        if path.exists():
            state = json.loads(path.read_text())
        else:
            controller_port = (self.voters or {}).get(self.node_id) or free_port("127.0.0.1")
            state = {"cluster_id": self.cluster_id or _cluster_id(), "controller_port": controller_port,
                     "node_id": self.node_id}
        if self.scram_users:
            state["users"] = self.scram_users
        elif self.tls:
            state.setdefault("users", generated_users())
        self.scram_users = state.get("users", {})
        return state

    def _write_state(self, state: dict) -> None:
        write_private(self.data_dir / STATE_FILE, json.dumps(state))  # it may hold a generated password

    def server_properties(self, state: dict) -> str:
        from ..clients import java_client_config

        controller = f"127.0.0.1:{state['controller_port']}"
        nodes = len(self.voters or {1: 0})
        lines = [
            "# Written by sfcrime (local/kafka.py) at each start; the storage itself is in log/.",
            "process.roles=broker,controller",
            f"node.id={state['node_id']}",
            (f"controller.quorum.voters={','.join(f'{n}@127.0.0.1:{p}' for n, p in sorted(self.voters.items()))}"
             if self.voters else f"controller.quorum.bootstrap.servers={controller}"),
            f"listeners=CLIENT://{self.host}:{self.port},CONTROLLER://{controller}",
            f"advertised.listeners=CLIENT://{self.advertised_host}:{self.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=CLIENT",
            f"listener.security.protocol.map=CONTROLLER:PLAINTEXT,CLIENT:{self.protocol}",
            f"log.dirs={self.data_dir / 'log'}",
            "num.partitions=3",
            # the replay creates its topic with the partitions it wants; a typo'd topic name should fail, not appear
            "auto.create.topics.enable=false",
            f"default.replication.factor={nodes}",
            f"min.insync.replicas={min(2, nodes)}",
            f"offsets.topic.replication.factor={nodes}",
            f"transaction.state.log.replication.factor={nodes}",
            f"transaction.state.log.min.isr={min(2, nodes)}",
            f"share.coordinator.state.topic.replication.factor={nodes}",
            f"share.coordinator.state.topic.min.isr={min(2, nodes)}",
            "group.initial.rebalance.delay.ms=0",
        ]
        if self.scram_users:
            user, password = next(iter(self.scram_users.items()))  # the broker's own login, between brokers
            lines += ["sasl.enabled.mechanisms=SCRAM-SHA-512", "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
                      "listener.name.client.scram-sha-512.sasl.jaas.config=" + java_client_config(
                          {"sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user, "sasl.password": password})[
                          "sasl.jaas.config"]]
        if self.tls:
            ca, keystore = make_certificates(self.data_dir, [self.advertised_host, "localhost", "127.0.0.1", self.host])
            lines += ["ssl.keystore.type=PEM", f"ssl.keystore.location={keystore}",
                      "ssl.truststore.type=PEM", f"ssl.truststore.location={ca}"]
        lines += [f"{key}={value}" for key, value in self.properties.items()]
        return "\n".join(lines) + "\n"

    def _java(self, main_class: str, *args: str, log_level: str = "info") -> list[str]:
        """The JVM command for one of Kafka's main classes, logging to the data folder's server.log; extra JVM
        options from KAFKA_OPTS, as Kafka's own scripts take them. It maps Kafka's class archive when set-up
        made one (kafka_archive.py)."""
        log4j = self.data_dir / "log4j2.properties"
        log4j.write_text(LOG4J2.format(level=log_level, log_file=self.log_file))
        if self.archive_to is None:
            archive = kafka_archive.java_options()
        else:  # only the broker writes it: the storage format's JVM would write one too, of its own classes
            archive = [f"-XX:ArchiveClassesAtExit={self.archive_to}"] if main_class == "kafka.Kafka" else []
        return [java_executable(), f"-Xmx{self.heap}", f"-Xms{min(256, _megabytes(self.heap))}m",
                "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true", *archive,
                *shlex.split(os.environ.get("KAFKA_OPTS", "")),
                f"-Dlog4j2.configurationFile={log4j}", f"-Dkafka.logs.dir={self.data_dir}",
                "-cp", kafka_classpath(), main_class, *args]

    def _format_storage(self, state: dict, properties: Path) -> None:
        users = [f"SCRAM-SHA-512=[name={user},password={password}]" for user, password in self.scram_users.items()]
        command = self._java("kafka.tools.StorageTool", "format", *([] if self.voters else ["--standalone"]),
                             "--ignore-formatted", f"--cluster-id={state['cluster_id']}", "-c", str(properties),
                             *[arg for user in users for arg in ("--add-scram", user)], log_level="warn")
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode:
            detail = [line for line in (result.stderr or result.stdout).strip().splitlines() if "password" not in line]
            raise UserError(f"formatting Kafka's storage in {self.data_dir} failed: {detail[-1] if detail else result.returncode}")
        self._write_state(state)

    def client_properties(self) -> dict[str, str]:
        """What a client needs besides bootstrap.servers (librdkafka names), logged in as the first user."""
        if not self.scram_users:
            return {}
        user, password = next(iter(self.scram_users.items()))
        properties = {"security.protocol": self.protocol, "sasl.mechanism": "SCRAM-SHA-512",
                      "sasl.username": user, "sasl.password": password}
        if self.tls:
            properties["ssl.ca.location"] = str(self.data_dir / CA_FILE)
        return properties

    def write_client_config(self) -> Path:
        """A client properties file in Kafka's own format (what `kafka-console-consumer.sh --command-config`
        and our `--kafka-config-file` take), readable by its owner only."""
        from ..clients import java_client_config

        path = self.data_dir / "client.properties"
        lines = ["# Written by `python -m sfcrime broker`: log in to this broker. Keep it private.",
                 f"bootstrap.servers={self.bootstrap_servers}"]
        lines += [f"{key}={value}" for key, value in java_client_config(self.client_properties()).items()]
        write_private(path, "\n".join(lines) + "\n")
        return path

    # ------------------------------------------------------------------------------------------ process

    def launch(self) -> None:
        """Start the JVM (formatting the storage on first start) without waiting for it to be ready."""
        if port_open(self.host, self.port):
            raise UserError(f"port {self.port} on {self.host} is already in use (another broker? pick one with --port)")
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise UserError(f"--data-dir {self.data_dir} is a file: it names a folder for Kafka's data")
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # no permission, a file above it
            raise UserError(f"cannot use --data-dir {self.data_dir}: {error.strerror or error}") from None
        state = self._state()
        if port_open("127.0.0.1", state["controller_port"]):
            raise UserError(f"the controller port {state['controller_port']} of {self.data_dir} is in use: "
                            "is a broker already running on this data folder?")
        properties = self.data_dir / "server.properties"
        write_private(properties, self.server_properties(state))
        if not (self.data_dir / "log" / "meta.properties").exists():
            self._format_storage(state, properties)
        with open(self.data_dir / "console.out", "ab") as console:
            self.process = subprocess.Popen(self._java("kafka.Kafka", str(properties)), stdout=console,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            preexec_fn=_die_with_parent)

    def start(self, timeout_s: float = 60.0) -> "KafkaNode":
        self.launch()
        self.wait_ready(timeout_s)
        # debug: each caller says it in its own words (the broker command, the demo); a second line repeated it
        log.debug("Apache Kafka %s (KRaft) on %s, data in %s", KAFKA_VERSION, self.bootstrap_servers, self.data_dir)
        return self

    def wait_ready(self, timeout_s: float, brokers: int = 1) -> None:
        """Listening is not ready: wait until the broker answers metadata with `brokers` brokers in it."""
        from ..clients import broker_count

        asking = KafkaSettings(bootstrap_servers=self.bootstrap_servers, properties=self.client_properties())
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process is None or self.process.poll() is not None:
                code = self.process.returncode if self.process else None
                raise UserError(f"Kafka exited with code {code} at start; see {self.log_file}")
            if port_open(self.host, self.port, 0.2) and broker_count(asking) >= brokers:
                return
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


class KafkaCluster:
    """`with KafkaCluster(data_dir, nodes=3) as cluster: cluster.bootstrap_servers` — KRaft nodes on this
    machine, each broker and controller (a quorum of all of them), on consecutive ports from `port`, each
    with its own data folder; topics default to one copy per node and `min.insync.replicas=2`."""

    def __init__(self, data_dir: str | Path, nodes: int = 3, host: str = "127.0.0.1", port: int = 0,
                 heap: str = DEFAULT_HEAP, scram_users: dict[str, str] | None = None, tls: bool = False) -> None:
        data_dir = Path(data_dir).resolve()
        ports = [port + i for i in range(nodes)] if port else [free_port(host) for _ in range(nodes)]
        # The quorum, the cluster id and the users are the cluster's, chosen once and kept in each node's state.
        paths = [data_dir / f"node-{i + 1}" / STATE_FILE for i in range(nodes)]
        states = [json.loads(path.read_text()) for path in paths if path.exists()]
        if len(states) == nodes:
            voters = {state["node_id"]: state["controller_port"] for state in states}
        else:
            voters = {i + 1: free_port("127.0.0.1") for i in range(nodes)}
        cluster_id = states[0]["cluster_id"] if states else _cluster_id()
        users = scram_users or (states[0].get("users") if states else None) or (generated_users() if tls else None)
        self.nodes = [KafkaNode(data_dir / f"node-{i + 1}", host, ports[i], heap, scram_users=users, tls=tls,
                                node_id=i + 1, voters=voters, cluster_id=cluster_id) for i in range(nodes)]

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.bootstrap_servers for node in self.nodes)

    def start(self, timeout_s: float = 90.0) -> "KafkaCluster":
        try:
            for node in self.nodes:  # all at once: a quorum needs a majority up before any node is ready
                node.launch()
            for node in self.nodes:
                node.wait_ready(timeout_s, brokers=len(self.nodes))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            node.stop()

    def client_properties(self) -> dict[str, str]:
        return self.nodes[0].client_properties()

    def write_client_config(self) -> Path:
        path = self.nodes[0].write_client_config()
        text = path.read_text().replace(f"bootstrap.servers={self.nodes[0].bootstrap_servers}",
                                        f"bootstrap.servers={self.bootstrap_servers}")
        write_private(path, text)
        return path

    def __enter__(self) -> "KafkaCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run_foreground(host: str, port: int, data_dir: str | Path, heap: str, nodes: int = 1, secure: bool = False) -> int:
    """`python -m sfcrime broker`: run until Ctrl-C or SIGTERM, then stop the broker(s) cleanly and return 0.

    SIGTERM (`kill`, the way to stop a broker started with `&`, which ignores Ctrl-C) waits for Kafka's
    controlled shutdown too: once `kill PID; wait PID` returns, the port and the data folder are free.
    """
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # raises KeyboardInterrupt, as Ctrl-C does
    what = f"{nodes} nodes" if nodes > 1 else "one node"
    print(f"starting Apache Kafka {KAFKA_VERSION} (KRaft, {what}{', SASL_SSL' if secure else ''}) ...",
          file=sys.stderr, flush=True)
    broker = (KafkaCluster(data_dir, nodes, host, port, heap, tls=secure) if nodes > 1
              else KafkaNode(data_dir, host=host, port=port, heap=heap, tls=secure))
    broker.start()
    members = broker.nodes if nodes > 1 else [broker]
    logs = ", ".join(str(node.log_file) for node in members)
    print(f"Kafka on {broker.bootstrap_servers}, data in {Path(data_dir).resolve()}, log {logs}; Ctrl-C to stop.",
          file=sys.stderr, flush=True)
    if secure:
        print(f"clients log in with the properties in {broker.write_client_config()} (--kafka-config-file, "
              "or kafka-console-consumer.sh --command-config)", file=sys.stderr, flush=True)
    try:
        supervise(members)
    except KeyboardInterrupt:
        print("stopping Kafka", file=sys.stderr, flush=True)
        return 0
    finally:
        broker.stop()


RESTART_PAUSES_S = (1, 2, 4, 8, 16)  # a node that died is started again after these; then it is given up
STEADY_S = 60.0  # a node up this long since its last start has its tries counted afresh


def supervise(members: list[KafkaNode]) -> None:
    """Until Ctrl-C or SIGTERM: a node that exits (the OOM killer, a kill from another terminal) is started
    again with its own id and data folder, after a growing pause, and the others go on serving; one that
    keeps dying is given up, in one line naming its log. Only when every node is given up does it end."""
    tries: dict[int, int] = {}
    started_at = {node.node_id: time.monotonic() for node in members}
    given_up: set[int] = set()
    while len(given_up) < len(members):
        time.sleep(0.5)
        for node in members:
            if node.node_id in given_up:
                continue
            if node.process is not None and node.process.poll() is None:
                if time.monotonic() - started_at[node.node_id] >= STEADY_S:
                    tries[node.node_id] = 0
                continue
            _restart(node, tries, started_at, given_up, len(members))
    raise UserError(f"every Kafka node kept dying; see {', '.join(str(node.log_file) for node in members)}")


def _restart(node: KafkaNode, tries: dict[int, int], started_at: dict[int, float], given_up: set[int],
             nodes: int) -> None:
    code = node.process.returncode if node.process is not None else None
    which = f"node {node.node_id} on port {node.port}" if nodes > 1 else f"Kafka on port {node.port}"
    done = tries.get(node.node_id, 0)
    if done >= len(RESTART_PAUSES_S):
        given_up.add(node.node_id)
        node.process = None
        print(f"{which} keeps dying (exit code {code}): given up after {done} restarts; see {node.log_file}",
              file=sys.stderr, flush=True)
        return
    pause = RESTART_PAUSES_S[done]
    print(f"{which} exited with code {code}: starting it again in {pause} s", file=sys.stderr, flush=True)
    time.sleep(pause)
    tries[node.node_id] = done + 1
    started_at[node.node_id] = time.monotonic()
    try:
        node.launch()
        node.wait_ready(120)
    except UserError as error:  # it died again at start, or its ports are taken: the next round says so
        log.debug("restarting %s: %s", which, error)
        return
    print(f"{which} is back", file=sys.stderr, flush=True)
