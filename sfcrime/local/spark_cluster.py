"""A Spark standalone cluster on this machine: one master and N workers, each its own JVM, started from
pyspark's own classes (`bin/spark-class org.apache.spark.deploy.master.Master` / `...worker.Worker`;
pip's pyspark ships no `sbin/start-*.sh`).

Executors then run in JVMs the workers launch, as on a real cluster: the job's connector jars must be
shipped to them (`spark.jars`, which the driver serves), and killing a worker takes its executors with it.
Every JVM is tied to our process (PR_SET_PDEATHSIG, its own process group), its heap bounded, its log in
a file of the work folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from ..errors import UserError
from .jars import spark_home, spark_version
from .java import ensure_java
from ..clients import port_open
from .kafka import _die_with_parent, _megabytes, free_port

log = logging.getLogger(__name__)

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the master is ours: never via http_proxy
DAEMON_HEAP = "256m"  # the master's and each worker's own heap (SPARK_DAEMON_MEMORY); executors get theirs from the job


class SparkStandaloneCluster:
    """`with SparkStandaloneCluster(workers=2) as cluster: cluster.master_url` — spark://HOST:PORT."""

    def __init__(self, workers: int = 2, cores_per_worker: int = 1, memory: str = "1g", host: str = "127.0.0.1",
                 port: int = 0, webui_port: int = 0, work_dir: str | Path | None = None,
                 daemon_heap: str = DAEMON_HEAP) -> None:
        if workers < 1 or cores_per_worker < 1:
            raise UserError("a cluster needs at least one worker with at least one core")
        _megabytes(memory), _megabytes(daemon_heap)  # one line now, not a JVM's complaint later
        self.workers, self.cores_per_worker, self.memory = workers, cores_per_worker, memory
        self.host, self.daemon_heap = host, daemon_heap
        self.port = port or free_port(host)
        self.webui_port = webui_port or free_port(host)
        self._own_work_dir = work_dir is None  # then a temporary folder from start() to stop()
        self.work_dir = Path(work_dir).resolve() if work_dir else None
        self.master: subprocess.Popen | None = None
        self.worker_processes: list[subprocess.Popen | None] = []

    @property
    def master_url(self) -> str:
        return f"spark://{self.host}:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.webui_port}/"

    def log_file(self, name: str) -> Path:
        return self.work_dir / f"{name}.log"

    # ------------------------------------------------------------------------------------------ process

    def _spawn(self, name: str, main_class: str, *args: str) -> subprocess.Popen:
        home = spark_home()
        env = dict(os.environ, SPARK_HOME=str(home), SPARK_DAEMON_MEMORY=self.daemon_heap,
                   SPARK_LOCAL_IP=self.host, PYSPARK_PYTHON=os.environ.get("PYSPARK_PYTHON", sys.executable))
        env.pop("PYSPARK_GATEWAY_PORT", None)  # under spark-submit: not ours to pass on
        # The REST submission server would take port 6066 whatever --port says: two clusters would collide.
        env["SPARK_MASTER_OPTS"] = (env.get("SPARK_MASTER_OPTS", "") + " -Dspark.master.rest.enabled=false").strip()
        with open(self.log_file(name), "ab") as out:
            return subprocess.Popen([str(home / "bin" / "spark-class"), main_class, *args], cwd=self.work_dir,
                                    env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    preexec_fn=_die_with_parent)

    def start(self, timeout_s: float = 180.0) -> "SparkStandaloneCluster":
        """Start the master, then the workers; wait for each. On a busy 2-core machine (CI, with three Spark
        jobs beside it) the master alone once took over 90 s: a crash still ends the wait at once."""
        for port in (self.port, self.webui_port):
            if port_open(self.host, port):
                raise UserError(f"port {port} on {self.host} is already in use (another Spark master? pick one with --port/--webui-port)")
        ensure_java()
        if self.work_dir is None:
            self.work_dir = Path(tempfile.mkdtemp(prefix="sfcrime-spark-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.master = self._spawn("master", MASTER_CLASS, "--host", self.host, "--port", str(self.port),
                                  "--webui-port", str(self.webui_port))
        try:
            self._wait(lambda: port_open(self.host, self.port, 0.2) and self.status() is not None, "the master", timeout_s)
            self.worker_processes = [self._start_worker(i) for i in range(self.workers)]
            self._wait(lambda: self.alive_workers() >= self.workers, f"{self.workers} workers to register", timeout_s)
        except BaseException:
            self.stop()
            raise
        log.debug("Spark %s standalone: %s, %d workers, UI %s", spark_version(), self.master_url, self.workers, self.ui_url)
        return self

    def _start_worker(self, i: int) -> subprocess.Popen:
        work = self.work_dir / f"worker-{i}"
        work.mkdir(exist_ok=True)
        return self._spawn(f"worker-{i}", WORKER_CLASS, self.master_url, "--host", self.host,
                           "--cores", str(self.cores_per_worker), "--memory", self.memory,
                           "--work-dir", str(work), "--webui-port", "0")

    def _wait(self, ready, what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            for name, process in [("master", self.master), *((f"worker-{i}", p) for i, p in enumerate(self.worker_processes))]:
                if process is not None and process.poll() is not None:
                    raise UserError(f"the Spark {name} exited with code {process.returncode} at start; "
                                    f"see {self.log_file(name)}")
            if time.monotonic() > deadline:
                raise UserError(f"waited {timeout_s:g} s for {what} of Spark's standalone cluster; see the logs in {self.work_dir}")
            time.sleep(0.3)

    def status(self) -> dict | None:
        """The master's own state (its UI's /json/): workers, cores, applications; None if it doesn't answer.
        A cold UI on a busy machine can take seconds for its first answer: a short timeout would never see it."""
        try:
            with _NO_PROXY.open(f"{self.ui_url}json/", timeout=10) as response:
                return json.load(response)
        except (OSError, ValueError):
            return None

    def alive_workers(self) -> int:
        return int((self.status() or {}).get("aliveworkers", 0))

    def alive_worker_ids(self) -> set[str] | None:
        """The ids of the workers the master holds alive (a new id is a worker that has registered); None
        when the master does not answer."""
        status = self.status()
        return None if status is None else {w.get("id") for w in status.get("workers", []) if w.get("state") == "ALIVE"}

    def kill_worker(self, i: int) -> None:
        """SIGKILL a worker and everything it launched (its executors, their Python workers), as if its
        machine died: they share its process group."""
        process = self.worker_processes[i]
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self.worker_processes[i] = None

    def stop(self, timeout_s: float = 20.0) -> None:
        """Workers first (each takes its executors down), then the master; SIGKILL whatever lingers."""
        processes = [p for p in self.worker_processes if p is not None] + ([self.master] if self.master else [])
        self.worker_processes, self.master = [], None
        for process in processes:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(process, signal.SIGKILL)  # executors a worker left behind share its group
            process.wait()
        if self._own_work_dir and self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self.work_dir = None

    def __enter__(self) -> "SparkStandaloneCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


RESTART_PAUSES_S = (1, 2, 4, 8, 16)  # a worker that died is started again after these; then it is given up


def restart_worker(cluster: SparkStandaloneCluster, i: int, tries: dict[int, int]) -> None:
    """A worker killed from outside (the OOM killer, an operator) is started again, and says so; the master
    and the other workers go on, and a running application gets executors on it again. One that keeps
    dying is given up, in one line naming its log."""
    process = cluster.worker_processes[i]
    _signal_group(process, signal.SIGKILL)  # what it launched (executors) goes with it, as with its machine
    done = tries.get(i, 0)
    if done >= len(RESTART_PAUSES_S):
        cluster.worker_processes[i] = None
        print(f"Spark worker {i} keeps dying (exit code {process.returncode}): given up after {done} restarts; see "
              f"{cluster.log_file(f'worker-{i}')}", file=sys.stderr, flush=True)
        return
    print(f"Spark worker {i} exited with code {process.returncode}: starting it again in {RESTART_PAUSES_S[done]} s",
          file=sys.stderr, flush=True)
    time.sleep(RESTART_PAUSES_S[done])
    tries[i] = done + 1
    # The master may still hold the killed worker alive (until its heartbeat times out): a count of alive
    # workers said "is back" while the new one was still starting. A new worker has a new id.
    deadline = time.monotonic() + 90
    known = cluster.alive_worker_ids()
    while known is None and time.monotonic() < deadline:
        time.sleep(0.5)
        known = cluster.alive_worker_ids()
    cluster.worker_processes[i] = cluster._start_worker(i)
    while not (cluster.alive_worker_ids() or set()) - (known or set()):
        if cluster.worker_processes[i].poll() is not None or time.monotonic() > deadline:
            return  # the next round says so
        time.sleep(0.5)
    print(f"Spark worker {i} is back", file=sys.stderr, flush=True)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def run_foreground(workers: int, cores_per_worker: int, memory: str, host: str, port: int, webui_port: int) -> int:
    """`python -m sfcrime spark-cluster`: a master and workers until Ctrl-C or SIGTERM (`kill`), then stop them
    all, wait for them, and return 0."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # raises KeyboardInterrupt, as Ctrl-C does
    work_dir = Path(tempfile.mkdtemp(prefix="sfcrime-spark-"))
    cluster = SparkStandaloneCluster(workers, cores_per_worker, memory, host, port, webui_port, work_dir=work_dir)
    print(f"starting Spark {spark_version()} standalone: a master and {workers} worker(s) "
          f"of {cores_per_worker} core(s) and {memory} ...", file=sys.stderr, flush=True)
    cluster.start()
    try:  # from the first line that says the cluster is up: a Ctrl-C right after it is a clean stop too
        print(f"master: {cluster.master_url}\nUI: {cluster.ui_url}", flush=True)
        print(f"logs in {cluster.work_dir}; submit with: spark-submit --master {cluster.master_url} data_stream.py; "
              "Ctrl-C to stop.", file=sys.stderr, flush=True)
        tries: dict[int, int] = {}
        while cluster.master is not None and cluster.master.poll() is None:
            time.sleep(0.5)
            for i, process in enumerate(cluster.worker_processes):
                if process is not None and process.poll() is not None:
                    restart_worker(cluster, i, tries)
        raise UserError(f"the Spark master exited unexpectedly; see {cluster.log_file('master')}")
    except KeyboardInterrupt:
        print("stopping the Spark cluster", file=sys.stderr, flush=True)
        cluster.stop()
        shutil.rmtree(work_dir, ignore_errors=True)  # a clean stop; after a failure the logs stay
        return 0
    finally:
        cluster.stop()
