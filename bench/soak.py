"""A live job for minutes under a fixed-rate replay: memory stays flat, nothing is lost."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

from sfcrime.config import REPO_DIR
from sfcrime.errors import UserError
from sfcrime.results import path_in
from .latency import counted_by_type
from .processes import PY, create_topic, stop_job, wait_drained, wait_for, dir_mb, live_heap_mb, tree_rss_mb


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
    create_topic(bootstrap, topic)
    output, sent_path = workdir / "soak", workdir / "soak-sent.json"
    shutil.rmtree(output, ignore_errors=True)
    seconds = minutes * 60
    # The job's own defaults (trigger, shuffle partitions, no maxOffsetsPerTrigger), but a fixed heap.
    command = [PY, "data_stream.py", "--console-top", "0", "--bootstrap-servers", bootstrap, "--topic", topic,
               "--output", str(output), "--spark-conf", f"spark.driver.memory={heap}"]
    job = subprocess.Popen(command, cwd=REPO_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = []
    try:
        wait_for(lambda: path_in(output).exists(), 120)
        producer = subprocess.Popen([PY, "bench/paced_producer.py", input_path, bootstrap, topic, str(rate),
                                     str(seconds), str(sent_path), "--lazy"],
                                    cwd=REPO_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        started = time.monotonic()
        while producer.poll() is None:
            samples.append(_sample(output, producer, job, time.monotonic() - started, len(samples) % 3 == 0))
            last = samples[-1]
            print(f"  soak {last['t_s']:>5} s of {seconds:g}: job {last['job_mb']} MB (JVM {last['job_jvm_mb']} MB, "
                  f"live heap after GC {last['jvm_live_heap_mb'] or '-'} MB), dedupe state {last['state_keys']:,} "
                  f"keys, {last['checkpoint_state_mb']} MB in the checkpoint", flush=True)
            time.sleep(10)
        if producer.returncode != 0:
            raise UserError(f"soak producer failed: {producer.stderr.read()[-1000:]}")
        sent = json.loads(sent_path.read_text())
        wait_drained(output, sent["sent"], 300)
    finally:
        stop_job(job)
    result = {"minutes": minutes, "rate": rate, "jvm_heap": heap, **_soak_figures(output, sent, samples)}
    print(f"soak: sent {sent['sent']:,}, processed {result['processed']:,}, counted {result['counted_calls']:,} of "
          f"{sent['distinct_calls']:,} calls, crime types {'equal' if result['crime_types_equal'] else 'DIFFERENT'}, "
          f"late (counted) {result['late']}, dedupe state {result['dedupe_state_keys']:,} keys; live heap "
          f"{result['live_heap_against_state_keys']}; job RSS {result['job_rss_against_state_keys']}; checkpoint "
          f"state {result['checkpoint_state_against_state_keys']}")
    return result


def _sample(output: Path, producer, job, elapsed_s: float, with_heap: bool) -> dict:
    """Memory now: the producer's and the job's (its JVM's, and its live heap after a full GC every third)."""
    with closing(sqlite3.connect(path_in(output))) as db:
        keys = db.execute("SELECT state_rows FROM progress ORDER BY batch_id DESC LIMIT 1").fetchone()
    return {"t_s": round(elapsed_s), "producer_mb": tree_rss_mb(producer.pid),
            "job_mb": tree_rss_mb(job.pid), "job_jvm_mb": tree_rss_mb(job.pid, "java"),
            "jvm_live_heap_mb": live_heap_mb(job.pid) if with_heap else None,
            "state_keys": keys[0] if keys else 0, "checkpoint_state_mb": dir_mb(output / "checkpoint" / "state")}


def _soak_figures(output: Path, sent: dict, samples: list[dict]) -> dict:
    """What the soak counted against what was sent, and how memory grew against the dedupe's keys."""
    db = sqlite3.connect(path_in(output))
    processed = db.execute("SELECT SUM(input_rows) FROM progress").fetchone()[0]
    counted = db.execute("SELECT SUM(count) FROM locations").fetchone()[0]
    late = db.execute("SELECT COALESCE(SUM(calls), 0) FROM revisions").fetchone()[0]  # late, yet counted
    steady = samples[len(samples) // 4:] or samples
    return {"sent": sent["sent"], "processed": processed, "counted_calls": counted,
            "expected_calls": sent["distinct_calls"], "late": late, "lost": sent["distinct_calls"] - counted,
            "crime_types_equal": counted_by_type(db) == sent["crime_types"],
            "dedupe_state_keys": db.execute("SELECT MAX(state_rows) FROM progress").fetchone()[0],
            "rss_growth_after_warmup_mb": {k: round(steady[-1][k] - steady[0][k], 1)
                                           for k in ("producer_mb", "job_mb", "job_jvm_mb")},
            "live_heap_against_state_keys": per_key_line([(s["state_keys"], s["jvm_live_heap_mb"]) for s in steady
                                                          if s["jvm_live_heap_mb"] is not None]),
            "job_rss_against_state_keys": per_key_line([(s["state_keys"], s["job_mb"]) for s in steady]),
            "checkpoint_state_against_state_keys": per_key_line([(s["state_keys"], s["checkpoint_state_mb"])
                                                                 for s in steady]),
            "samples": samples}


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
