"""PostgreSQL as the results store: a real server (`python -m sfcrime postgres`, started by the postgres_url
fixture), real Kafka, real Spark. Answers are checked against the independent count and against the SQLite
run of the same topic; the tables are read back with psycopg, not through our code."""

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
import urllib.request
import uuid

import psycopg
import pytest

from sfcrime.dataset import load_calls
from sfcrime.local.kafka import free_port
from sfcrime.producer import Pacing, replay
from tests.conftest import PYTHON, REPO, produce_raw, run_cli
from tests.integration.test_stream import assert_answers_match, expected_answers, report, stream

pytestmark = pytest.mark.slow
HOSTILE = [b"not json", b"", None, b"[1, 2]", b"{\"crime_id\": \"77\", \"call_date_time\": null}"]
VOLATILE = ("pipeline",)  # when and by which process: differs between any two runs


def report_from(url, output):
    result = run_cli("report", "--output", str(output), "--results", url, "--json", "--top", "100000",
                     "--windows", "1000")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def comparable(answers: dict) -> dict:
    return {k: v for k, v in answers.items() if k not in VOLATILE}


def fill(kafka, sample_file):
    replay(load_calls(sample_file), kafka, Pacing(), progress=False)
    produce_raw(kafka.bootstrap_servers, kafka.topic, HOSTILE)
    replay(load_calls(sample_file, limit=300), kafka, Pacing(), progress=False, append=True)  # 300 repeats


@pytest.mark.parametrize("source", ["kafka", "python"])
def test_postgres_answers_equal_the_independent_count_and_the_sqlite_run(kafka, sample_file, sample_records,
                                                                        tmp_path, results_db, source):
    fill(kafka, sample_file)
    stream(kafka, tmp_path / "pg", "--source", source, "--max-offsets-per-trigger", "1000", "--results", results_db)
    assert not (tmp_path / "pg" / "results.sqlite").exists()  # nothing went to SQLite
    from_postgres = report_from(results_db, tmp_path / "pg")
    assert_answers_match(from_postgres, expected_answers(sample_records), malformed=len(HOSTILE))
    stream(kafka, tmp_path / "sqlite", "--source", source, "--max-offsets-per-trigger", "1000")
    from_sqlite = report(tmp_path / "sqlite")
    assert comparable(from_postgres) == comparable(from_sqlite)
    # read back without our code: every batch once, the dead letters' bytes as they were sent
    with psycopg.connect(results_db) as db:
        batches = [b for (b,) in db.execute("SELECT batch_id FROM batches ORDER BY batch_id")]
        kept = {bytes(v) if v is not None else None for (v,) in db.execute("SELECT value FROM dead_letters")}
        calls = db.execute("SELECT SUM(count) FROM locations").fetchone()[0]
        assert_write_times_kept(db.execute("SELECT batch_id, durations FROM progress").fetchall(), batches)
    with sqlite3.connect(tmp_path / "sqlite" / "results.sqlite") as db:
        assert_write_times_kept(db.execute("SELECT batch_id, durations FROM progress").fetchall(),
                                [b for (b,) in db.execute("SELECT batch_id FROM batches")])
    assert batches == list(range(len(batches))) and len(batches) >= 4
    assert kept == {v if v else None for v in HOSTILE} | ({b""} if b"" in kept else set())
    assert calls == expected_answers(sample_records)["total_calls"]
    if source == "kafka":  # the dashboard and /metrics read PostgreSQL too, and say the same
        assert_dashboard_says(results_db, tmp_path, from_sqlite)


def assert_write_times_kept(progress: list[tuple[int, str]], batches: list[int]) -> None:
    """Each counted batch's progress keeps the store's write time (resultsWrite, which bench compares between
    the stores), within Spark's own time for the sink (addBatch), which runs the write."""
    durations = {batch_id: json.loads(text) for batch_id, text in progress}
    for batch_id in batches:
        assert 0 <= durations[batch_id]["resultsWrite"] <= durations[batch_id]["addBatch"] + 1, durations[batch_id]


def assert_dashboard_says(url, tmp_path, expected):
    dashboard = subprocess.Popen([PYTHON, "-m", "sfcrime", "dashboard", "--port", "0", "--results", url,
                                  "--output", str(tmp_path / "nothing-here")], cwd=REPO, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = dashboard.stdout.readline()
        page = re.search(r"dashboard: (http://\S+/)", line).group(1)
        assert "***" not in line and "postgresql://" in line
        with urllib.request.urlopen(page + "api/answers?top=1000&windows=1000", timeout=30) as response:
            shown = json.loads(response.read())
        assert shown["total_calls"] == expected["total_calls"] and shown["malformed"] == expected["malformed"]
        assert shown["duplicates"] == expected["duplicates"] and shown["windows"] == expected["windows"]
        assert shown["top_crime_types"] == expected["top_crime_types"][:1000]
        with urllib.request.urlopen(page + "metrics", timeout=30) as response:
            metrics = response.read().decode()
        assert f"sfcrime_calls_counted_total {float(expected['total_calls'])}" in metrics
    finally:
        os.killpg(dashboard.pid, signal.SIGINT)
        dashboard.wait(30)


def batches_in(url) -> int:
    try:
        with psycopg.connect(url, connect_timeout=2) as db:
            return db.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
    except psycopg.Error:  # not there yet, or the server is away
        return 0


def start_server(port, data_dir, log):
    server = subprocess.Popen([PYTHON, "-m", "sfcrime", "postgres", "--port", str(port), "--data-dir", str(data_dir)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
    line = server.stdout.readline()
    assert "ready" in line, line
    return server, re.search(r"(postgresql://\S+)", line).group(1)


def test_a_job_rides_out_its_server_restarting_and_a_killed_job_resumes_exact(kafka, sample_file, sample_records,
                                                                             tmp_path):
    """The server stops and starts again mid-run (the job waits and writes on), then the job is killed with
    SIGKILL, and started again: every call once."""
    fill(kafka, sample_file)
    port, data = free_port(), tmp_path / "pgdata"
    server_log = (tmp_path / "server.log").open("w")
    server, url = start_server(port, data, server_log)
    output, job_log = tmp_path / "out", tmp_path / "job.log"
    command = [PYTHON, "data_stream.py", "--once", "--max-offsets-per-trigger", "100", "--console-top", "0",
               "--bootstrap-servers", kafka.bootstrap_servers, "--topic", kafka.topic, "--output", str(output),
               "--results", url]
    with job_log.open("w") as log:
        job = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: batches_in(url) >= 3 or job.poll() is not None, 180)
        assert job.poll() is None, job_log.read_text()[-3000:]
        os.killpg(server.pid, signal.SIGTERM)  # the server goes away under the running job
        assert server.wait(30) == 0
        time.sleep(3)
        server, url = start_server(port, data, server_log)
        before = batches_in(url)
        wait_for(lambda: batches_in(url) >= before + 3 or job.poll() is not None, 180)
        assert job.poll() is None, job_log.read_text()[-3000:]
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        said = job_log.read_text()
        assert "lost the results store at " in said and "answers again" in said, said[-3000:]
        restarted = stream(kafka, output, "--max-offsets-per-trigger", "1000", "--results", url)
        assert re.search(r"^resuming after batch \d+", restarted.stderr, re.M)
        assert_answers_match(report_from(url, output), expected_answers(sample_records), malformed=len(HOSTILE))
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)



def wait_for(condition, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not condition():
        time.sleep(0.2)


def test_bad_results_urls_passwords_and_foreign_tables_are_one_line_without_the_password(kafka, sample_file,
                                                                                        tmp_path, postgres_url,
                                                                                        results_db):
    """Each refused before Spark starts, in one line, exit 1; no output shows a password."""
    replay(load_calls(sample_file, limit=50), kafka, Pacing(), progress=False)
    secret = "s3cret-" + uuid.uuid4().hex[:6]
    user = f"u{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {user} LOGIN PASSWORD '{secret}'")
    host = postgres_url.split("@", 1)[1].split("/", 1)[0]
    closed = f"127.0.0.1:{free_port()}"
    cases = {
        "mysql://me@localhost/db": "is not a PostgreSQL URL",
        f"postgresql://me@{closed}/db": "cannot reach the results store at postgresql://me@" + closed,
        f"postgresql://{user}:wrong-{secret}@{host}/sfcrime": "password authentication failed",
        f"postgresql://{user}@{host}/": "names no database",
    }
    for url, reason in cases.items():
        result = run_cli("data_stream.py", "--once", "--bootstrap-servers", kafka.bootstrap_servers, "--topic",
                         kafka.topic, "--output", str(tmp_path / "out"), "--results", url,
                         env={"PGPASSWORD": ""}, timeout=60)
        said = result.stdout + result.stderr
        assert result.returncode == 1 and reason in said, (url, said[-2000:])
        assert said.strip().count("\n") == 0 and secret not in said and "Traceback" not in said, said
    # the password from a config file works, and is not shown either
    config = tmp_path / "results.conf"
    config.write_text(f"password={secret}\n")
    shown = run_cli("report", "--results", f"postgresql://{user}@{host}/sfcrime", "--results-config-file", str(config),
                    "--json")
    assert secret not in shown.stdout + shown.stderr
    # a database holding another query's results is refused, like an SQLite folder
    stream(kafka, tmp_path / "first", "--results", results_db)
    other = run_cli("data_stream.py", "--once", "--bootstrap-servers", kafka.bootstrap_servers, "--topic", kafka.topic,
                    "--output", str(tmp_path / "second"), "--results", results_db, timeout=120)
    assert other.returncode == 1 and "holds results" in other.stderr and "--start-over" in other.stderr, other.stderr
    assert other.stderr.strip().count("\n") == 0, other.stderr
    # one job writes a database at a time: another job's session holds it (an advisory lock, in a process of its own)
    holder = subprocess.Popen([PYTHON, "-c", "import sys, time; from sfcrime.results import ResultsPlace; "
                               "from pathlib import Path; held = ResultsPlace(Path('x'), sys.argv[1]).open_store(); "
                               "print('holding', flush=True); time.sleep(120)", results_db],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        busy = run_cli("data_stream.py", "--once", "--bootstrap-servers", kafka.bootstrap_servers, "--topic",
                       kafka.topic, "--output", str(tmp_path / "first"), "--results", results_db, timeout=120)
        assert busy.returncode == 1 and "is in use by a running job" in busy.stderr, busy.stderr
    finally:
        holder.kill()
        holder.wait()
