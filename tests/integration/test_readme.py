"""README's commands, run as a newcomer types them: `make demo` from Quick start, and the "By hand" block step
by step, each command as README prints it (parsed from README, so an edit there is what runs here). What they
give is compared with README's answers block, with `report --json` and with an independent count of the file."""

from __future__ import annotations

import gzip
import json
import os
import re
import select
import shlex
import signal
import subprocess
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from sfcrime.glossary import labelled
from sfcrime.local.kafka import free_port
from sfcrime.report.readme import readme_answers
from tests.conftest import DATASET, PYTHON, REPO, read_topic, wait_for

pytestmark = pytest.mark.slow
README = REPO / "README.md"
LONG_RUNNING = ("python -m sfcrime broker", "spark-submit ", "python -m sfcrime dashboard")
CHART_TITLES = {
    "top_crime_types": "Top crime types (SF police calls for service)",
    "top_locations": "Crime density by location: the busiest addresses",
    "dispositions": "Dispositions of calls (radio code and description)",
    "calls_by_hour": "Calls by hour of day for the top crime types",
    "calls_over_time": "Calls over time for the top crime types",
    "calls_by_window": "Top crime types per event-time window",
}


def readme_commands(heading: str) -> list[str]:
    """The commands of the first ```sh block under `## heading`, their comments left off."""
    section = README.read_text().split(f"\n## {heading}\n", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [c for c in (line.split("#", 1)[0].strip() for line in block.splitlines()) if c]


def the_file() -> list[dict]:
    with gzip.open(DATASET, "rt", encoding="utf-8") as f:
        return json.load(f)


def distinct_calls(records) -> list[dict]:
    return list({r["crime_id"]: r for r in records}.values())


def readme_numbers() -> dict:
    """README's answers block, read as a person reads it: the totals and the two top-ten tables."""
    block = readme_answers(README)
    number = lambda pattern: int(re.search(pattern, block).group(1).replace(",", ""))  # noqa: E731
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in block.splitlines()
            if line.startswith("| ") and not line.startswith("| top crime types")]
    return {"total_calls": number(r"\*\*([\d,]+) calls\*\*"), "duplicates": number(r"([\d,]+) repeated messages"),
            "malformed": number(r"([\d,]+) malformed"), "windows": number(r"([\d,]+) windows of"),
            "final": number(r"([\d,]+) final"), "open": number(r"([\d,]+) still open"),
            "batches": number(r"Over ([\d,]+) micro-batches"),
            "types": [(r[0], int(r[1].replace(",", ""))) for r in rows if r[0]],
            "locations": [(r[3], int(r[4].replace(",", ""))) for r in rows if r[3]]}


def user_env(**extra: str) -> dict:
    """A terminal after `source .venv/bin/activate`, with none of the test run's own settings."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("KAFKA_BOOTSTRAP_SERVERS", "SFCRIME_RESULTS_URL", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    venv = str(Path(PYTHON).parent.parent)
    return dict(env, VIRTUAL_ENV=venv, PATH=f"{venv}/bin:{env.get('PATH', '')}", **extra)


def test_make_demo_gives_the_answers_readme_shows(tmp_path):
    """Quick start's first command, verbatim, on the full file: `report --json` then equals README's block,
    the page and its charts are written, and nothing it started is left running."""
    from PIL import Image

    commands = readme_commands("Quick start")
    assert commands[0] == "make demo", commands
    before = demo_brokers()
    demo = subprocess.run(shlex.split(commands[0]), cwd=REPO, env=user_env(), capture_output=True, text=True,
                          timeout=900)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "verify: EXACT: expected 199,999, received 199,999" in demo.stderr
    assert "Kafka source: Spark's connector" in demo.stderr
    assert "live dashboard: http://127.0.0.1:" in demo.stderr and "dashboard: http://127.0.0.1:" in demo.stdout
    assert demo_brokers() <= before  # the broker it started is gone

    output = REPO / "out" / "demo"
    got = json.loads(subprocess.run([PYTHON, "-m", "sfcrime", "report", "--output", str(output), "--json"],
                                    cwd=REPO, env=user_env(), capture_output=True, text=True, timeout=120).stdout)
    shown = readme_numbers()
    assert shown["total_calls"] == got["total_calls"] and shown["duplicates"] == got["duplicates"]
    assert shown["malformed"] == got["malformed"] and shown["batches"] == got["batches"]
    assert (shown["windows"], shown["final"], shown["open"]) == (
        got["windows"]["count"], got["windows"]["final"], got["windows"]["open"])
    assert shown["types"] == [(labelled(r["crime_type"]), r["count"]) for r in got["top_crime_types"][:10]]
    assert shown["locations"] == [(r["address"], r["count"]) for r in got["top_locations"][:10]]

    calls = distinct_calls(the_file())  # and both equal the file counted here
    assert got["total_calls"] == len(calls)
    kinds = Counter(c["original_crime_type_name"] for c in calls)
    assert {r["crime_type"]: r["count"] for r in got["top_crime_types"]} == {
        k: kinds[k] for k in (r["crime_type"] for r in got["top_crime_types"])}
    page = (output / "report" / "report.md").read_text()
    assert f"| Passing Call | {kinds['Passing Call']:,} |" in page
    for name, title in CHART_TITLES.items():
        assert f"(charts/{name}.png)" in page
        with Image.open(output / "report" / "charts" / f"{name}.png") as image:
            assert image.format == "PNG" and image.width > 500 and image.height > 200
            assert image.info.get("Title") == title


def demo_brokers() -> set[str]:
    """The demo's own brokers (their data folder is sfcrime-demo-kafka-*): other tests start brokers of their own."""
    out = subprocess.run(["pgrep", "-f", "java.*sfcrime-demo-kafka-.* kafka.Kafka "], capture_output=True,
                         text=True).stdout
    return set(out.split())



class Terminal:
    """The terminals of "By hand": each command started from a folder of the user's own, as README prints it."""

    def __init__(self, folder: Path, env: dict):
        self.folder, self.env, self.background = folder, env, []
        for script in ("kafka_server.py", "consumer_server.py", "data_stream.py"):
            (folder / script).symlink_to(REPO / script)

    def run(self, command: str, timeout: float = 180) -> subprocess.CompletedProcess:
        done = subprocess.run(shlex.split(command), cwd=self.folder, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        assert done.returncode == 0, f"{command}: {done.stderr[-3000:]}"
        return done

    def start(self, command: str, log: str, read_stdout: bool = False) -> subprocess.Popen:
        """In the background, its own process group; what it says goes to `log` (its stdout too, unless read)."""
        said = (self.folder / log).open("w")
        process = subprocess.Popen(shlex.split(command), cwd=self.folder, env=self.env, text=True,
                                   stdout=subprocess.PIPE if read_stdout else said, stderr=said, start_new_session=True)
        self.background.append(process)
        return process

    def ctrl_c(self, process: subprocess.Popen, timeout: float = 90) -> int:
        os.killpg(process.pid, signal.SIGINT)
        return process.wait(timeout)

    def close(self) -> None:
        for process in reversed(self.background):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(30)



def counted(output: Path) -> int | None:
    """Calls the job has counted so far, read from its results as `report` does (None before the first batch)."""
    import sqlite3

    from sfcrime.answers import answers
    from sfcrime.errors import UserError

    try:
        return answers(output, top=1, windows=1)["total_calls"]
    except (UserError, sqlite3.Error):
        return None


def test_the_by_hand_steps_run_as_readme_prints_them(tmp_path):
    """Each command of "By hand" as README prints it. Two additions, both what a user on a shared machine
    would type: the broker gets a free port and a data folder of its own (and every other command finds it
    through KAFKA_BOOTSTRAP_SERVERS, as README says), the dashboard any free port."""
    steps = readme_commands("By hand")
    assert [s.split()[:2] for s in steps] == [
        ["python", "-m"], ["python", "kafka_server.py"], ["kafka-console-consumer.sh", "--topic"],
        ["python", "consumer_server.py"], ["spark-submit", "data_stream.py"], ["python", "kafka_server.py"],
        ["python", "-m"], ["python", "-m"], ["python", "consumer_server.py"]], steps
    broker, replay, kafkas_tool, ours, job, live, report, dashboard, verify = steps
    port = free_port()
    terminal = Terminal(tmp_path, user_env(KAFKA_BOOTSTRAP_SERVERS=f"localhost:{port}"))
    file = the_file()
    try:
        # 1. the broker, ready when it says so
        kafka = terminal.start(f"{broker} --port {port} --data-dir {tmp_path / 'kafka-data'}", "broker.log")
        wait_for("the broker's ready line", lambda: (tmp_path / "broker.log").read_text(),
                 lambda said: "Ctrl-C to stop" in said, 90, [kafka])
        # 2. the first calls, oldest first
        sent = int(re.search(r"--limit (\d+)", replay).group(1))
        assert f"sent {sent:,} of {sent:,} calls, failed 0" in terminal.run(replay).stderr
        held = read_topic(f"localhost:{port}", "calls", sent)
        assert len(held) == sent
        # 3. five calls, printed by Kafka's tool and by ours, each a call of the file
        ids = {r["crime_id"] for r in file}
        for command in (kafkas_tool, ours):
            lines = terminal.run(command, timeout=120).stdout.splitlines()
            assert len(lines) == 5 and all(json.loads(line)["crime_id"] in ids for line in lines), (command, lines)
        # 4. the live job counts what the topic holds, each call once
        spark = terminal.start(job, "job.log")
        first = len({json.loads(m.value())["crime_id"] for m in held})
        wait_for("the job to count the first calls", lambda: counted(tmp_path / "out"), lambda n: n == first, 300,
                 [spark])
        # 5. live traffic moves the answers while it is still being sent
        traffic = terminal.start(live, "live.log")
        wait_for("the answers to move", lambda: counted(tmp_path / "out"), lambda n: n is not None and n > first, 120,
                 [spark])
        assert traffic.poll() is None, "the live traffic was over before the answers moved"
        # 6. the report, while the job runs
        assert "Top crime types" in terminal.run(report).stdout
        # 7. the dashboard answers in a browser's place
        page = terminal.start(f"{dashboard} --port 0", "dashboard.log", read_stdout=True)
        ready, _, _ = select.select([page.stdout], [], [], 60)
        url = page.stdout.readline().split()[1] if ready else ""
        with urllib.request.urlopen(url + "api/answers", timeout=30) as response:
            assert json.load(response)["total_calls"] > first
        assert terminal.ctrl_c(page) in (0, 130)
        # 8. once step 5 is done, the topic holds exactly the file, and the job counts every call of it once
        assert traffic.wait(300) == 0, (tmp_path / "live.log").read_text()[-2000:]
        assert f"verify: EXACT: expected {len(file):,}, received {len(file):,}" in terminal.run(verify).stdout
        calls = distinct_calls(file)
        wait_for("the job to count the whole file", lambda: counted(tmp_path / "out"), lambda n: n == len(calls),
                 120, [spark])
        assert terminal.ctrl_c(spark) == 130
        said = (tmp_path / "job.log").read_text()
        assert "resume with the same --output" in said and "Traceback" not in said, said[-3000:]
        answers = json.loads(terminal.run(f"{report} --json").stdout)
        kinds, places = Counter(c["original_crime_type_name"] for c in calls), Counter(c["address"] for c in calls)
        assert answers["total_calls"] == len(calls)
        assert [(r["crime_type"], r["count"]) for r in answers["top_crime_types"]] == sorted(
            kinds.items(), key=lambda kv: (-kv[1], kv[0]))[:len(answers["top_crime_types"])]
        assert [(r["address"], r["count"]) for r in answers["top_locations"]] == sorted(
            places.items(), key=lambda kv: (-kv[1], kv[0]))[:len(answers["top_locations"])]
        assert terminal.ctrl_c(kafka) == 0
    finally:
        terminal.close()
