"""Faults: the broker stopped, or killed, and started again. Apache Kafka keeps its data on disk, so the
topic and every message survive; a replay running through a crash completes, and verify says EXACT."""

import re
import subprocess
import time
from collections import Counter

from sfcrime.kafka_settings import KafkaSettings
from sfcrime.consumer import verify
from sfcrime.dataset import load_calls
from sfcrime.local.kafka import KafkaNode
from sfcrime.producer import Pacing, replay
from tests.conftest import PYTHON, REPO, kill_if_running, read_topic


def test_the_topic_and_every_message_survive_a_broker_restart(sample_file, sample_records, tmp_path):
    node = KafkaNode(tmp_path / "kafka").start()
    try:
        settings = KafkaSettings(bootstrap_servers=node.bootstrap_servers, topic="calls", timeout_s=10)
        assert replay(load_calls(sample_file), settings, Pacing(), progress=False).ok
        node.stop()
        node = KafkaNode(tmp_path / "kafka", port=node.port).start()
        assert len(read_topic(node.bootstrap_servers, "calls", len(sample_records))) == len(sample_records)
        assert verify(settings, sample_file, progress=False).exact
    finally:
        node.stop()


def test_a_replay_running_through_a_broker_crash_completes_exactly(sample_file, tmp_path):
    node = KafkaNode(tmp_path / "kafka").start()
    try:
        producer = subprocess.Popen(
            [PYTHON, "kafka_server.py", "--input", str(sample_file), "--rate", "600", "--quiet",
             "--bootstrap-servers", node.bootstrap_servers, "--topic", "crashed"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not read_topic(node.bootstrap_servers, "crashed", 1, timeout_s=1) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        node.kill()  # SIGKILL mid-replay: no controlled shutdown
        time.sleep(1.0)
        node = KafkaNode(tmp_path / "kafka", port=node.port).start()
        _, err = producer.communicate(timeout=120)
        assert producer.returncode == 0, err
        summary = next(line for line in err.splitlines() if line.startswith("sent "))
        assert re.search(r"sent 3,000 of 3,000 calls, failed 0, unacknowledged 0", summary), summary

        settings = KafkaSettings(bootstrap_servers=node.bootstrap_servers, topic="crashed", timeout_s=10)
        result = verify(settings, sample_file, progress=False)
        assert result.exact, result.lines()  # nothing lost, nothing twice (the producer is idempotent)
    finally:
        node.stop()


def test_a_broker_lost_under_a_live_job_is_one_line_naming_it(sample_file, tmp_path):
    """Spark's connector retries a vanished broker for minutes, then fails in about a hundred lines that
    blame the broker software; a job given --broker-timeout says what happened, in one line, within about a
    minute."""
    node = KafkaNode(tmp_path / "kafka").start()
    output = tmp_path / "out"
    try:
        settings = KafkaSettings(bootstrap_servers=node.bootstrap_servers, topic="calls", timeout_s=10)
        assert replay(load_calls(sample_file, limit=200), settings, Pacing(), progress=False).ok
        job = subprocess.Popen([PYTHON, "data_stream.py", "--trigger", "1 second", "--console-top", "0",
                                "--broker-timeout", "30 seconds",  # a live job waits for ever without it
                                "--bootstrap-servers", node.bootstrap_servers, "--output", str(output)],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
        try:
            lines = []
            for line in job.stderr:  # until batch 0 is counted
                lines.append(line)
                if line.startswith("batch 0: "):
                    break
            held = Counter(message.partition() for message in read_topic(node.bootstrap_servers, "calls", 200))
            node.kill()
            rest = job.stderr.read()
            job.wait(120)
        finally:
            kill_if_running(job)
        assert job.returncode == 1, "".join(lines) + rest
        last = rest.strip().splitlines()[-1]
        partitions = ", ".join(f"{p} up to offset {n:,}" for p, n in sorted(held.items()))  # batch 0 read all
        assert last == (
            f"error: lost the broker at {node.bootstrap_servers} while reading topic 'calls' (partitions "
            f"{partitions}): nothing has answered there for 30 s; every finished batch is kept: start it again "
            f"and resume with the same --output {output}")
        assert len(rest.strip().splitlines()) <= 3, rest  # the last batch lines at most, then the error
    finally:
        node.stop()


def test_the_spark_jvm_killed_from_outside_is_one_line_and_the_job_resumes_exact(kafka, sample_file, sample_records,
                                                                                 tmp_path):
    """The JVM under `python data_stream.py` killed from another terminal (kill -9, or the kernel out of
    memory): py4j logged every command the JVM could not answer, pages of tracebacks. Now one line, and the
    job started again counts on from its last finished batch: each call once."""
    import os
    import signal

    from tests.integration.test_stream import assert_answers_match, expected_answers, report, stream

    replay(load_calls(sample_file), kafka, Pacing(), progress=False)
    output = tmp_path / "out"
    job = subprocess.Popen([PYTHON, "data_stream.py", "--console-top", "0", "--max-offsets-per-trigger", "300",
                            "--bootstrap-servers", kafka.bootstrap_servers, "--topic", kafka.topic,
                            "--output", str(output)],
                           cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        lines = []
        for line in job.stderr:  # until a batch after the first is counted (the lines come at most every few s)
            lines.append(line)
            if re.match(r"batch [1-9]\d*: ", line):
                break
        java = subprocess.run(["pgrep", "-P", str(job.pid), "java"], capture_output=True, text=True).stdout.split()
        assert len(java) == 1, (java, "".join(lines))
        os.kill(int(java[0]), signal.SIGKILL)
        rest = job.stderr.read()
        job.wait(60)
    finally:
        kill_if_running(job)
    assert job.returncode == 1 and "Traceback" not in rest and "py4j" not in rest, rest[-3000:]
    said = rest.strip().splitlines()
    assert said[-1] == (f"error: Spark's JVM (pid {java[0]}) was killed by signal 9 under the running job: every "
                        f"finished batch is kept: start it again and resume with the same --output {output}"), rest
    assert len(said) <= 3, rest  # the last batch lines at most, then the error
    restarted = stream(kafka, output, "--max-offsets-per-trigger", "300")
    assert "resuming after batch" in restarted.stderr
    assert_answers_match(report(output), expected_answers(sample_records))


def test_a_damaged_checkpoint_is_refused_in_one_line_naming_the_file(kafka, sample_file, sample_records, tmp_path):
    """A truncated file, a deleted state file, the last batches deleted: each is one line naming what and
    the way back, before anything is counted; the folder restored, the job resumes and nothing is twice."""
    import shutil

    from tests.conftest import run_cli
    from tests.integration.test_stream import assert_answers_match, expected_answers, report, stream

    replay(load_calls(sample_file), kafka, Pacing(), progress=False)
    output = tmp_path / "out"
    stream(kafka, output, "--max-offsets-per-trigger", "1000")  # 3 batches
    checkpoint = output / "checkpoint"
    shutil.copytree(checkpoint, tmp_path / "copy")
    changelog = sorted((checkpoint / "state" / "0" / "0").glob("*.changelog"))[0]
    last = max(int(p.name) for p in (checkpoint / "commits").glob("[0-9]*"))  # 3 or 4 batches

    def truncate(path):
        path.write_bytes(path.read_bytes()[:-3])

    def delete(*names):
        for name in names:
            (checkpoint / name).unlink()

    cases = [(lambda: truncate(checkpoint / "offsets" / "1"),
              f"{checkpoint / 'offsets' / '1'} is truncated or changed (it no longer matches its checksum)"),
             (changelog.unlink, f"{changelog} is missing (its checksum file is there)"),
             (lambda: delete("offsets/1", "offsets/.1.crc"), f"{checkpoint / 'offsets' / '1'} is missing (the log goes on"),
             (lambda: delete(f"offsets/{last}", f"offsets/.{last}.crc", f"commits/{last}", f"commits/.{last}.crc"),
              f"{checkpoint} ends before batch {last}, which the results hold")]
    for damage, named in cases:
        damage()
        refused = run_cli("data_stream.py", "--once", "--bootstrap-servers", kafka.bootstrap_servers, "--topic",
                          kafka.topic, "--output", str(output), timeout=120)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
        said = refused.stderr.strip().splitlines()[-1]
        assert said.startswith(f"error: the checkpoint is damaged: {named}") and said.endswith(
            f"restore {checkpoint} from a copy, or pass --start-over to count from the beginning (the results go too)"), said
        shutil.rmtree(checkpoint)
        shutil.copytree(tmp_path / "copy", checkpoint)
    assert_answers_match(report(output), expected_answers(sample_records))  # nothing was counted meanwhile
    stream(kafka, output, "--max-offsets-per-trigger", "1000")
    assert_answers_match(report(output), expected_answers(sample_records))


def test_messages_deleted_before_the_job_read_them_are_named_recorded_and_never_silent(kafka, sample_file,
                                                                                         sample_records, tmp_path):
    """Kafka's retention (here its delete-records, which moves a partition's start the same way) deletes
    messages a stopped job had not read: one line naming the partitions and how many; with
    --accept-data-loss the job counts what is left, and every answer says it is short of them."""
    import json

    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    from tests.conftest import run_cli
    from tests.integration.test_stream import report, stream

    replay(load_calls(sample_file, limit=1000), kafka, Pacing(), progress=False)
    output = tmp_path / "out"
    stream(kafka, output)
    first = read_topic(kafka.bootstrap_servers, kafka.topic, 1000)
    read_to = {p: max(m.offset() for m in first if m.partition() == p) + 1 for p in {m.partition() for m in first}}
    replay(load_calls(sample_file, skip=1000), kafka, Pacing(), progress=False, append=True)
    gone = {p: o + 100 for p, o in read_to.items()}  # 100 unread messages of each partition deleted
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    for future in admin.delete_records([TopicPartition(kafka.topic, p, o) for p, o in gone.items()]).values():
        future.result(30)

    refused = run_cli("data_stream.py", "--once", "--bootstrap-servers", kafka.bootstrap_servers, "--topic",
                      kafka.topic, "--output", str(output), timeout=120)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    named = ", ".join(f"partition {p} offsets {read_to[p]:,} to {gone[p] - 1:,} (100 messages)" for p in sorted(gone))
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: Kafka's retention deleted messages of topic {kafka.topic!r} that the job had not read: {named} "
        f"({100 * len(gone):,} messages in all); the answers cannot be exact without them: pass --accept-data-loss "
        "to count on from what is left (the loss is recorded with the results), or --start-over to count what is "
        "left from the beginning")

    stream(kafka, output, "--accept-data-loss")
    kept = read_topic(kafka.bootstrap_servers, kafka.topic, 3000 - sum(gone.values()))  # what is left to read
    calls = {json.loads(m.value())["crime_id"] for m in kept} | {json.loads(m.value())["crime_id"] for m in first}
    answers = report(output)
    assert answers["total_calls"] == len(calls) < 2999  # every call that was there to read, once
    assert answers["data_loss"]["messages"] == 100 * len(gone) and answers["data_loss"]["exact"] is False
    assert [(r["partition"], r["from_offset"], r["to_offset"]) for r in answers["data_loss"]["ranges"]] == [
        (p, read_to[p], gone[p]) for p in sorted(gone)]
    printed = run_cli("report", "--output", str(output), "--no-charts")
    assert f"Not exact: Kafka's retention deleted {100 * len(gone):,} messages before the job read them" in printed.stdout


def test_another_program_holding_the_results_file_is_waited_for_and_nothing_is_lost(kafka, sample_file,
                                                                                    sample_records, tmp_path):
    """A second program takes the results file's write lock (as a sqlite3 shell in a transaction does) for
    over a minute under a live job: the job says so, waits, and counts every call once it lets go."""
    import os
    import signal
    import sqlite3

    from tests.integration.test_stream import assert_answers_match, expected_answers, report

    replay(load_calls(sample_file, limit=1000), kafka, Pacing(), progress=False)
    output = tmp_path / "out"
    job = subprocess.Popen([PYTHON, "data_stream.py", "--console-top", "0", "--bootstrap-servers",
                            kafka.bootstrap_servers, "--topic", kafka.topic, "--output", str(output)], cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=(tmp_path / "job.err").open("w"), start_new_session=True)
    holder = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert job.poll() is None, (tmp_path / "job.err").read_text()[-2000:]
            if "batch 0: " in (tmp_path / "job.err").read_text():
                break
            time.sleep(0.5)
        holder = subprocess.Popen([PYTHON, "-c", "import sqlite3, sys, time\n"
                                   "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
                                   "db.execute('BEGIN IMMEDIATE'); print('held', flush=True); time.sleep(75)\n"
                                   "db.execute('ROLLBACK')", str(output / "results.sqlite")],
                                  stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "held"
        replay(load_calls(sample_file, skip=1000), kafka, Pacing(), progress=False, append=True)
        holder.wait(120)
        assert job.poll() is None, (tmp_path / "job.err").read_text()[-2000:]
        said = (tmp_path / "job.err").read_text()
        assert "results.sqlite is locked by another program for " in said and "Traceback" not in said, said[-2000:]
        deadline = time.monotonic() + 120
        while report(output)["total_calls"] < 2999:
            assert time.monotonic() < deadline and job.poll() is None, (tmp_path / "job.err").read_text()[-2000:]
            time.sleep(1)
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGINT)
            job.wait(90)
    assert job.returncode == 130
    assert_answers_match(report(output), expected_answers(sample_records))


def test_a_full_disk_under_the_output_stops_the_job_in_one_line_and_it_counts_on_once_freed(
        kafka, sample_file, sample_records, tmp_path):
    """--output on a small file system of its own (tmpfs, as root), filled up under a live job while calls
    arrive: one line saying so and what to do, nothing half-written; space freed, the job counts on exactly."""
    from tests.integration.test_stream import assert_answers_match, expected_answers, report, stream

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk)], capture_output=True, text=True)
    assert mounted.returncode == 0, f"the test mounts a small tmpfs as root: {mounted.stderr}"
    try:
        replay(load_calls(sample_file, limit=1000), kafka, Pacing(), progress=False)
        output = disk / "out"
        job = subprocess.Popen([PYTHON, "data_stream.py", "--console-top", "0", "--bootstrap-servers",
                                kafka.bootstrap_servers, "--topic", kafka.topic, "--output", str(output)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=(tmp_path / "job.err").open("w"),
                               start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            while "batch 0: " not in (tmp_path / "job.err").read_text():
                assert time.monotonic() < deadline and job.poll() is None, (tmp_path / "job.err").read_text()[-2000:]
                time.sleep(0.5)
            with open(disk / "filler", "wb") as filler:  # what else on the disk takes its space
                try:
                    while True:
                        filler.write(b"\0" * 1_048_576)
                        filler.flush()
                except OSError:
                    pass
            replay(load_calls(sample_file, skip=1000), kafka, Pacing(), progress=False, append=True)
            job.wait(240)
        finally:
            kill_if_running(job)
        said = (tmp_path / "job.err").read_text()
        assert job.returncode == 1 and "Traceback" not in said, said[-3000:]
        last = said.strip().splitlines()[-1]
        assert last.startswith("error: the disk under ") and " is full (" in last and "free some space and start the job again with the same --output" in last, last
        (disk / "filler").unlink()
        stream(kafka, output)
        assert_answers_match(report(output), expected_answers(sample_records))
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
