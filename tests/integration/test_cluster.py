"""The job on a real Spark standalone cluster (`python -m sfcrime spark-cluster`): a master and workers in
their own JVMs, executors launched by the workers, the connector jars shipped to them by the driver.
Answers checked against the independent count of tests/integration/test_stream.py."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from sfcrime.dataset import load_calls
from sfcrime.producer import Pacing, replay
from tests.conftest import PYTHON, REPO
from tests.integration.test_postgres_results import report_from
from tests.integration.test_stream import assert_answers_match, expected_answers, report, spark_submit

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

# Two executors of one core each, one per worker (the master spreads them out), in 512 MB heaps.
EXECUTORS = ["--spark-conf", "spark.executor.memory=512m", "--spark-conf", "spark.executor.cores=1",
             "--spark-conf", "spark.cores.max=2"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from sfcrime.local.spark_cluster import SparkStandaloneCluster

    # Two cores a worker: when one worker dies, the other has room to take a replacement executor.
    with SparkStandaloneCluster(workers=2, cores_per_worker=2, memory="1g",
                                work_dir=tmp_path_factory.mktemp("spark")) as running:
        yield running


def executor_dirs(cluster, worker: int) -> list:
    """The executors a worker launched: one folder each, holding the jars and files the driver shipped."""
    return sorted(p for p in (cluster.work_dir / f"worker-{worker}").glob("app-*/*") if p.is_dir())


def test_spark_submit_to_the_cluster_ships_the_connector_to_executors_and_gives_the_exact_answers(
        cluster, kafka, sample_file, sample_records, tmp_path, results_db):
    """The results in PostgreSQL, where a cluster's users keep them (a driver may run on any machine)."""
    replay(load_calls(sample_file), kafka, Pacing(), progress=False)
    result = spark_submit("--master", cluster.master_url, "data_stream.py", "--once", "--output", str(tmp_path / "out"),
                          "--bootstrap-servers", kafka.bootstrap_servers, "--topic", kafka.topic, "--console-top", "0",
                          "--results", results_db, *EXECUTORS, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "out" / "results.sqlite").exists()
    assert_answers_match(report_from(results_db, tmp_path / "out"), expected_answers(sample_records))
    app = cluster.status()["completedapps"][-1]
    assert (app["name"], app["cores"], app["memoryperexecutor"]) == ("sfcrime-stream", 2, 512)
    for worker in (0, 1):  # an executor on each worker, each given the connector's jars
        [executor] = [d for d in executor_dirs(cluster, worker) if d.parent.name == app["id"]]
        assert {"spark-sql-kafka-0-10_2.13-4.2.0.jar", "kafka-clients-3.9.2.jar"} <= {p.name for p in executor.iterdir()}


def test_a_worker_killed_mid_run_loses_nothing_spark_reruns_its_tasks(cluster, kafka, sample_file, sample_records,
                                                                      tmp_path):
    """SIGKILL a worker with its executors, as if its machine died, once a batch is in the results: the
    driver reruns the lost tasks on the other worker and the answers are still exact."""
    replay(load_calls(sample_file), kafka, Pacing(), partitions=3, progress=False)
    output = tmp_path / "out"
    command = [PYTHON, "data_stream.py", "--once", "--master", cluster.master_url, "--max-offsets-per-trigger", "600",
               "--console-top", "0", "--bootstrap-servers", kafka.bootstrap_servers, "--topic", kafka.topic,
               "--output", str(output), *EXECUTORS]
    log_path = tmp_path / "job.log"
    with open(log_path, "w") as log_file:
        job = subprocess.Popen(command, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        batches = 0
        while time.monotonic() < deadline and job.poll() is None and batches < 1:
            batches = batches_in(output)
            time.sleep(0.2)
        assert job.poll() is None and batches >= 1, log_path.read_text()[-3000:]
        assert executor_dirs(cluster, 0), "no executor ran on the worker about to be killed"
        cluster.kill_worker(0)
        assert job.wait(timeout=240) == 0, log_path.read_text()[-3000:]
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    assert batches_in(output) > batches  # the run went on after the kill: at least one batch ran without the worker
    assert cluster.status()["aliveworkers"] == 1
    # the master replaced the lost executor on the surviving worker, which had a core and the memory to spare
    [app_id] = sqlite3.connect(output / "results.sqlite").execute("SELECT value FROM meta WHERE key = 'spark_app_id'").fetchone()
    assert len([d for d in executor_dirs(cluster, 1) if d.parent.name == app_id]) == 2
    assert_answers_match(report(output), expected_answers(sample_records))


def batches_in(output) -> int:
    """Micro-batches counted in the results so far (0 before the job created them)."""
    try:
        return sqlite3.connect(output / "results.sqlite").execute("SELECT COUNT(*) FROM batches").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_spark_cluster_command_prints_the_master_and_ui_and_ctrl_c_or_kill_stops_every_jvm(stop):
    from sfcrime.local.kafka import free_port

    port, webui = free_port(), free_port()
    process = subprocess.Popen([sys.executable, "-m", "sfcrime", "spark-cluster", "--workers", "1", "--port", str(port),
                                "--webui-port", str(webui)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        lines = [process.stdout.readline().strip() for _ in range(2)]
        assert lines == [f"master: spark://127.0.0.1:{port}", f"UI: http://127.0.0.1:{webui}/"], process.stderr.read()
        jvms = spark_daemons(port)
        assert len(jvms) == 2  # the master and one worker
        process.send_signal(stop)
        assert process.wait(timeout=60) == 0
        assert "stopping the Spark cluster" in process.stderr.read()
        assert spark_daemons(port) == []  # gone once the command has returned, not some time after
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


DAEMON_CLASSES = (b"org.apache.spark.deploy.master.Master", b"org.apache.spark.deploy.worker.Worker")


def spark_daemons(port: int) -> list[int]:
    """Pids of the master and workers of the cluster on `port`, found by their command lines."""
    pids = []
    for cmdline in os.scandir("/proc"):
        if not cmdline.name.isdigit():
            continue
        try:
            args = open(f"/proc/{cmdline.name}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        # The master's and workers' own JVMs: not a job's driver (SparkSubmit, which lingers a moment after
        # its Python exits) nor spark-class's launcher, which names the class it is building a command for.
        daemon = any(a in DAEMON_CLASSES for a in args) and b"org.apache.spark.launcher.Main" not in args
        if daemon and any(str(port).encode() in a for a in args) and b"java" in args[0]:
            pids.append(int(cmdline.name))
    return pids


def test_spark_cluster_command_starts_a_worker_killed_from_outside_again_and_a_running_job_ends_exact(
        kafka, sample_file, sample_records, tmp_path):
    """`python -m sfcrime spark-cluster --workers 2` as a user runs it; one worker's JVM SIGKILLed by pid from
    another terminal under a running job: the command starts it again and says so, the job ends exact."""
    import threading

    from sfcrime.local.kafka import free_port

    port, webui = free_port(), free_port()
    command = subprocess.Popen([sys.executable, "-m", "sfcrime", "spark-cluster", "--workers", "2", "--port", str(port),
                                "--webui-port", str(webui)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    said: list[str] = []
    try:
        assert command.stdout.readline().strip() == f"master: spark://127.0.0.1:{port}", command.stderr.read()
        threading.Thread(target=lambda: said.extend(iter(command.stderr.readline, "")), daemon=True).start()
        replay(load_calls(sample_file), kafka, Pacing(), partitions=3, progress=False)
        output = tmp_path / "out"
        job = subprocess.Popen([PYTHON, "data_stream.py", "--once", "--master", f"spark://127.0.0.1:{port}",
                                "--max-offsets-per-trigger", "600", "--console-top", "0", "--bootstrap-servers",
                                kafka.bootstrap_servers, "--topic", kafka.topic, "--output", str(output), *EXECUTORS],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=(tmp_path / "job.err").open("w"),
                               start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and job.poll() is None and batches_in(output) < 1:
                time.sleep(0.2)
            assert job.poll() is None, (tmp_path / "job.err").read_text()[-3000:]
            worker = next(pid for pid in spark_daemons(port)
                          if b"org.apache.spark.deploy.worker.Worker" in open(f"/proc/{pid}/cmdline", "rb").read())
            os.kill(worker, signal.SIGKILL)
            assert job.wait(timeout=240) == 0, (tmp_path / "job.err").read_text()[-3000:]
        finally:
            if job.poll() is None:
                os.killpg(job.pid, signal.SIGKILL)
                job.wait()
        assert_answers_match(report(output), expected_answers(sample_records))
        deadline = time.monotonic() + 120
        while not any(line.startswith("Spark worker ") and line.rstrip().endswith(" is back") for line in said):
            assert time.monotonic() < deadline and command.poll() is None, "".join(said)
            time.sleep(0.5)
        assert any(" exited with code -9: starting it again in 1 s" in line for line in said), "".join(said)
        assert len(spark_daemons(port)) == 3  # the master and both workers
    finally:
        command.send_signal(signal.SIGTERM)
        assert command.wait(timeout=60) == 0
        assert spark_daemons(port) == []
