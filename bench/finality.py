"""Finality over the whole file: no call late, no final window revised."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from sfcrime.config import REPO_DIR
from .processes import PY, create_topic, stop_job, wait_drained, wait_for, timed


FINALITY_ONCE = ((3, 1000), (7, 1000))  # (partitions, --max-offsets-per-trigger) over the whole file


def bench_finality(bootstrap: str, input_path: str, workdir: Path, baseline: Path | None = None) -> list[dict]:
    """Final means final, on the whole file: the replay is in event-time order within every partition, so
    no call should come late and no final window be revised, however the partitions are read. --once with
    small batches on topics of 3 and 7 partitions, and a live job during a full-speed replay; with
    --baseline, the code before beside it, each with its own defaults."""
    sides = {"before": baseline, "after": REPO_DIR} if baseline else {"after": REPO_DIR}
    topics = {}
    for partitions, _ in FINALITY_ONCE:
        topics[partitions] = f"bench-finality-{partitions}p-{int(time.time() * 1000)}"
        timed([PY, "kafka_server.py", "--max-speed", "--quiet", "--input", input_path, "--bootstrap-servers",
               bootstrap, "--topic", topics[partitions], "--partitions", str(partitions)])
    results = []
    for side, checkout in sides.items():
        for partitions, cap in FINALITY_ONCE:
            output = workdir / f"finality-{side}-{partitions}p"
            seconds = timed([PY, str(Path(checkout) / "data_stream.py"), "--once", "--console-top", "0",
                             "--bootstrap-servers", bootstrap, "--topic", topics[partitions], "--output", str(output),
                             "--max-offsets-per-trigger", str(cap)], cwd=checkout)[0]
            results.append(_finality(side, f"--once, {partitions} partitions, {cap} a trigger", output, seconds))
        results.append(_finality_live(bootstrap, input_path, workdir, side, checkout))
    return results


def _finality_live(bootstrap: str, input_path: str, workdir: Path, side: str, checkout: Path) -> dict:
    """The job live and waiting on an empty topic; then the whole file replayed at full speed."""
    topic = f"bench-finality-live-{side}-{int(time.time() * 1000)}"
    create_topic(bootstrap, topic)
    output, log_path = workdir / f"finality-{side}-live", workdir / f"finality-{side}-live.log"
    with open(log_path, "w") as log_file:
        job = subprocess.Popen([PY, str(Path(checkout) / "data_stream.py"), "--console-top", "0", "--bootstrap-servers",
                                bootstrap, "--topic", topic, "--output", str(output)], cwd=checkout, stdout=log_file,
                               stderr=subprocess.STDOUT)
    started = time.monotonic()
    try:
        wait_for(lambda: job.poll() is None and "query started" in log_path.read_text(), 180)
        timed([PY, "kafka_server.py", "--max-speed", "--quiet", "--input", input_path, "--bootstrap-servers",
               bootstrap, "--topic", topic, "--append"])
        wait_drained(output, 199_999, 900)
    finally:
        stop_job(job)
    return _finality(side, "live during a full-speed replay, 3 partitions", output, time.monotonic() - started)


def _finality(side: str, run: str, output: Path, seconds: float) -> dict:
    from sfcrime.report import answers

    got = answers(output, top=1, windows=1)
    result = {"mode": "finality", "side": side, "run": run, "wall_s": round(seconds, 1),
              "total_calls": got["total_calls"], "exact_total": got["total_calls"] == 199_995,
              "late_calls_counted": got["late_calls_counted"], "revised_windows": got["revised_windows"],
              "windows_final": got["windows"]["final"], "windows_open": got["windows"]["open"],
              "batches": got["batches"]}
    print(f"  {side}, {run}: {result['late_calls_counted']:,} calls late, {result['revised_windows']:,} windows "
          f"revised, {result['total_calls']:,} calls ({'exact' if result['exact_total'] else 'NOT EXACT'}), "
          f"{result['windows_final']:,} windows final, {result['windows_open']} open, {seconds:.0f} s", flush=True)
    return result
