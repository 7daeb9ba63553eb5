"""The Spark job end to end: Apache Kafka, real Spark, the real CLI, on both sources (Spark's own Kafka
connector and ours on the Python Data Source API); answers checked against an independent count of the
file that was replayed."""

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from sfcrime.dataset import load_calls
from sfcrime.producer import Pacing, replay
from tests.conftest import PYTHON, QUICK_SPARK_JVM, REPO, produce_raw, run_cli

pytestmark = pytest.mark.slow
SOURCES = ["kafka", "python"]


def expected_answers(records):
    """Count the calls the way the job should, without Spark: each crime_id once."""
    calls = {r["crime_id"]: r for r in records}.values()
    codes = {c["disposition_code"]: c["description"] for c in json.loads((REPO / "radio_code.json").read_text())}
    return {
        "total_calls": len(calls),
        "types": Counter(c["original_crime_type_name"] for c in calls),
        "locations": Counter(c["address"] for c in calls),
        "dispositions": {(d, codes.get(d)): n for d, n in Counter(c["disposition"] for c in calls).items()},
    }


def stream(kafka, output, *extra, timeout=240):
    result = run_cli("data_stream.py", "--once", "--bootstrap-servers", kafka.bootstrap_servers,
                     "--topic", kafka.topic, "--output", str(output), "--console-top", "3", *extra, timeout=timeout)
    assert result.returncode == 0, result.stderr[:2000] + "\n...\n" + result.stderr[-2000:]
    return result


def report(output):
    result = run_cli("report", "--output", str(output), "--json", "--top", "100000", "--windows", "1000")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def assert_answers_match(answers, expected, malformed=0):
    assert answers["total_calls"] == expected["total_calls"]
    assert answers["malformed"] == malformed
    assert {r["crime_type"]: r["count"] for r in answers["top_crime_types"]} == dict(expected["types"])
    assert {r["address"]: r["count"] for r in answers["top_locations"]} == dict(expected["locations"])
    assert {(r["code"], r["description"]): r["count"] for r in answers["dispositions"]} == expected["dispositions"]


@pytest.mark.parametrize("source", SOURCES)
def test_answers_equal_an_independent_count_with_malformed_and_repeated_records(kafka, sample_file, sample_records,
                                                                               tmp_path, source):
    replay(load_calls(sample_file), kafka, Pacing(), progress=False)
    hostile = [b"not json", b"", None, b"[1, 2]", b"42", b"{\"crime_id\": \"1\", \"call_date_time\": ",
               b"{\"original_crime_type_name\": \"x\", \"call_date_time\": \"2018-10-02T09:11:00.000\"}",
               b"{\"crime_id\": \"77\", \"call_date_time\": null}", b"{\"crime_id\": \"78\", \"call_date_time\": \"soon\"}",
               b"{\"crime_id\": \"79\", \"pad\": \"" + b"x" * 900_000 + b"\"}"]
    produce_raw(kafka.bootstrap_servers, kafka.topic, hostile)
    replay(load_calls(sample_file, limit=500), kafka, Pacing(), progress=False, append=True)  # at-least-once: 500 repeats
    run = stream(kafka, tmp_path / "out", "--source", source, "--max-offsets-per-trigger", "1000")
    answers = report(tmp_path / "out")
    expected = expected_answers(sample_records)
    assert expected["total_calls"] == 2999  # the sample holds one repeated call
    assert_answers_match(answers, expected, malformed=len(hostile))
    assert answers["malformed_reasons"] == {"not a JSON object": 5, "not valid JSON": 1, "missing crime_id": 1,
                                            "missing or unparseable call_date_time": 3}
    db = sqlite3.connect(tmp_path / "out" / "results.sqlite")
    kept = {bytes(v) if v is not None else None for (v,) in db.execute("SELECT value FROM dead_letters")}
    assert kept == {v if v else None for v in hostile} | ({b""} if b"" in kept else set())
    assert answers["batches"] >= 4  # 3,510 messages at most 1,000 per trigger
    assert answers["windows"]["final"] > 0 and answers["windows"]["open"] >= 1
    # calls whose disposition has no radio code are kept, with no description
    assert any(r["description"] is None and r["count"] > 0 for r in answers["dispositions"])
    source_name = "Spark's connector" if source == "kafka" else "Python Data Source"
    assert f"Kafka source: {source_name}" in run.stderr
    assert "batch 0: " in run.stderr and "backlog" in run.stderr and "UI: http" in run.stderr
    assert "top crime types, final window " in run.stdout and " (open, counts may still grow): " in run.stdout
    assert re.search(r"watermark 2018-\d\d-\d\d \d\d:\d\d P[SD]T", run.stderr)  # SF time, named


def test_newest_first_replay_counts_every_late_call_and_marks_the_windows_revised(kafka, sample_file,
                                                                                  sample_records, tmp_path):
    """The classic mistake: replaying the file as it is (newest first). Spark's watermark used to drop two
    calls in three; now the late calls are counted in their windows, which are reported as revised."""
    replay(load_calls(sample_file, order="file"), kafka, Pacing(), partitions=1, progress=False)
    stream(kafka, tmp_path / "out", "--max-offsets-per-trigger", "500")
    answers = report(tmp_path / "out")
    assert_answers_match(answers, expected_answers(sample_records))
    # 6 batches of 500, newest first: batch 0 sets the watermark; most of batches 1-5 land in final windows.
    assert 1500 <= answers["late_calls_counted"] < 2500 and answers["revised_windows"] >= 10
    assert answers["duplicates"] == 1  # the sample's repeated call


def test_a_checkpoint_begun_by_sparks_default_file_manager_resumes_exactly_and_every_file_has_its_checksum(
        kafka, sample_file, sample_records, tmp_path):
    """A local checkpoint is written through Hadoop's FileSystem API (job.LOCAL_CHECKPOINT_DEFAULTS), and
    checkpoints begun before that through Spark's default, FileContext, go on: the same files, the same
    checksums. The damaged-checkpoint check needs a .crc beside every file, from either."""
    half = len(load_calls(sample_file)) // 2
    replay(load_calls(sample_file, limit=half), kafka, Pacing(), progress=False)
    output = tmp_path / "out"
    stream(kafka, output, "--max-offsets-per-trigger", "400", "--spark-conf",
           "spark.sql.streaming.checkpointFileManagerClass="
           "org.apache.spark.sql.execution.streaming.checkpointing.FileContextBasedCheckpointFileManager")
    replay(load_calls(sample_file, skip=half), kafka, Pacing(), progress=False, append=True)
    restarted = stream(kafka, output, "--max-offsets-per-trigger", "400")
    assert "resuming after batch" in restarted.stderr and "damaged" not in restarted.stderr, restarted.stderr[-2000:]
    assert_answers_match(report(output), expected_answers(sample_records))
    checkpoint = output / "checkpoint"
    written = [f for f in checkpoint.rglob("*") if f.is_file() and not f.name.startswith(".")]
    assert len([f for f in written if f.parent.name == "commits"]) >= 4, sorted(map(str, written))
    assert [str(f) for f in written if not (f.parent / f".{f.name}.crc").exists()] == []


@pytest.mark.parametrize("source", SOURCES)
def test_killed_and_restarted_job_gives_the_answers_of_an_uninterrupted_run(kafka, sample_file, sample_records,
                                                                            tmp_path, source):
    replay(load_calls(sample_file), kafka, Pacing(), progress=False)
    output = tmp_path / "out"
    command = [PYTHON, "data_stream.py", "--once", "--source", source, "--max-offsets-per-trigger", "300", "--console-top", "0",
               "--bootstrap-servers", kafka.bootstrap_servers, "--topic", kafka.topic, "--output", str(output)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        if (output / "results.sqlite").exists():
            try:
                db = sqlite3.connect(output / "results.sqlite")
                done = db.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
            except sqlite3.OperationalError:  # the file is there, its tables not yet
                done = 0
            if done >= 3:
                break
        time.sleep(0.2)
    assert process.poll() is None, "the job ended before its third batch: nothing was killed"
    os.killpg(process.pid, signal.SIGKILL)  # the JVM and Python workers too, mid-batch
    process.wait()
    before = report(output)
    final_before = {w["start"] for w in before["windows"]["recent"]["windows"] if w["final"]}
    restarted = stream(kafka, output, "--source", source, "--max-offsets-per-trigger", "300")
    assert re.search(r"^resuming after batch \d+ \(offsets read: partition 0 at [\d,]+, ", restarted.stderr, re.M)
    after = report(output)
    assert_answers_match(after, expected_answers(sample_records))
    # the partitions' watermarks resumed where they were: nothing final became open, nothing came late, and
    # the watermark is the one the topic itself gives (its slowest partition's latest call, less an hour)
    assert before["watermark"] <= after["watermark"] and after["late_calls_counted"] == 0
    assert final_before <= {w["start"] for w in after["windows"]["recent"]["windows"] if w["final"]}
    assert after["watermark"] == independent_watermark(kafka, len(sample_records))
    # the restarted job commits to the group of its query (its default), up to every partition's end
    from tests.integration.test_kafka_tools import assert_group_caught_up

    query_id = json.loads((output / "checkpoint" / "metadata").read_text())["id"]
    assert f"consumer group sfcrime-{query_id}: " in restarted.stderr
    assert_group_caught_up(kafka.bootstrap_servers, f"sfcrime-{query_id}", len(sample_records), 3)


def independent_watermark(kafka, messages: int) -> str:
    """The smallest of the partitions' latest event times less the 1-hour --watermark, San Francisco time,
    from the topic read back with confluent-kafka."""
    from datetime import datetime

    from sfcrime.sf_time import ZONE as SF_TZ
    from tests.conftest import read_topic

    latest: dict[int, datetime] = {}
    for message in read_topic(kafka.bootstrap_servers, kafka.topic, messages):
        when = datetime.fromisoformat(json.loads(message.value())["call_date_time"]).replace(tzinfo=SF_TZ)
        latest[message.partition()] = max(when, latest.get(message.partition(), when))
    slowest = min(latest.values()).timestamp() - 3600
    return datetime.fromtimestamp(slowest, SF_TZ).strftime("%Y-%m-%d %H:%M")


def test_a_batch_counted_but_not_committed_before_a_kill_runs_again_and_counts_once(kafka, sample_file,
                                                                                    sample_records, tmp_path):
    """The narrowest kill: after the last batch's results were written, before Spark wrote its commit. Made
    exact by removing that commit, which is all such a kill leaves behind (the batch's offsets were written
    before it ran; a checkpoint without them is damaged, and refused: test_faults)."""
    replay(load_calls(sample_file), kafka, Pacing(), progress=False)
    output = tmp_path / "out"
    stream(kafka, output, "--max-offsets-per-trigger", "1000")  # 3,000 messages, 3 or 4 batches
    checkpoint = output / "checkpoint"
    last = max(int(p.name) for p in (checkpoint / "commits").glob("[0-9]*"))
    for name in (f"commits/{last}", f"commits/.{last}.crc"):
        (checkpoint / name).unlink()
    again = stream(kafka, output, "--max-offsets-per-trigger", "1000")
    assert f"batch {last} is already in the results" in again.stderr
    assert_answers_match(report(output), expected_answers(sample_records))


def test_our_source_works_with_executors_in_separate_processes(kafka, sample_file, sample_records, tmp_path):
    """Our source's read() runs on executors, which import sfcrime from the shipped package. (Spark's
    connector on executors in separate JVMs is covered on a standalone cluster: test_cluster.py.)

    One executor JVM: it is as separate from the driver as two. With two, while three other tests loaded the
    2 cores, a new Python worker twice missed Spark's fixed 10 s to connect back (PythonWorkerFactory)."""
    replay(load_calls(sample_file), kafka, Pacing(), progress=False)
    stream(kafka, tmp_path / "out", "--source", "python", "--master", "local-cluster[1,1,1024]", timeout=300)
    assert_answers_match(report(tmp_path / "out"), expected_answers(sample_records))


def spark_submit(*args, env=None, timeout=240):
    """`spark-submit ...` from the venv, as README's classic steps run it."""
    command = [str(Path(PYTHON).parent / "spark-submit"), *args]
    full_env = dict(os.environ, PYSPARK_PYTHON=PYTHON, PYSPARK_DRIVER_PYTHON=PYTHON, **(env or {}))
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=full_env)


def test_a_python_worker_late_to_connect_back_restarts_the_query_and_counts_each_call_once(kafka, sample_file,
                                                                                          sample_records, tmp_path):
    """Spark gives the Python worker that runs our source's reader a fixed 10 s to connect back; on a busy
    machine (the test suite's four workers on 2 cores) importing pyspark took longer, and the job failed.
    Made exact: the first such worker waits 12 s before Python starts."""
    replay(load_calls(sample_file), kafka, Pacing(), progress=False)
    slowed = tmp_path / "slowed"
    python = tmp_path / "python"
    python.write_text(f"""#!/bin/sh
case "$*" in *python_streaming_source_runner*) [ -e "{slowed}" ] || {{ touch "{slowed}"; sleep 12; }};; esac
exec "{PYTHON}" "$@"
""")
    python.chmod(0o755)
    result = run_cli("data_stream.py", "--once", "--source", "python", "--max-offsets-per-trigger", "1000",
                     "--console-top", "0", "--bootstrap-servers", kafka.bootstrap_servers, "--topic", kafka.topic,
                     "--output", str(tmp_path / "out"), env={"PYSPARK_PYTHON": str(python)}, timeout=240)
    assert slowed.exists()
    assert result.returncode == 0, result.stderr[-3000:]
    assert "did not start within Spark's fixed 10 s" in result.stderr
    assert_answers_match(report(tmp_path / "out"), expected_answers(sample_records))


def test_spark_submit_uses_the_connector_by_default_and_with_packages_offline(kafka, sample_file, sample_records,
                                                                             tmp_path):
    """The classic command, and the course's original form with --packages, resolved from the local Maven
    cache that set-up filled (no network is needed: --packages looks there first)."""
    from sfcrime.local.jars import connector_coordinate

    replay(load_calls(sample_file), kafka, Pacing(), progress=False)
    target = ["--bootstrap-servers", kafka.bootstrap_servers, "--topic", kafka.topic, "--console-top", "0"]
    plain = spark_submit("data_stream.py", "--once", "--output", str(tmp_path / "a"), *target)
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "Kafka source: Spark's connector" in plain.stdout  # spark-submit sends the driver's stderr to stdout
    assert_answers_match(report(tmp_path / "a"), expected_answers(sample_records))
    # no defaults file: only --packages brings the connector (the JVM flags every test's Spark has: C2 alone
    # took half a minute of the 2 cores)
    packages = spark_submit("--packages", connector_coordinate(), "--driver-java-options", QUICK_SPARK_JVM,
                            "data_stream.py", "--once", "--output",
                            str(tmp_path / "b"), *target, env={"SPARK_CONF_DIR": str(tmp_path)})
    assert packages.returncode == 0, packages.stderr[-2000:]
    assert_answers_match(report(tmp_path / "b"), expected_answers(sample_records))


def test_official_connector_missing_is_one_clear_line(kafka, sample_file, tmp_path):
    from sfcrime.local.jars import connector_coordinate

    replay(load_calls(sample_file, limit=10), kafka, Pacing(), progress=False)
    empty_conf = tmp_path / "conf"  # no spark-defaults.conf: spark-submit without the connector
    empty_conf.mkdir()
    result = spark_submit("--driver-java-options", QUICK_SPARK_JVM, "data_stream.py", "--once", "--bootstrap-servers",
                          kafka.bootstrap_servers, "--topic", kafka.topic, "--output", str(tmp_path / "out"),
                          env={"SPARK_CONF_DIR": str(empty_conf)})
    assert result.returncode == 1
    # spark-submit sends the driver's stderr to stdout
    assert result.stdout.strip().splitlines()[-1] == (
        "error: Spark's Kafka connector is not on the classpath: run `make setup`, or spark-submit --packages "
        f"{connector_coordinate()} data_stream.py; or use --source python")
    output = result.stdout + result.stderr
    assert "Traceback" not in output and "Failed to find data source" not in output


def test_a_master_nobody_runs_or_a_checkpoint_spark_cannot_make_is_one_line(kafka, sample_file, tmp_path):
    """Spark tries an absent master for a minute and then says only "Cannot call methods on a stopped
    SparkContext"; a checkpoint it can't make was a py4j traceback."""
    from sfcrime.local.kafka import free_port

    replay(load_calls(sample_file, limit=10), kafka, Pacing(), progress=False)
    job = ["data_stream.py", "--once", "--console-top", "0", "--bootstrap-servers", kafka.bootstrap_servers,
           "--topic", kafka.topic]
    master = f"spark://127.0.0.1:{free_port()}"
    started = time.monotonic()
    absent = run_cli(*job, "--output", str(tmp_path / "a"), "--master", master, timeout=120)
    assert absent.returncode == 1 and time.monotonic() - started < 30
    assert absent.stderr.strip().splitlines() == [f"error: no Spark master answers at {master} "
                                                  "(start one with `python -m sfcrime spark-cluster`)"]
    (tmp_path / "a-file").write_text("not a folder")
    blocked = run_cli(*job, "--output", str(tmp_path / "b"), "--checkpoint", str(tmp_path / "a-file" / "checkpoint"),
                      timeout=180)
    assert blocked.returncode == 1 and "Traceback" not in blocked.stderr
    assert blocked.stderr.strip().splitlines()[-1].startswith(
        "error: the streaming query did not start: org.apache.hadoop.fs.ParentNotDirectoryException: Parent path "
        f"is not a directory: file:{tmp_path / 'a-file'}")


def test_unreachable_broker_and_missing_topic_fail_fast_in_one_line(kafka, tmp_path):
    from sfcrime.local.kafka import free_port

    started = time.monotonic()
    result = run_cli("data_stream.py", "--once", "--bootstrap-servers", f"127.0.0.1:{free_port()}", "--timeout", "5",
                     "--output", str(tmp_path / "out"), timeout=60)
    assert time.monotonic() - started < 30 and result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: cannot reach Kafka")
    unreachable = f"127.0.0.1:{free_port()}"  # spark-submit starts the JVM first: still only its banner and our line
    submitted = spark_submit("data_stream.py", "--once", "--bootstrap-servers", unreachable, "--timeout", "5",
                             "--output", str(tmp_path / "out"), timeout=120)
    shown = (submitted.stdout + submitted.stderr).strip().splitlines()
    assert submitted.returncode == 1 and len(shown) <= 2, shown  # the JVM's incubator warning, our line
    assert submitted.stdout.strip().splitlines()[-1].startswith(f"error: cannot reach Kafka at {unreachable}")
    missing = run_cli("data_stream.py", "--once", "--bootstrap-servers", kafka.bootstrap_servers, "--topic", kafka.topic,
                      "--output", str(tmp_path / "out2"), timeout=60)
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_strict_stops_at_the_first_malformed_record_with_one_line(kafka, sample_file, tmp_path):
    replay(load_calls(sample_file, limit=20), kafka, Pacing(), partitions=1, progress=False)
    produce_raw(kafka.bootstrap_servers, kafka.topic, [b"{\"crime_id\": \"77\"", b"[]"])
    result = run_cli("data_stream.py", "--once", "--strict", "--bootstrap-servers", kafka.bootstrap_servers,
                     "--topic", kafka.topic, "--output", str(tmp_path / "out"), timeout=180)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: malformed record at partition 0 offset 20: not valid JSON (--strict)")
    assert "Traceback" not in result.stderr and "=== Streaming Query ===" not in result.stderr
    db = sqlite3.connect(tmp_path / "out" / "results.sqlite")
    assert db.execute("SELECT COUNT(*) FROM batches").fetchone()[0] == 0  # nothing of the failed batch was counted


def ctrl_c_in_a_terminal(kafka, output, ready: bytes):
    """A live job under spark-submit in a pseudo-terminal, as a person runs it: once it has printed `ready`,
    Ctrl-C. (The exit code, all it printed.)"""
    import fcntl
    import pty
    import select
    import termios

    command = [str(Path(PYTHON).parent / "spark-submit"), "data_stream.py", "--console-top", "0",
               "--bootstrap-servers", kafka.bootstrap_servers, "--topic", kafka.topic, "--output", str(output)]
    env = dict(os.environ, PYSPARK_PYTHON=PYTHON, PYSPARK_DRIVER_PYTHON=PYTHON)
    master, terminal = pty.openpty()
    # a session of its own whose controlling terminal is the pty, the job its foreground group: as in a shell
    job = subprocess.Popen(command, cwd=REPO, env=env, stdin=terminal, stdout=terminal, stderr=terminal,
                           start_new_session=True, preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(terminal)
    seen = b""

    def read_until(done, timeout_s: float) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the terminal's other side closed: everyone in it exited
                    return
                if not chunk:
                    return
                seen += chunk

    try:
        read_until(lambda: ready in seen, 240)
        assert ready in seen, seen.decode(errors="replace")[-3000:]
        os.write(master, b"\x03")  # a person pressing Ctrl-C: the terminal signals its foreground group
        read_until(lambda: job.poll() is not None, 120)
        job.wait(30)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
        os.close(master)
    said = seen.decode(errors="replace").replace("\r\n", "\n")
    assert "Traceback" not in said and "Py4J" not in said and "did not stop cleanly" not in said, said[-3000:]
    assert " ERROR " not in said, said[-3000:]
    return job.returncode, said


def test_ctrl_c_in_a_terminal_under_spark_submit_says_how_to_resume_and_exits_130(kafka, sample_file, tmp_path):
    """spark-submit runs the Python driver as a child of its JVM, and a terminal's Ctrl-C goes to the whole
    foreground group: the JVM shut down under the job, racing its last line (seen lost: only "^C") and
    failing its query.stop over py4j ("the query did not stop cleanly" after it, here). In a pseudo-terminal,
    as a person runs it: a live job, a batch, then Ctrl-C; the JVM now leaves Ctrl-C to Python."""
    replay(load_calls(sample_file, limit=500), kafka, Pacing(), progress=False)
    output = tmp_path / "out"
    code, said = ctrl_c_in_a_terminal(kafka, output, b"batch 0: ")
    assert code == 130, said[-3000:]
    last = said.strip().splitlines()[-1].removeprefix("^C")  # the terminal echoes the key
    assert last == f"stopping (Ctrl-C); every finished batch is kept: resume with the same --output {output}", said[-3000:]
    assert "warmed up on 30 batches of generated calls" in said, said[-3000:]  # a live job's default
    assert not list(output.glob("warm-up-*")), list(output.iterdir())  # its calls and checkpoint are gone


def test_ctrl_c_during_the_warm_up_stops_the_job_in_one_line(kafka, sample_file, tmp_path):
    """The warm-up runs before the query reads anything: Ctrl-C there stops the job without a word from
    Spark, leaves no generated calls behind, and counts nothing."""
    replay(load_calls(sample_file, limit=500), kafka, Pacing(), progress=False)
    output = tmp_path / "out"
    code, said = ctrl_c_in_a_terminal(kafka, output, b"warming up on 30 batches")
    assert code == 130, said[-3000:]
    assert said.strip().splitlines()[-1].removeprefix("^C") == "interrupted", said[-3000:]
    assert not list(output.glob("warm-up-*")), list(output.iterdir())
    with sqlite3.connect(output / "results.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM batches").fetchone()[0] == 0
