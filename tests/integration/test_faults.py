"""Faults: the broker stopped, or killed, and started again. Apache Kafka keeps its data on disk, so the
topic and every message survive; a replay running through a crash completes, and verify says EXACT."""

import re
import subprocess
import time
from collections import Counter

from sfcrime.config import KafkaSettings
from sfcrime.consumer import verify
from sfcrime.dataset import load_calls
from sfcrime.local.kafka import KafkaNode
from sfcrime.producer import Pacing, replay
from tests.conftest import PYTHON, REPO, read_topic


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
            if job.poll() is None:
                import os
                import signal

                os.killpg(job.pid, signal.SIGKILL)
                job.wait()
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
