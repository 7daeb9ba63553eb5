"""The streaming job over a filled topic: beside the batch baseline, its start-up, the cost of its parts,
a grid of Spark settings, and its scaling on a Spark cluster."""

from __future__ import annotations

import os
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Callable

from sfcrime.config import REPO_DIR
from sfcrime.errors import UserError
from sfcrime.results import path_in
from .processes import PY, percentile, timed


def batch_module(checkout: Path) -> str:
    """The batch baseline's module in a checkout: it moved out of sfcrime.stream."""
    return "sfcrime.baseline.batch" if (checkout / "sfcrime" / "baseline").is_dir() else "sfcrime.stream.batch"


def bench_stream(bootstrap: str, input_path: str, topic: str, workdir: Path, rounds: int = 2,
                 baseline: Path | None = None, postgres: Callable[[], str] | None = None) -> dict:
    """The full replay --once with Spark's connector and with our Python source, against the plain Spark
    batch job over the file; JVM start included in each, run alternately so the machine's noise is shared.
    With a baseline checkout, its connector job and its batch job run too: --once must not get slower than
    the code before, and a ratio must not improve only because the batch job got slower."""
    writes: dict[str, list[float]] = {"kafka": [], "kafka_postgresql": []}  # the job's own resultsWrite p50s

    def stream(source: str, i: int, checkout: Path = REPO_DIR, name: str = "", results: str | None = None) -> float:
        output = workdir / f"stream-{name or source}-{i}"
        seconds = timed([PY, str(checkout / "data_stream.py"), "--once", "--console-top", "0", "--source", source,
                         "--bootstrap-servers", bootstrap, "--topic", topic, "--output", str(output),
                         *(["--results", results] if results else [])], cwd=checkout)[0]
        if checkout == REPO_DIR and (name or source) in ("kafka", "kafka-postgresql"):
            write_ms = results_write_p50(output, results)
            if write_ms is not None:
                writes["kafka_postgresql" if results else "kafka"].append(write_ms)
        return seconds

    times: dict[str, list[float]] = {"batch": [], "kafka": [], "python": []}
    if postgres:
        times["kafka_postgresql"] = []
    if baseline:
        times["kafka_before"], times["batch_before"] = [], []
    for i in range(rounds):
        times["batch"].append(timed([PY, "-m", "sfcrime.baseline.batch", input_path])[0])
        if baseline:
            times["batch_before"].append(timed([PY, "-m", batch_module(baseline), input_path], cwd=baseline)[0])
            times["kafka_before"].append(stream("kafka", i, baseline, "before"))
        times["kafka"].append(stream("kafka", i))
        if postgres:
            times["kafka_postgresql"].append(stream("kafka", i, name="kafka-postgresql", results=postgres()))
        times["python"].append(stream("python", i))
        print(f"  stream round {i + 1}: batch {times['batch'][-1]:.1f} s, connector {times['kafka'][-1]:.1f} s"
              + (f" (before: {times['kafka_before'][-1]:.1f} s, its batch job {times['batch_before'][-1]:.1f} s)"
                 if baseline else "")
              + (f", into PostgreSQL {times['kafka_postgresql'][-1]:.1f} s" if postgres else "")
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
    if postgres:
        result["postgresql_over_sqlite"] = round(medians["kafka_postgresql"] / medians["kafka"], 3)
        if writes["kafka"] and writes["kafka_postgresql"]:
            sqlite_ms, postgresql_ms = (statistics.median(writes[k]) for k in ("kafka", "kafka_postgresql"))
            result["results_write_p50_ms"] = {"sqlite": writes["kafka"], "postgresql": writes["kafka_postgresql"],
                                              "ratio": round(postgresql_ms / sqlite_ms, 2)}
    result["met"] = result["connector_ratio"] <= 1.0
    print(f"stream --once: connector {result['connector_ratio']:.2f}x, python source {result['python_source_ratio']:.2f}x "
          f"the batch job (target: connector <= 1.0x) {'MET' if result['met'] else 'NOT MET'}"
          + (f"; the code before: {result['connector_ratio_before']:.2f}x (now/before "
             f"{result['after_over_before']:.2f})" if baseline else "")
          + (f"; into PostgreSQL {result['postgresql_over_sqlite']:.2f}x the SQLite run" if postgres else "")
          + (f"; its results write per batch (p50) {result['results_write_p50_ms']['ratio']:.2f}x SQLite's "
             "(target <= 1.5x)" if "results_write_p50_ms" in result else ""), flush=True)
    return result


def results_write_p50(output: Path, url: str | None) -> float | None:
    """The median of the job's own per-batch results write (resultsWrite in its progress), in ms."""
    from .latency import duration_breakdown
    from .processes import open_results

    db = open_results(output, url)
    try:
        return duration_breakdown(db).get("resultsWrite")
    finally:
        db.close()


SESSION_AND_FIRST_QUERY = ("from sfcrime.stream.session import build_session; "
                           "build_session('bench-startup').range(10).selectExpr('sum(id)').collect()")


def bench_startup(bootstrap: str, input_path: str, topic: str, workdir: Path, rounds: int = 2) -> dict:
    """Each Spark start with the class-data archive `make setup` made and with SFCRIME_CLASS_ARCHIVE=off,
    alternately: a session and its first query, the connector's full replay --once, the batch job."""
    from sfcrime.local.class_archive import archive_path

    if not archive_path().is_file():
        raise UserError("bench startup: no class-data archive (make setup makes it)")
    runs = {
        "session": lambda i, name: [PY, "-c", SESSION_AND_FIRST_QUERY],
        "stream_once": lambda i, name: [PY, "data_stream.py", "--once", "--console-top", "0", "--bootstrap-servers",
                                        bootstrap, "--topic", topic, "--output", str(workdir / f"startup-{name}-{i}")],
        "batch": lambda i, name: [PY, "-m", "sfcrime.baseline.batch", input_path],
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
    runs = {"batch": lambda i: [PY, "-m", "sfcrime.baseline.batch", input_path],
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
        "batch_p50_s": percentile([r[1] / 1000 for r in progress], 0.5),
        "batch_p95_s": percentile([r[1] / 1000 for r in progress], 0.95),
        "latency_p50_s": round(percentile(latencies, 0.5), 2) if latencies else None,
        "latency_p95_s": round(percentile(worst, 0.95), 2) if worst else None,
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
    from sfcrime.local.spark_cluster import SparkStandaloneCluster

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
