"""State a user can trust, without Spark: a live job waits for its topic and holds its results folder, so
neither the demo nor another job's --start-over can delete it under the job."""

import signal
import subprocess

from tests.conftest import PYTHON, REPO, run_cli


def test_a_live_job_waits_for_its_topic_and_no_command_takes_its_folder(kafka, tmp_path):
    output = tmp_path / "out"
    target = ["--bootstrap-servers", kafka.bootstrap_servers, "--topic", kafka.topic, "--output", str(output)]
    once = run_cli("data_stream.py", "--once", *target, timeout=60)
    assert once.returncode == 1 and once.stderr.strip().splitlines() == [
        f"error: topic {kafka.topic!r} does not exist at {kafka.bootstrap_servers} "
        "(replay the calls first: python kafka_server.py)"]

    job = subprocess.Popen([PYTHON, "data_stream.py", *target], cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        assert job.stderr.readline().strip() == (
            f"waiting: topic {kafka.topic!r} does not exist at {kafka.bootstrap_servers} "
            "(replay the calls first: python kafka_server.py); Ctrl-C stops")
        in_use = f"error: {output} is in use by a running job (pid {job.pid}): stop it first, or use another --output"
        demo = run_cli("demo", "--output", str(output), "--limit", "10", env={"KAFKA_BOOTSTRAP_SERVERS": ""},
                       timeout=60)
        start_over = run_cli("data_stream.py", "--start-over", *target, timeout=60)
        for refused in (demo, start_over):
            assert refused.returncode == 1 and refused.stderr.strip().splitlines() == [in_use]
        assert not any(output.glob("*.sqlite"))  # nothing written or deleted
    finally:
        job.send_signal(signal.SIGINT)
        _, err = job.communicate(timeout=60)
    assert job.returncode == 130, err
