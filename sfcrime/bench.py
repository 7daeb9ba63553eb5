"""`python -m sfcrime bench`: side-by-side measurements in one run, written to bench/results/.

This machine is noisy, so every comparison runs both sides in the same run, alternating, and reports
medians and their ratio. Targets (from the issues):
  producer   kafka_server.py --max-speed       <= 2x a minimal librdkafka producer (bench/minimal_producer.py)
  memory     kafka_server.py, full replay      <= 200 MB peak RSS
  consumer   consumer_server.py --verify       topic read <= 2x a minimal librdkafka consumer
  stream     data_stream.py --once, connector   <= 1.0x a plain Spark batch job (python -m sfcrime.stream.batch);
             our Python source beside it
  startup    Spark started on the class-data archive (local/class_archive.py) and without it: a session and
             its first query, the full replay --once, the batch job
  tuning     the streaming job under a grid of Spark settings: rows/s, batch p50/p95, end-to-end latency
  once-parts (not in `all`) the connector's full replay --once with parts of the job's plan taken away
             (bench/once_parts.py), and the same read as a batch query, beside the batch job and the job
             itself: what each part costs, and what the connector's read costs before any streaming
  scale      (not in `all`) the full replay --once on 1, 2, 3 topic partitions x 1, 2 executors of a
             Spark standalone cluster (local/spark_cluster.py): rows/s side by side
  soak       (not in `all`) a fixed-rate replay for minutes while the job runs live: memory stays flat,
             nothing is lost
  finality   (not in `all`) the whole file in event-time order per partition: no call late, no final window
             revised, --once with 1,000 a trigger on 3 and 7 partitions and live during a full-speed replay
"""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import sqlite3
import statistics
import shutil
from collections import Counter
from contextlib import closing
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

from .config import DEFAULT_INPUT, REPO_DIR, UserError
from .results import path_in

PY = sys.executable
ROUNDS = 3


def timed(command: list[str], env: dict | None = None, timeout: float = 900,
          cwd: Path = REPO_DIR) -> tuple[float, str]:
    """Run a command to completion; return (wall seconds, its stdout and stderr)."""
    started = time.monotonic()
    result = subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, **(env or {})), timeout=timeout)
    if result.returncode != 0:
        raise UserError(f"benchmark command failed ({result.returncode}): {' '.join(command)}\n{result.stdout[-2000:]}")
    return time.monotonic() - started, result.stdout


def peak_rss_mb(command: list[str]) -> tuple[float, float]:
    """Wall seconds and the peak RSS (MB) of one process, measured by wait4 on it alone."""
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=REPO_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise UserError(f"benchmark command failed: {' '.join(command)}: {process.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def side_by_side(name: str, baseline: callable, ours: callable, rounds: int = ROUNDS, target: float = 2.0) -> dict:
    """Alternate the two, `rounds` times each; medians and ratio."""
    base_times, our_times = [], []
    for i in range(rounds):
        base_times.append(baseline(i))
        our_times.append(ours(i))
        print(f"  {name} round {i + 1}: baseline {base_times[-1]:.2f} s, ours {our_times[-1]:.2f} s", flush=True)
    base, mine = statistics.median(base_times), statistics.median(our_times)
    result = {"baseline_s": base_times, "ours_s": our_times, "baseline_median_s": round(base, 3),
              "ours_median_s": round(mine, 3), "ratio": round(mine / base, 3), "target_ratio": target,
              "met": mine / base <= target}
    print(f"{name}: ours {mine:.2f} s vs baseline {base:.2f} s: {mine / base:.2f}x (target <= {target}x) "
          f"{'MET' if result['met'] else 'NOT MET'}", flush=True)
    return result


def bench_producer(bootstrap: str, input_path: str) -> dict:
    topic = lambda kind, i: f"bench-{kind}-{i}-{int(time.time() * 1000)}"  # noqa: E731
    kafka_env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap}

    def baseline(i):
        t = topic("minprod", i)
        _create_topic(bootstrap, t)
        return timed([PY, "bench/minimal_producer.py", input_path, bootstrap, t])[0]

    def ours(i):
        return timed([PY, "kafka_server.py", "--max-speed", "--quiet", "--input", input_path, "--topic",
                      topic("ours", i)], env=kafka_env)[0]

    result = {"librdkafka": side_by_side("producer", baseline, ours)}
    seconds, rss = peak_rss_mb([PY, "kafka_server.py", "--max-speed", "--quiet", "--input", input_path,
                                "--bootstrap-servers", bootstrap, "--topic", topic("mem", 0)])
    result["memory"] = {"peak_rss_mb": round(rss, 1), "seconds": round(seconds, 2), "target_mb": 200,
                        "met": rss <= 200}
    print(f"memory: full replay peaks at {rss:.0f} MB RSS (target <= 200 MB) {'MET' if rss <= 200 else 'NOT MET'}")
    seconds = timed([PY, "kafka_server.py", "--max-speed", "--quiet", "--client", "kafka-python", "--input",
                     input_path, "--topic", topic("kp", 0)], env=kafka_env)[0]
    result["kafka_python_s"] = round(seconds, 2)
    print(f"producer with --client kafka-python: {seconds:.2f} s "
          f"({seconds / result['librdkafka']['ours_median_s']:.1f}x the librdkafka default)")
    return result


def _create_topic(bootstrap: str, topic: str, partitions: int = 3) -> None:
    from .clients import ensure_topic
    from .config import KafkaSettings

    ensure_topic(KafkaSettings(bootstrap_servers=bootstrap, topic=topic), partitions)


def _filled_topic(bootstrap: str, input_path: str) -> str:
    topic = f"bench-full-{int(time.time() * 1000)}"
    timed([PY, "kafka_server.py", "--max-speed", "--quiet", "--input", input_path, "--bootstrap-servers", bootstrap,
           "--topic", topic])
    return topic


def bench_consumer(bootstrap: str, input_path: str, topic: str) -> dict:
    def baseline(i):
        output = timed([PY, "bench/minimal_consumer.py", bootstrap, topic, "3", "199999"])[1]
        return float(output.split(" in ")[1].split(" s")[0])

    read_times: list[float] = []

    def ours(i):
        seconds, output = timed([PY, "consumer_server.py", "--verify", "--quiet", "--input", input_path,
                                    "--bootstrap-servers", bootstrap, "--topic", topic])
        read_times.append(float(output.split("topic read in ")[1].split(" s")[0]))
        return read_times[-1]

    result = side_by_side("consumer (topic read)", baseline, ours, rounds=5)  # short rounds, noisy: take more
    result["note"] = ("both sides time their read loop (consumer creation to last message); process start "
                      "and, for --verify, loading the source file are excluded")
    return result


def bench_stream(bootstrap: str, input_path: str, topic: str, workdir: Path, rounds: int = 2,
                 baseline: Path | None = None) -> dict:
    """The full replay --once with Spark's connector and with our Python source, against the plain Spark
    batch job over the file; JVM start included in each, run alternately so the machine's noise is shared.
    With a baseline checkout, its connector job and its batch job run too: --once must not get slower than
    the code before, and a ratio must not improve only because the batch job got slower."""
    def stream(source: str, i: int, checkout: Path = REPO_DIR, name: str = "") -> float:
        return timed([PY, str(checkout / "data_stream.py"), "--once", "--console-top", "0", "--source", source,
                      "--bootstrap-servers", bootstrap, "--topic", topic,
                      "--output", str(workdir / f"stream-{name or source}-{i}")], cwd=checkout)[0]

    times: dict[str, list[float]] = {"batch": [], "kafka": [], "python": []}
    if baseline:
        times["kafka_before"], times["batch_before"] = [], []
    for i in range(rounds):
        times["batch"].append(timed([PY, "-m", "sfcrime.stream.batch", input_path])[0])
        if baseline:
            times["batch_before"].append(timed([PY, "-m", "sfcrime.stream.batch", input_path], cwd=baseline)[0])
            times["kafka_before"].append(stream("kafka", i, baseline, "before"))
        times["kafka"].append(stream("kafka", i))
        times["python"].append(stream("python", i))
        print(f"  stream round {i + 1}: batch {times['batch'][-1]:.1f} s, connector {times['kafka'][-1]:.1f} s"
              + (f" (before: {times['kafka_before'][-1]:.1f} s, its batch job {times['batch_before'][-1]:.1f} s)"
                 if baseline else "")
              + f", python source {times['python'][-1]:.1f} s", flush=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {"seconds": times, "median_s": {k: round(v, 2) for k, v in medians.items()},
              "connector_ratio": round(medians["kafka"] / medians["batch"], 3),
              "python_source_ratio": round(medians["python"] / medians["batch"], 3),
              "target_connector_ratio": 1.0}
    if baseline:
        result["connector_ratio_before"] = round(medians["kafka_before"] / medians["batch"], 3)
        result["connector_ratio_before_own_batch"] = round(medians["kafka_before"] / medians["batch_before"], 3)
        result["after_over_before"] = round(medians["kafka"] / medians["kafka_before"], 3)
    result["met"] = result["connector_ratio"] <= 1.0
    print(f"stream --once: connector {result['connector_ratio']:.2f}x, python source {result['python_source_ratio']:.2f}x "
          f"the batch job (target: connector <= 1.0x) {'MET' if result['met'] else 'NOT MET'}"
          + (f"; the code before: {result['connector_ratio_before']:.2f}x (now/before "
             f"{result['after_over_before']:.2f})" if baseline else ""), flush=True)
    return result


SESSION_AND_FIRST_QUERY = ("from sfcrime.stream.session import build_session; "
                           "build_session('bench-startup').range(10).selectExpr('sum(id)').collect()")


def bench_startup(bootstrap: str, input_path: str, topic: str, workdir: Path, rounds: int = 2) -> dict:
    """Each Spark start with the class-data archive `make setup` made and with SFCRIME_CLASS_ARCHIVE=off,
    alternately: a session and its first query, the connector's full replay --once, the batch job."""
    from .local.class_archive import archive_path

    if not archive_path().is_file():
        raise UserError("bench startup: no class-data archive (make setup makes it)")
    runs = {
        "session": lambda i, name: [PY, "-c", SESSION_AND_FIRST_QUERY],
        "stream_once": lambda i, name: [PY, "data_stream.py", "--once", "--console-top", "0", "--bootstrap-servers",
                                        bootstrap, "--topic", topic, "--output", str(workdir / f"startup-{name}-{i}")],
        "batch": lambda i, name: [PY, "-m", "sfcrime.stream.batch", input_path],
    }
    times: dict[str, list[float]] = {f"{run}_{side}": [] for run in runs for side in ("archive", "off")}
    for i in range(rounds):
        for run, command in runs.items():
            times[f"{run}_archive"].append(timed(command(i, "archive"))[0])
            times[f"{run}_off"].append(timed(command(i, "off"), env={"SFCRIME_CLASS_ARCHIVE": "off"})[0])
        print(f"  startup round {i + 1}: " + ", ".join(
            f"{run} {times[f'{run}_archive'][-1]:.1f} s (off: {times[f'{run}_off'][-1]:.1f} s)" for run in runs), flush=True)
    medians = {name: round(statistics.median(values), 2) for name, values in times.items()}
    result = {"seconds": times, "median_s": medians, "archive_mb": round(archive_path().stat().st_size / 1e6),
              "saved_s": {run: round(medians[f"{run}_off"] - medians[f"{run}_archive"], 2) for run in runs},
              "connector_over_batch": {side: round(medians[f"stream_once_{side}"] / medians[f"batch_{side}"], 3)
                                       for side in ("archive", "off")}}
    print("startup, saved by the class-data archive (medians): " + ", ".join(
        f"{run} {result['saved_s'][run]:.1f} s of {medians[f'{run}_off']:.1f}" for run in runs)
          + f"; connector/batch {result['connector_over_batch']['archive']:.2f}x on it, "
          f"{result['connector_over_batch']['off']:.2f}x off", flush=True)
    return result


ONCE_PARTS = ("kafka-batch", "read", "check", "dedupe", "plan")


def bench_once_parts(bootstrap: str, input_path: str, topic: str, workdir: Path, rounds: int = 3) -> dict:
    """The connector's full replay --once with parts of the job's plan taken away (bench/once_parts.py),
    alternately with the batch job and the job itself: what each part costs against the batch job."""
    script = str(REPO_DIR / "bench" / "once_parts.py")
    runs = {"batch": lambda i: [PY, "-m", "sfcrime.stream.batch", input_path],
            **{part: (lambda i, part=part: [PY, script, part, bootstrap, topic]) for part in ONCE_PARTS},
            "job": lambda i: [PY, "data_stream.py", "--once", "--console-top", "0", "--bootstrap-servers", bootstrap,
                              "--topic", topic, "--output", str(workdir / f"once-parts-job-{i}")]}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(rounds):
        for name, command in runs.items():
            times[name].append(timed(command(i))[0])
        print(f"  once-parts round {i + 1}: " + ", ".join(f"{name} {times[name][-1]:.1f} s" for name in runs), flush=True)
    medians = {name: round(statistics.median(values), 2) for name, values in times.items()}
    over_batch = {name: round(medians[name] / medians["batch"], 3) for name in runs if name != "batch"}
    print("once-parts, medians over the batch job's: " + ", ".join(f"{name} {ratio:.2f}x" for name, ratio in
                                                                  over_batch.items()), flush=True)
    return {"seconds": times, "median_s": medians, "over_batch": over_batch}


def bench_broker(workdir: Path, rounds: int = 3) -> dict:
    """How long `python -m sfcrime broker`'s Kafka takes to answer metadata: first start (formats the
    storage) and restarts on the same data; alternately on Kafka's class archive (kafka_archive.py) and
    without it (SFCRIME_CLASS_ARCHIVE=off)."""
    from .local.kafka import KafkaNode

    times: dict[str, dict[str, list[float]]] = {"archive": {"first": [], "restart": []},
                                                 "no_archive": {"first": [], "restart": []}}
    for i in range(rounds):
        for kind, measured in times.items():
            with mock.patch.dict(os.environ, {"SFCRIME_CLASS_ARCHIVE": "on" if kind == "archive" else "off"}):
                data = workdir / f"broker-{kind}-{i}"
                for attempt in ("first", "restart"):
                    started = time.monotonic()
                    node = KafkaNode(data).start()
                    measured[attempt].append(round(time.monotonic() - started, 2))
                    node.stop()
        print(f"  broker round {i + 1}: first start {times['archive']['first'][-1]:.1f} s, restart "
              f"{times['archive']['restart'][-1]:.1f} s; without the class archive "
              f"{times['no_archive']['first'][-1]:.1f} s and {times['no_archive']['restart'][-1]:.1f} s", flush=True)

    def summary(measured: dict[str, list[float]]) -> dict:
        return {"first_start_s": measured["first"], "restart_s": measured["restart"],
                "first_start_median_s": statistics.median(measured["first"]),
                "restart_median_s": statistics.median(measured["restart"])}

    first, restarts = times["archive"]["first"], times["archive"]["restart"]
    result = {**summary(times["archive"]), "target_s": 20.0, "without_archive": summary(times["no_archive"])}
    result["met"] = max(first + restarts) <= 20.0
    print(f"broker ready: first start {result['first_start_median_s']:.1f} s, restart {result['restart_median_s']:.1f} s "
          f"(target <= 20 s) {'MET' if result['met'] else 'NOT MET'}; without the class archive "
          f"{result['without_archive']['first_start_median_s']:.1f} s and "
          f"{result['without_archive']['restart_median_s']:.1f} s", flush=True)
    return result


TUNING_BASE = {"spark.sql.shuffle.partitions": "4", "maxOffsetsPerTrigger": "50000", "master": "local[*]"}
TUNING_GRID = [
    {},
    {"spark.sql.shuffle.partitions": "1"},
    {"spark.sql.shuffle.partitions": "2"},  # the job's own default
    {"spark.sql.shuffle.partitions": "16"},
    {"spark.sql.shuffle.partitions": "200"},
    {"spark.default.parallelism": "8"},
    {"maxOffsetsPerTrigger": "10000"},
    {"maxOffsetsPerTrigger": "200000"},
    {"master": "local[1]"},
]
QUICK_GRID = [{}, {"spark.sql.shuffle.partitions": "200"}, {"maxOffsetsPerTrigger": "10000"}, {"master": "local[1]"}]


def _stream_command(bootstrap, topic, output, settings, once=True, trigger=None) -> list[str]:
    command = [PY, "data_stream.py", "--console-top", "0", "--bootstrap-servers", bootstrap, "--topic", topic,
               "--output", str(output), "--master", settings["master"],
               "--max-offsets-per-trigger", settings["maxOffsetsPerTrigger"]]
    if once:
        command.append("--once")
    if trigger:
        command += ["--trigger", trigger]
    for key, value in settings.items():
        if key.startswith("spark."):
            command += ["--spark-conf", f"{key}={value}"]
    return command


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def _run_metrics(output: Path) -> dict:
    db = sqlite3.connect(path_in(output))
    progress = db.execute("SELECT input_rows, duration_ms, processed_rps FROM progress WHERE input_rows > 0").fetchall()
    batches = db.execute("SELECT written_at, rows, kafka_ts_min, kafka_ts_max, kafka_ts_mean FROM batches "
                         "WHERE rows > 0").fetchall()
    rows = sum(r[0] for r in progress)
    busy_s = sum(r[1] for r in progress) / 1000
    latencies = [w - mean for w, _, _, _, mean in batches if mean]
    worst = [w - lo for w, _, lo, _, _ in batches if lo]
    return {
        "batches": len(progress), "rows": rows,
        "processed_rows_per_s": round(rows / busy_s) if busy_s else None,
        "batch_p50_s": _percentile([r[1] / 1000 for r in progress], 0.5),
        "batch_p95_s": _percentile([r[1] / 1000 for r in progress], 0.95),
        "latency_p50_s": round(_percentile(latencies, 0.5), 2) if latencies else None,
        "latency_p95_s": round(_percentile(worst, 0.95), 2) if worst else None,
    }


def bench_tuning(bootstrap: str, input_path: str, topic: str, workdir: Path, quick: bool) -> list[dict]:
    """Throughput: each setting drains the full topic (--once). Latency: live, at a fixed input rate."""
    results = []
    grid = QUICK_GRID if quick else TUNING_GRID
    for i, change in enumerate(grid):
        settings = dict(TUNING_BASE, **change)
        output = workdir / f"tuning-{i}"
        seconds = timed(_stream_command(bootstrap, topic, output, settings))[0]
        metrics = _run_metrics(output)
        row = {"mode": "throughput", "change": change or "baseline", "settings": settings,
               "wall_s": round(seconds, 1), **metrics}
        results.append(row)
        print(f"  tuning {change or 'baseline'}: {metrics['processed_rows_per_s']} rows/s, "
              f"batch p50 {metrics['batch_p50_s']} s p95 {metrics['batch_p95_s']} s, wall {seconds:.0f} s", flush=True)
    return results


SCALE_PARTITIONS = (1, 2, 3)
SCALE_EXECUTORS = (1, 2)


def bench_scale(bootstrap: str, input_path: str, workdir: Path) -> list[dict]:
    """The same full replay drained (--once) from topics of 1, 2 and 3 partitions by 1 and 2 executors
    (one core, 768 MB each) on a two-worker standalone cluster; the baseline's other settings."""
    from .local.spark_cluster import SparkStandaloneCluster

    topics = {}
    for partitions in SCALE_PARTITIONS:
        topics[partitions] = f"bench-scale-{partitions}p-{int(time.time() * 1000)}"
        timed([PY, "kafka_server.py", "--max-speed", "--quiet", "--input", input_path, "--bootstrap-servers", bootstrap,
               "--topic", topics[partitions], "--partitions", str(partitions)])
    results = []
    with SparkStandaloneCluster(workers=max(SCALE_EXECUTORS), cores_per_worker=1, memory="1g",
                                work_dir=workdir / "scale-cluster") as cluster:
        for partitions in SCALE_PARTITIONS:
            for executors in SCALE_EXECUTORS:
                settings = dict(TUNING_BASE, master=cluster.master_url, **{
                    "spark.executor.memory": "768m", "spark.executor.cores": "1", "spark.cores.max": str(executors)})
                output = workdir / f"scale-{partitions}p-{executors}x"
                load = os.getloadavg()[0]  # other work on the machine moves these numbers: keep it with them
                seconds = timed(_stream_command(bootstrap, topics[partitions], output, settings))[0]
                metrics = _run_metrics(output)
                results.append({"mode": "scale", "partitions": partitions, "executors": executors,
                                "settings": settings, "wall_s": round(seconds, 1), "load_avg_1m": round(load, 1),
                                **metrics})
                print(f"  scale: {partitions} partition(s), {executors} executor(s): "
                      f"{metrics['processed_rows_per_s']} rows/s, batch p50 {metrics['batch_p50_s']} s, "
                      f"wall {seconds:.0f} s", flush=True)
    return results


LATENCY_RATES = {2000: 120.0, 10000: 60.0}  # calls/s: seconds of live replay (the issue: >= 2 minutes at 2,000)


def bench_latency(bootstrap: str, input_path: str, workdir: Path, quick: bool, baseline: Path | None = None,
                  rounds: int = 2, rates: list[int] | None = None) -> list[dict]:
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
            if rate == 2000:
                for side, flags in LATENCY_VARIANTS.items():
                    results.append(_live_latency(bootstrap, input_path, workdir, side, REPO_DIR, rate, seconds, i,
                                                 flags))
    return results


# Settings tried beside the defaults, at 2,000 calls/s (README, "Latency")
LATENCY_VARIANTS: dict[str, list[str]] = {}


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
            series.append([round(_percentile(latencies, 0.5), 3), round(_percentile(latencies, 0.95), 3)])
    return series


# Calls/s and seconds of warm-up before each measured live run. A live job runs for hours; right after its
# start the JVM is still compiling Spark's code: at 2,000 calls/s here the JIT took ~1 core-second a second in
# the first minute and ~0.35 in the third (jstat -compiler), and latency p50 fell from 1.38 s in the first
# 40 s to 0.9-1.0 s after two minutes. Two minutes at 2,000 calls/s come first; their latency is reported too.
WARM_UP_RATE, WARM_UP_S = 2000, 120.0


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


def _live_latency(bootstrap, input_path, workdir, side, checkout, rate, seconds, round_no, flags=()) -> dict:
    name = f"live-{side.replace(',', '').replace(' ', '-')}-{rate}-{round_no}"
    topic = f"bench-{name}-{int(time.time() * 1000)}"
    _create_topic(bootstrap, topic)
    output, log_path, sent_path = workdir / name, workdir / f"{name}.log", workdir / f"{name}-sent.json"
    shutil.rmtree(output, ignore_errors=True)
    command = [PY, str(Path(checkout) / "data_stream.py"), "--console-top", "0", "--bootstrap-servers", bootstrap,
               "--topic", topic, "--output", str(output), *flags]  # no flags: the job's defaults are what is measured
    with open(log_path, "w") as log_file:
        job = subprocess.Popen(command, cwd=checkout, stdout=log_file, stderr=subprocess.STDOUT)
    label = f"  {side}, {rate:,} calls/s for {seconds:g} s (round {round_no + 1})"
    try:
        def started() -> bool:
            if job.poll() is not None:
                raise UserError(f"the job exited ({job.returncode})")
            return "query started" in log_path.read_text()

        _wait_for(started, 180)  # planned and waiting for data
        # A live job runs for hours; its first batches pay once for the JIT, Python workers and code
        # generation (over a minute on this loaded machine). Warm it up with calls of their own first.
        warm_path = workdir / f"{name}-warm-up.json"
        timed([PY, "bench/paced_producer.py", input_path, bootstrap, topic, str(WARM_UP_RATE), str(WARM_UP_S),
               str(warm_path), "w"], timeout=600)
        warm = json.loads(warm_path.read_text())
        _wait_drained(output, warm["sent"], 600)
        with closing(sqlite3.connect(output / "results.sqlite")) as db:
            first_measured = db.execute("SELECT MAX(batch_id) + 1 FROM progress").fetchone()[0]
        load_before = os.getloadavg()[0]
        timed([PY, "bench/paced_producer.py", input_path, bootstrap, topic, str(rate), str(seconds), str(sent_path),
               f"--from={warm['sent']}"], timeout=seconds + 600)  # carries on in event time after the warm-up
        load_after = os.getloadavg()[0]
        sent = json.loads(sent_path.read_text())
        drain_started = time.monotonic()
        _wait_drained(output, warm["sent"] + sent["sent"], 300 + sent["sent"] / 2000)
        drain_s = time.monotonic() - drain_started
    except UserError as error:
        tail = " | ".join(log_path.read_text().splitlines()[-8:])
        print(f"{label}: FAILED: {error}; job log: {tail}", flush=True)
        return {"mode": "latency", "side": side, "input_rate": rate, "error": f"{error}; job log: {tail}"}
    finally:
        _stop(job)
    db = sqlite3.connect(output / "results.sqlite")
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
    sent["distinct_calls"] += warm["distinct_calls"]
    exact = total_calls == sent["distinct_calls"] and counted == dict(expected) and malformed == 0
    result = {
        "mode": "latency", "side": side, "checkout": str(checkout), "flags": list(flags), "input_rate": rate,
        "seconds": seconds,
        "sent": sent["sent"], "send_seconds": sent["seconds"], "distinct_calls": sent["distinct_calls"],
        "counted_calls": total_calls, "malformed": malformed, "exact": exact, "drain_after_send_s": round(drain_s, 1),
        "batches": len(progress),
        "latency_p50_s": round(_percentile(latencies, 0.5), 3), "latency_p95_s": round(_percentile(latencies, 0.95), 3),
        "latency_max_s": round(max(latencies), 3),
        "warm_up": {"rate": WARM_UP_RATE, "seconds": WARM_UP_S, "calls": warm["sent"],
                    "latency_p50_s": round(_percentile(warm_latencies, 0.5), 3),
                    "latency_p95_s": round(_percentile(warm_latencies, 0.95), 3)},
        "latency_by_minute_from_start": latency_by_minute(db, warm["started_at"],
                                                          math.ceil((WARM_UP_S + seconds) / 60) + 1),
        "batch_p50_s": _percentile([d / 1000 for d, _ in progress], 0.5),
        "batch_p95_s": _percentile([d / 1000 for d, _ in progress], 0.95),
        "backlog_max_first_half": max(while_sending[:half] or [0]),
        "backlog_max_second_half": max(while_sending[half:] or [0]), "backlog_series": owed,
        "duration_ms_median": duration_breakdown(db, first_measured),
        "load_avg_1m": [round(load_before, 1), round(load_after, 1)],
    }
    print(f"{label}: latency p50 {result['latency_p50_s']:.2f} s, p95 {result['latency_p95_s']:.2f} s "
          f"(warm-up before it, {warm['sent']:,} calls at {WARM_UP_RATE:,}/s: p50 "
          f"{result['warm_up']['latency_p50_s']:.2f} s, p95 {result['warm_up']['latency_p95_s']:.2f} s), "
          f"batch p50 {result['batch_p50_s']} s over {len(progress)} batches, backlog max "
          f"{result['backlog_max_first_half']:,} then {result['backlog_max_second_half']:,}, "
          f"{'exact' if exact else 'NOT EXACT'} ({total_calls:,} of {sent['distinct_calls']:,} calls), "
          f"load {load_before:.1f}-{load_after:.1f}; durationMs {result['duration_ms_median']}", flush=True)
    return result


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
    _create_topic(bootstrap, topic)
    output, log_path = workdir / f"finality-{side}-live", workdir / f"finality-{side}-live.log"
    with open(log_path, "w") as log_file:
        job = subprocess.Popen([PY, str(Path(checkout) / "data_stream.py"), "--console-top", "0", "--bootstrap-servers",
                                bootstrap, "--topic", topic, "--output", str(output)], cwd=checkout, stdout=log_file,
                               stderr=subprocess.STDOUT)
    started = time.monotonic()
    try:
        _wait_for(lambda: job.poll() is None and "query started" in log_path.read_text(), 180)
        timed([PY, "kafka_server.py", "--max-speed", "--quiet", "--input", input_path, "--bootstrap-servers",
               bootstrap, "--topic", topic, "--append"])
        _wait_drained(output, 199_999, 900)
    finally:
        _stop(job)
    return _finality(side, "live during a full-speed replay, 3 partitions", output, time.monotonic() - started)


def _finality(side: str, run: str, output: Path, seconds: float) -> dict:
    from .report import answers

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


def _has_progress(output: Path) -> bool:
    db = sqlite3.connect(output / "results.sqlite")
    try:
        return db.execute("SELECT COUNT(*) FROM progress").fetchone()[0] > 0
    finally:
        db.close()


def _wait_drained(output: Path, rows: int, timeout_s: float) -> None:
    """Until the live job has read `rows` messages (input rows: repeated calls are dropped after the read)."""
    def drained() -> bool:
        db = sqlite3.connect(path_in(output))
        return (db.execute("SELECT COALESCE(SUM(input_rows), 0) FROM progress").fetchone()[0] or 0) >= rows
    _wait_for(drained, timeout_s)


def _stop(job: subprocess.Popen) -> None:
    """Ctrl-C for the live job, as a user would stop it; kill if it doesn't go."""
    job.send_signal(signal.SIGINT)
    try:
        job.wait(60)
    except subprocess.TimeoutExpired:
        job.kill()


def _wait_for(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except sqlite3.Error:
            pass
        time.sleep(0.5)
    raise UserError(f"benchmark step did not finish within {timeout_s:g}s")


def _process_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def _proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as {"Name": "java", "VmRSS": "123456 kB", ...}; empty once the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return dict((key, value.strip()) for key, _, value in (line.partition(":") for line in lines))


def tree_rss_mb(pid: int, only: str | None = None) -> float:
    """Resident memory of a process and all its descendants (the job: Python driver, JVM, Python workers);
    with `only`, of those whose command name is that (e.g. "java")."""
    total = 0.0
    for current in _process_tree(pid):
        status = _proc_status(current)
        if status and (only is None or status.get("Name") == only):
            total += int(status.get("VmRSS", "0 kB").split()[0]) / 1024
    return round(total, 1)


def live_heap_mb(pid: int) -> float | None:
    """The JVM's heap in use right after a full GC (jcmd GC.run, then jstat): what a leak would grow.

    RSS can't tell: G1 lets the old generation fill to its cap before it collects. None without a JDK."""
    java = [p for p in _process_tree(pid) if _proc_status(p).get("Name") == "java"]
    if not java or not shutil.which("jcmd") or not shutil.which("jstat"):
        return None
    try:
        subprocess.run(["jcmd", str(java[0]), "GC.run"], capture_output=True, timeout=60, check=True)
        header, values = subprocess.run(["jstat", "-gc", str(java[0])], capture_output=True, text=True,
                                        timeout=60, check=True).stdout.split("\n")[:2]
    except (subprocess.SubprocessError, OSError, ValueError):
        return None
    gc = dict(zip(header.split(), map(float, values.split())))
    return round(sum(gc.get(k, 0.0) for k in ("S0U", "S1U", "EU", "OU")) / 1024, 1)


def bench_soak(bootstrap: str, input_path: str, workdir: Path, minutes: float, rate: int = 500,
               heap: str = "1g") -> dict:
    """Replay at a fixed rate for `minutes` while the job runs live; memory sampled every 10 s.

    The producer is bench/paced_producer.py, which goes on past the end of the file with calls made new
    (crime_id ~1, ~2, ...), so a soak may last as long as wanted and every call is distinct: "counted once,
    forever" keeps one dedupe key per call, and the heap must grow with those keys and nothing else. So
    the result is the live heap (after a full GC) against the state's keys: the bytes each key costs (a
    least-squares line) and how far the heap strays from that line. The JVM gets a fixed heap: with the
    default (a quarter of the RAM) it grows for as long as it may, and a leak would look the same as lazy
    garbage collection."""
    topic = f"bench-soak-{int(time.time() * 1000)}"
    _create_topic(bootstrap, topic)
    output, sent_path = workdir / "soak", workdir / "soak-sent.json"
    shutil.rmtree(output, ignore_errors=True)
    seconds = minutes * 60
    # The job's own defaults (trigger, shuffle partitions, no maxOffsetsPerTrigger), but a fixed heap.
    command = [PY, "data_stream.py", "--console-top", "0", "--bootstrap-servers", bootstrap, "--topic", topic,
               "--output", str(output), "--spark-conf", f"spark.driver.memory={heap}"]
    job = subprocess.Popen(command, cwd=REPO_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = []
    try:
        _wait_for(lambda: path_in(output).exists(), 120)
        producer = subprocess.Popen([PY, "bench/paced_producer.py", input_path, bootstrap, topic, str(rate),
                                     str(seconds), str(sent_path), "--lazy"],
                                    cwd=REPO_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        started = time.monotonic()
        while producer.poll() is None:
            with closing(sqlite3.connect(path_in(output))) as db:
                keys = db.execute("SELECT state_rows FROM progress ORDER BY batch_id DESC LIMIT 1").fetchone()
            samples.append({"t_s": round(time.monotonic() - started), "producer_mb": tree_rss_mb(producer.pid),
                            "job_mb": tree_rss_mb(job.pid), "job_jvm_mb": tree_rss_mb(job.pid, "java"),
                            "jvm_live_heap_mb": live_heap_mb(job.pid) if len(samples) % 3 == 0 else None,
                            "state_keys": keys[0] if keys else 0,
                            "checkpoint_state_mb": dir_mb(output / "checkpoint" / "state")})
            last = samples[-1]
            print(f"  soak {last['t_s']:>5} s of {seconds:g}: job {last['job_mb']} MB (JVM {last['job_jvm_mb']} MB, "
                  f"live heap after GC {last['jvm_live_heap_mb'] or '-'} MB), dedupe state {last['state_keys']:,} "
                  f"keys, {last['checkpoint_state_mb']} MB in the checkpoint", flush=True)
            time.sleep(10)
        if producer.returncode != 0:
            raise UserError(f"soak producer failed: {producer.stderr.read()[-1000:]}")
        sent = json.loads(sent_path.read_text())
        _wait_drained(output, sent["sent"], 300)
    finally:
        _stop(job)
    db = sqlite3.connect(path_in(output))
    processed = db.execute("SELECT SUM(input_rows) FROM progress").fetchone()[0]
    counted = db.execute("SELECT SUM(count) FROM locations").fetchone()[0]
    late = db.execute("SELECT COALESCE(SUM(calls), 0) FROM revisions").fetchone()[0]  # late, yet counted
    state_keys = db.execute("SELECT MAX(state_rows) FROM progress").fetchone()[0]
    types = counted_by_type(db)
    steady = samples[len(samples) // 4:] or samples
    growth = {k: round(steady[-1][k] - steady[0][k], 1) for k in ("producer_mb", "job_mb", "job_jvm_mb")}
    heap_line = per_key_line([(s["state_keys"], s["jvm_live_heap_mb"]) for s in steady
                              if s["jvm_live_heap_mb"] is not None])
    rss_line = per_key_line([(s["state_keys"], s["job_mb"]) for s in steady])
    disk_line = per_key_line([(s["state_keys"], s["checkpoint_state_mb"]) for s in steady])
    result = {"minutes": minutes, "rate": rate, "jvm_heap": heap, "sent": sent["sent"], "processed": processed,
              "counted_calls": counted, "expected_calls": sent["distinct_calls"], "late": late,
              "lost": sent["distinct_calls"] - counted, "crime_types_equal": types == sent["crime_types"],
              "dedupe_state_keys": state_keys, "rss_growth_after_warmup_mb": growth,
              "live_heap_against_state_keys": heap_line, "job_rss_against_state_keys": rss_line,
              "checkpoint_state_against_state_keys": disk_line, "samples": samples}
    print(f"soak: sent {sent['sent']:,}, processed {processed:,}, counted {counted:,} of {sent['distinct_calls']:,} "
          f"calls, crime types {'equal' if result['crime_types_equal'] else 'DIFFERENT'}, late (counted) {late}, "
          f"dedupe state {state_keys:,} keys; live heap {heap_line}; job RSS {rss_line}; checkpoint state {disk_line}")
    return result


def dir_mb(path: Path) -> float:
    """Bytes under a folder, in MB (the checkpoint's state: what the dedupe keeps on disk). The job writes
    there meanwhile: a temporary file renamed between the listing and its stat is skipped."""
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                total += os.stat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                pass
    return round(total / 2**20, 1)


def per_key_line(points: list[tuple[int, float]]) -> dict:
    """Least squares of live heap (MB) on state keys: bytes per key, the heap at no keys, and the largest
    distance of a sample from the line (what a leak not made of keys would grow)."""
    if len(points) < 3:
        return {"samples": len(points)}
    n = len(points)
    mean_k = sum(k for k, _ in points) / n
    mean_h = sum(h for _, h in points) / n
    spread = sum((k - mean_k) ** 2 for k, _ in points)
    slope = sum((k - mean_k) * (h - mean_h) for k, h in points) / spread if spread else 0.0
    base = mean_h - slope * mean_k
    worst = max(abs(h - (base + slope * k)) for k, h in points)
    return {"samples": n, "bytes_per_key": round(slope * 2**20), "at_no_keys_mb": round(base, 1),
            "largest_residual_mb": round(worst, 1), "first": points[0], "last": points[-1]}


def machine() -> dict:
    import pyspark

    from .clients import library_versions
    from .local import class_archive
    from .local.jars import KAFKA_VERSION
    from .local.kafka import DEFAULT_HEAP

    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "python": platform.python_version(),
            "platform": platform.platform(), "cpus": os.cpu_count(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "pyspark": pyspark.__version__, "librdkafka": library_versions()["librdkafka"],
            "spark_class_archive": class_archive.launch() is not None,
            "broker": f"Apache Kafka {KAFKA_VERSION} (KRaft, one node, on disk, -Xmx{DEFAULT_HEAP})"}


def tuning_chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["mode"] == "throughput" and r["processed_rows_per_s"]]
    labels = ["baseline" if r["change"] == "baseline" else ", ".join(f"{k}={v}" for k, v in r["change"].items())
              for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.45 * len(rows) + 2), sharey=True)
    left.barh(labels, [r["processed_rows_per_s"] for r in rows], color="#3b6ea8")
    left.set_xlabel("processed rows/s (higher is better)")
    left.set_ylabel("setting changed from the baseline")
    left.invert_yaxis()
    right.barh(labels, [r["batch_p95_s"] for r in rows], color="#c26a3a")
    right.set_xlabel("batch duration p95, s (lower is better)")
    fig.suptitle("Streaming job over the full replay: which Spark settings matter")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Title": "Streaming job tuning"})
    plt.close(fig)


def _save(report: dict, path: Path, results_dir: Path) -> None:
    path.write_text(json.dumps(report, indent=2))
    latest_path = results_dir / "latest.json"  # the newest result of each benchmark, whichever run made it
    latest = json.loads(latest_path.read_text()) if latest_path.exists() else {}
    for section, value in report.items():
        if section != "machine":
            latest[section] = dict(value, machine=report["machine"]) if isinstance(value, dict) else \
                {"runs": value, "machine": report["machine"]}
    latest_path.write_text(json.dumps(latest, indent=2))
    if "tuning" in report:
        tuning_chart(report["tuning"], results_dir / "tuning.png")


def run(args) -> int:
    from .local.kafka import KafkaNode

    what = set(args.what)
    if "all" in what:
        what = {"broker", "producer", "consumer", "stream", "startup", "tuning", "latency"}
    unknown = what - {"broker", "producer", "consumer", "stream", "startup", "tuning", "latency", "memory", "scale",
                      "soak", "once-parts", "finality"}
    if unknown:
        raise UserError(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    if "memory" in what:
        what.add("producer")
    results_dir = Path(args.results)
    results_dir.mkdir(parents=True, exist_ok=True)
    input_path = str(DEFAULT_INPUT)
    baseline = Path(args.baseline).resolve() if getattr(args, "baseline", None) else None
    if baseline and not (baseline / "data_stream.py").exists():
        raise UserError(f"--baseline {args.baseline}: no data_stream.py there (a checkout of the code to compare with)")
    report: dict = {"machine": machine()}
    path = results_dir / f"bench-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}.json"
    with tempfile.TemporaryDirectory(prefix="sfcrime-bench-") as tmp, KafkaNode(Path(tmp) / "kafka") as broker:
        bootstrap, workdir = broker.bootstrap_servers, Path(tmp)
        print(f"benchmarks on {broker.bootstrap_servers}: {', '.join(sorted(what))}", flush=True)
        topic = (_filled_topic(bootstrap, input_path) if what & {"consumer", "stream", "startup", "tuning", "once-parts"}
                 else None)
        steps = {"broker": lambda: bench_broker(workdir),
                 "producer": lambda: bench_producer(bootstrap, input_path),
                 "consumer": lambda: bench_consumer(bootstrap, input_path, topic),
                 "stream": lambda: bench_stream(bootstrap, input_path, topic, workdir, 1 if args.quick else 2,
                                               baseline=baseline),
                 "startup": lambda: bench_startup(bootstrap, input_path, topic, workdir, 1 if args.quick else 2),
                 "once-parts": lambda: bench_once_parts(bootstrap, input_path, topic, workdir, 1 if args.quick else 3),
                 "tuning": lambda: bench_tuning(bootstrap, input_path, topic, workdir, args.quick),
                 "latency": lambda: bench_latency(bootstrap, input_path, workdir, args.quick, baseline,
                                                 rates=getattr(args, "rates", None)),
                 "scale": lambda: bench_scale(bootstrap, input_path, workdir),
                 "soak": lambda: bench_soak(bootstrap, input_path, workdir, args.soak_minutes),
                 "finality": lambda: bench_finality(bootstrap, input_path, workdir, baseline)}
        for name, step in steps.items():
            if name in what:
                report[name] = step()
                _save(report, path, results_dir)  # what was measured survives a later failure
    print(f"results: {path}")
    return 0
