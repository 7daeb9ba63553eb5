"""Produce-to-counted latency of a live job under a paced replay, minute by minute, side by side with a
baseline checkout."""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import time
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Callable

from sfcrime.config import REPO_DIR
from sfcrime.errors import UserError
from .processes import PY, create_topic, open_results, percentile, stop_job, timed, wait_drained, wait_for


# Settings tried beside the defaults, at 2,000 calls/s (docs/benchmarks.md, "Latency"): a side's name, and
# the job's flags and environment (SFCRIME_LATENCY_JAVA_HOME: the same job on another JDK, on its own archive;
# SFCRIME_LATENCY_FLAGS: the same job with these flags)
LATENCY_VARIANTS: dict[str, tuple[list[str], dict[str, str]]] = {}
if os.environ.get("SFCRIME_LATENCY_JAVA_HOME"):
    LATENCY_VARIANTS["after, on SFCRIME_LATENCY_JAVA_HOME"] = ([], {"JAVA_HOME": os.environ["SFCRIME_LATENCY_JAVA_HOME"]})
if os.environ.get("SFCRIME_LATENCY_FLAGS"):  # e.g. "--spark-conf K=V": the job's flags for a setting tried
    LATENCY_VARIANTS["after, with SFCRIME_LATENCY_FLAGS"] = (shlex.split(os.environ["SFCRIME_LATENCY_FLAGS"]), {})
# Calls/s and seconds of warm-up before each measured live run. A live job runs for hours; right after its
# start the JVM is still compiling Spark's code: at 2,000 calls/s here the JIT took ~1 core-second a second in
# the first minute and ~0.35 in the third (jstat -compiler), and latency p50 fell from 1.38 s in the first
# 40 s to 0.9-1.0 s after two minutes. Two minutes at 2,000 calls/s come first; their latency is reported too.
WARM_UP_RATE, WARM_UP_S = 2000, 120.0
LATENCY_RATES = {2000: 120.0, 10000: 60.0}  # calls/s: seconds of live replay (the issue: >= 2 minutes at 2,000)


def bench_latency(bootstrap: str, input_path: str, workdir: Path, quick: bool, baseline: Path | None = None,
                  rounds: int = 2, rates: list[int] | None = None, postgres: Callable[[], str] | None = None) -> list[dict]:
    """Produce -> counted, live, with the job's default settings: the code before (a checkout of it, run
    with its own defaults) and now, alternating in one run so the machine's load falls on both.

    Each run replays at a fixed rate for a fixed time (bench/paced_producer.py, which goes on past the end
    of the file with renewed calls), waits until the job has read everything, and checks the results equal
    the producer's own count of what it sent."""
    sides = {"before": baseline, "after": REPO_DIR} if baseline else {"after": REPO_DIR}
    results = []
    for rate, seconds in LATENCY_RATES.items():
        if rates and rate not in rates:
            continue
        for i in range(1 if quick or rate != 2000 else rounds):
            for side, checkout in sides.items():
                results.append(_live_latency(bootstrap, input_path, workdir, side, checkout, rate, seconds, i))
            if postgres:  # the same job, its results in PostgreSQL
                results.append(_live_latency(bootstrap, input_path, workdir, "after, PostgreSQL", REPO_DIR, rate,
                                             seconds, i, ["--results", postgres()]))
                compare_writes(results[-1], next((r for r in reversed(results) if r.get("side") == "after"
                                                  and r.get("input_rate") == rate), None))
            if rate == 2000:
                for side, (flags, env) in LATENCY_VARIANTS.items():
                    results.append(_live_latency(bootstrap, input_path, workdir, side, REPO_DIR, rate, seconds, i,
                                                 flags, env))
    return results


def compare_writes(postgresql: dict, sqlite: dict | None) -> None:
    """The job's own per-batch results write (resultsWrite, p50 over the measured batches), PostgreSQL over
    SQLite at the same rate in the same run: issue 30's target is 1.5x. Kept in the PostgreSQL run's result."""
    try:
        ours, theirs = (run["duration_ms_median"]["resultsWrite"] for run in (postgresql, sqlite))
    except (KeyError, TypeError):
        return
    postgresql["results_write_p50_ms"] = {"sqlite": theirs, "postgresql": ours,
                                          "ratio": round(ours / theirs, 2) if theirs else None}
    print(f"  results write per batch, the job's own (p50): SQLite {theirs:g} ms, PostgreSQL {ours:g} ms"
          + (f" ({ours / theirs:.2f}x; target <= 1.5x)" if theirs else ""), flush=True)


def counted_by_type(db: sqlite3.Connection) -> dict[str, int]:
    """The job's calls per crime type, from its results: what the producer's own count must equal."""
    return dict(db.execute("SELECT crime_type, SUM(count) FROM crime_type_panes GROUP BY crime_type").fetchall())


def call_latencies(db: sqlite3.Connection, sent_after: float = 0.0, sent_before: float = float("inf")) -> list[float]:
    """Each call's seconds from its send (Kafka timestamp) to its batch's commit into the results, for
    calls sent at or after `sent_after` and before `sent_before` (epoch seconds).

    A batch keeps the earliest, latest and mean send time of its calls, not each one; at a fixed send rate
    its calls were sent evenly between the earliest and the latest, so each batch stands for that many
    evenly spaced calls."""
    latencies = []
    for written, rows, lo, hi in db.execute("SELECT written_at, rows, kafka_ts_min, kafka_ts_max FROM batches "
                                            "WHERE rows > 0 AND kafka_ts_min IS NOT NULL"):
        sends = (lo + (hi - lo) * (k + 0.5) / rows for k in range(rows))
        latencies.extend(written - sent for sent in sends if sent_after <= sent < sent_before)
    return latencies


def latency_by_minute(db: sqlite3.Connection, started_at: float, minutes: int) -> list[list[float]]:
    """[p50, p95] of the calls sent in each minute from `started_at`: how latency settles as the JVM warms up."""
    series = []
    for minute in range(minutes):
        latencies = call_latencies(db, started_at + 60 * minute, started_at + 60 * (minute + 1))
        if latencies:
            series.append([round(percentile(latencies, 0.5), 3), round(percentile(latencies, 0.95), 3)])
    return series


def backlog_series(db: sqlite3.Connection, started_at: float, rate: int, total: int) -> list[tuple[float, int]]:
    """(seconds since the send began, calls sent but not yet counted) at each batch's commit.

    The progress table's backlog is what was in the topic when the batch was planned beyond what it read:
    always 0 without maxOffsetsPerTrigger. What a live job owes is what was sent meanwhile: the producer's
    pace times the time, minus the calls counted so far."""
    series, counted = [], 0
    for written, rows in db.execute("SELECT written_at, rows FROM batches WHERE rows > 0 AND kafka_ts_min >= ? "
                                    "ORDER BY batch_id", (started_at,)):
        counted += rows
        series.append((round(written - started_at, 1), max(0, min(total, int(rate * (written - started_at))) - counted)))
    return series


def duration_breakdown(db: sqlite3.Connection, first_batch: int = 0) -> dict[str, float]:
    """Median of each of Spark's durationMs fields over the batches that read calls (ms)."""
    fields: dict[str, list[int]] = {}
    for (text,) in db.execute("SELECT durations FROM progress WHERE input_rows > 0 AND durations IS NOT NULL "
                              "AND batch_id >= ?", (first_batch,)):
        for key, value in json.loads(text).items():
            fields.setdefault(key, []).append(value)
    return {key: statistics.median(values) for key, values in sorted(fields.items())}


def _live_latency(bootstrap, input_path, workdir, side, checkout, rate, seconds, round_no, flags=(),
                  env: dict[str, str] | None = None) -> dict:
    name = f"live-{side.replace(',', '').replace(' ', '-')}-{rate}-{round_no}"
    topic = f"bench-{name}-{int(time.time() * 1000)}"
    create_topic(bootstrap, topic)
    output, log_path = workdir / name, workdir / f"{name}.log"
    shutil.rmtree(output, ignore_errors=True)
    command = [PY, str(Path(checkout) / "data_stream.py"), "--console-top", "0", "--bootstrap-servers", bootstrap,
               "--topic", topic, "--output", str(output), *flags]  # no flags: the job's defaults are what is measured
    with open(log_path, "w") as log_file:
        job = subprocess.Popen(command, cwd=checkout, stdout=log_file, stderr=subprocess.STDOUT,
                               env={**os.environ, **(env or {})})
    label = f"  {side}, {rate:,} calls/s for {seconds:g} s (round {round_no + 1})"
    url = flags[list(flags).index("--results") + 1] if "--results" in flags else None
    try:
        run = _replay_live(job, log_path, output, workdir / name, input_path, bootstrap, topic, rate, seconds, url)
    except UserError as error:
        tail = " | ".join(log_path.read_text().splitlines()[-8:])
        print(f"{label}: FAILED: {error}; job log: {tail}", flush=True)
        return {"mode": "latency", "side": side, "input_rate": rate, "error": f"{error}; job log: {tail}"}
    finally:
        stop_job(job)
    result = {"mode": "latency", "side": side, "checkout": str(checkout), "flags": list(flags), "env": env or {},
              "input_rate": rate,
              "seconds": seconds, "results_store": "postgresql" if url else "sqlite",
              **_measured(output, rate, seconds, url=url, **run)}
    print(f"{label}: latency p50 {result['latency_p50_s']:.2f} s, p95 {result['latency_p95_s']:.2f} s "
          f"(warm-up before it, {result['warm_up']['calls']:,} calls at {WARM_UP_RATE:,}/s: p50 "
          f"{result['warm_up']['latency_p50_s']:.2f} s, p95 {result['warm_up']['latency_p95_s']:.2f} s), "
          f"batch p50 {result['batch_p50_s']} s over {result['batches']} batches, backlog max "
          f"{result['backlog_max_first_half']:,} then {result['backlog_max_second_half']:,}, "
          f"{'exact' if result['exact'] else 'NOT EXACT'} ({result['counted_calls']:,} of "
          f"{result['distinct_calls']:,} calls), load {result['load_avg_1m'][0]:.1f}-{result['load_avg_1m'][1]:.1f}; "
          f"durationMs {result['duration_ms_median']}", flush=True)
    return result


def _replay_live(job, log_path: Path, output: Path, stem: Path, input_path, bootstrap, topic, rate, seconds,
                 url: str | None = None) -> dict:
    """Warm the job up, then replay at `rate` for `seconds`, and wait until it has counted everything."""
    def started() -> bool:
        if job.poll() is not None:
            raise UserError(f"the job exited ({job.returncode})")
        return "query started" in log_path.read_text()

    wait_for(started, 180)  # planned and waiting for data
    # A live job runs for hours; its first batches pay once for the JIT, Python workers and code
    # generation (over a minute on this loaded machine). Warm it up with calls of their own first.
    warm_path, sent_path = stem.with_name(f"{stem.name}-warm-up.json"), stem.with_name(f"{stem.name}-sent.json")
    timed([PY, "bench/paced_producer.py", input_path, bootstrap, topic, str(WARM_UP_RATE), str(WARM_UP_S),
           str(warm_path), "w"], timeout=600)
    warm = json.loads(warm_path.read_text())
    wait_drained(output, warm["sent"], 600, url)
    with closing(open_results(output, url)) as db:
        first_measured = db.execute("SELECT MAX(batch_id) + 1 FROM progress").fetchone()[0]
    load_before = os.getloadavg()[0]
    timed([PY, "bench/paced_producer.py", input_path, bootstrap, topic, str(rate), str(seconds), str(sent_path),
           f"--from={warm['sent']}"], timeout=seconds + 600)  # carries on in event time after the warm-up
    load_after = os.getloadavg()[0]
    sent = json.loads(sent_path.read_text())
    drain_started = time.monotonic()
    wait_drained(output, warm["sent"] + sent["sent"], 300 + sent["sent"] / 2000, url)
    return {"warm": warm, "sent": sent, "first_measured": first_measured,
            "drain_s": time.monotonic() - drain_started, "loads": (load_before, load_after)}


def _measured(output: Path, rate: int, seconds: float, warm: dict, sent: dict, first_measured: int, drain_s: float,
              loads: tuple[float, float], url: str | None = None) -> dict:
    """A live run's figures, from its results and the producers' own count of what they sent."""
    db = open_results(output, url)
    latencies = call_latencies(db, sent["started_at"])
    warm_latencies = call_latencies(db, warm["started_at"], sent["started_at"])
    progress = db.execute("SELECT duration_ms, backlog FROM progress WHERE input_rows > 0 AND batch_id >= ? "
                          "ORDER BY batch_id", (first_measured,)).fetchall()
    owed = backlog_series(db, sent["started_at"], rate, sent["sent"])
    while_sending = [b for t, b in owed if t <= sent["seconds"]]
    half = len(while_sending) // 2
    counted = counted_by_type(db)
    total_calls = sum(counted.values())
    malformed = db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
    expected = Counter(sent["crime_types"]) + Counter(warm["crime_types"])  # independent: the producers' own count
    distinct = sent["distinct_calls"] + warm["distinct_calls"]
    return {
        "sent": sent["sent"], "send_seconds": sent["seconds"], "distinct_calls": distinct,
        "counted_calls": total_calls, "malformed": malformed,
        "exact": total_calls == distinct and counted == dict(expected) and malformed == 0,
        "drain_after_send_s": round(drain_s, 1), "batches": len(progress),
        "latency_p50_s": round(percentile(latencies, 0.5), 3), "latency_p95_s": round(percentile(latencies, 0.95), 3),
        "latency_max_s": round(max(latencies), 3),
        "warm_up": {"rate": WARM_UP_RATE, "seconds": WARM_UP_S, "calls": warm["sent"],
                    "latency_p50_s": round(percentile(warm_latencies, 0.5), 3),
                    "latency_p95_s": round(percentile(warm_latencies, 0.95), 3)},
        "latency_by_minute_from_start": latency_by_minute(db, warm["started_at"],
                                                          math.ceil((WARM_UP_S + seconds) / 60) + 1),
        "batch_p50_s": percentile([d / 1000 for d, _ in progress], 0.5),
        "batch_p95_s": percentile([d / 1000 for d, _ in progress], 0.95),
        "backlog_max_first_half": max(while_sending[:half] or [0]),
        "backlog_max_second_half": max(while_sending[half:] or [0]), "backlog_series": owed,
        "duration_ms_median": duration_breakdown(db, first_measured),
        "load_avg_1m": [round(loads[0], 1), round(loads[1], 1)],
    }
