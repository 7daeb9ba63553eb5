"""Per-batch write time of the results store: SQLite beside PostgreSQL, alternated in one run.

The job's sink writes one micro-batch's counts in one transaction (results/store.py write_batch). This times
that call alone, for batches cut from the calls file as a live job at 2,000 calls/s cuts them (one second of
calls each, in event-time order), each store fresh, the two alternated batch by batch so that the machine's
noise falls on both alike. The batches' counts are made here with Counters, not by Spark: the write is what
is measured.

Beside the time, the CPU each store spends on a batch: SQLite's is all in the writer's thread; PostgreSQL's is
in the writer's thread and in its server's backend (read from /proc, for a server this bench started). Where
two cores are free, the server works while the writer makes the next statement; on a machine with no core to
spare, a write's time tends to its CPU, and so does the ratio.
"""

from __future__ import annotations

import gc
import json
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from .processes import process_cpu_s

CALLS_PER_BATCH = 2000  # a live job at 2,000 calls/s with batches about a second long
BATCHES = 60


def batch_counts(calls: list[tuple[dict, float]], pane_s: int = 3600) -> dict:
    """One batch's BatchCounts (results/rows.py), counted as transforms.count_table would count them."""
    windows, hours, days, places, outcomes = Counter(), Counter(), Counter(), Counter(), Counter()
    latest: dict[int, float] = {}
    for i, (call, event_s) in enumerate(calls):
        event_s = int(event_s)
        kind = call.get("original_crime_type_name")
        windows[(event_s - event_s % pane_s, kind)] += 1
        hours[(int(call["call_date_time"][11:13]), kind)] += 1
        days[(call["call_date_time"][:10], kind)] += 1
        places[call.get("address")] += 1
        outcomes[call.get("disposition")] += 1
        latest[i % 3] = max(latest.get(i % 3, 0), event_s)
    now_us = int(time.time() * 1e6)
    return {"crime_type_windows": [{"window_start": w, "crime_type": t, "count": n} for (w, t), n in windows.items()],
            "locations": [{"address": a, "count": n} for a, n in places.items()],
            "dispositions": [{"disposition": d, "description": None, "count": n} for d, n in outcomes.items()],
            "hourly": [{"hour": h, "crime_type": t, "count": n} for (h, t), n in hours.items()],
            "daily": [{"day": d, "crime_type": t, "count": n} for (d, t), n in days.items()],
            "partition_event_times": [{"partition": p, "event_s_max": e} for p, e in latest.items()],
            "total": [{"count": len(calls), "kafka_us_min": now_us, "kafka_us_max": now_us, "kafka_us_avg": now_us,
                       "event_s_max": max(latest.values())}]}


def bench_results_write(input_path: str, postgres_urls: list[str], batches: int = BATCHES,
                        server_here: bool = False) -> dict:
    """Milliseconds per write_batch, SQLite and PostgreSQL alternated, a round on fresh stores for each URL
    (each its own database, or one emptied again); the ratio of the medians over every round's batches. With
    `server_here` (the server is this machine's), the CPU too."""
    from sfcrime.dataset import load_calls
    from sfcrime.results import ResultsPlace

    calls = [(json.loads(value), event_s) for _, value, event_s in load_calls(input_path, limit=CALLS_PER_BATCH * batches)]
    cut = [batch_counts(calls[i:i + CALLS_PER_BATCH]) for i in range(0, len(calls), CALLS_PER_BATCH)]
    del calls
    gc.collect()
    gc.freeze()  # as the job does before its query: a full collection scanning the calls must not fall in a write
    settings = {"window_seconds": "3600", "pane_seconds": "3600", "watermark_seconds": "3600", "window": "1 hour"}
    times: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    cpu_s = {"sqlite": 0.0, "postgresql": 0.0, "postgresql server": 0.0}
    rounds: list[float] = []
    for postgres_url in postgres_urls:
        with tempfile.TemporaryDirectory() as folder:
            places = {"sqlite": ResultsPlace(Path(folder)), "postgresql": ResultsPlace(Path(folder), postgres_url)}
            stores = {}
            for name, place in places.items():
                place.discard()
                stores[name] = place.open_store()
                stores[name].check_settings(settings)
            this_round: dict[str, list[float]] = {name: [] for name in stores}
            backend = stores["postgresql"].database.execute("SELECT pg_backend_pid()").fetchone()[0] \
                if server_here else None
            backend_before = None if backend is None else process_cpu_s(backend)
            try:
                for batch_id, counts in enumerate(cut):
                    for name, store in (stores.items() if batch_id % 2 else reversed(stores.items())):
                        started, cpu_started = time.perf_counter(), time.thread_time()
                        store.write_batch(batch_id, counts)
                        this_round[name].append(1000 * (time.perf_counter() - started))
                        cpu_s[name] += time.thread_time() - cpu_started
                backend_after = process_cpu_s(backend) if backend_before is not None else None
                if backend_after is not None:
                    cpu_s["postgresql server"] += backend_after - backend_before
                else:
                    server_here = False
            finally:
                for store in stores.values():
                    store.close()
        rounds.append(round(statistics.median(this_round["postgresql"]) / statistics.median(this_round["sqlite"]), 2))
        for name, ms in this_round.items():
            times[name].extend(ms)
    summary = {name: {"p50_ms": round(statistics.median(ms), 2), "p95_ms": round(sorted(ms)[int(0.95 * len(ms))], 2),
                      "mean_ms": round(statistics.fmean(ms), 2)} for name, ms in times.items()}
    ratio = summary["postgresql"]["p50_ms"] / summary["sqlite"]["p50_ms"]
    written = len(cut) * len(postgres_urls)
    cpu = {name: round(1000 * seconds / written, 2) for name, seconds in cpu_s.items()} if server_here else None
    if cpu is not None:
        cpu["postgresql_over_sqlite"] = round((cpu["postgresql"] + cpu["postgresql server"]) / cpu["sqlite"], 2)
    return {"calls_per_batch": CALLS_PER_BATCH, "batches": len(cut), "rounds": len(postgres_urls), **summary,
            "postgresql_over_sqlite_p50": round(ratio, 2), "each_round": rounds, "target": "<= 1.5",
            "met": ratio <= 1.5, "cpu_ms_per_batch": cpu}


def bench_results_write_with_server(input_path: str, workdir: Path, postgres_url: str | None = None) -> dict:
    """With `postgres_url`, that server; else a local one of our own (`python -m sfcrime postgres`'s), for the
    run. Prints the line the other benchmarks print."""
    from sfcrime.local import postgres
    from sfcrime.local.kafka import free_port

    server, rounds = None, 3
    if postgres_url is not None:
        urls = [postgres_url] * rounds
    else:
        import psycopg

        # not workdir/postgres: that is the server other benchmarks of the same run share (processes.LocalPostgres)
        server, url = postgres.start(workdir / "postgres-results-write", free_port(),
                                     workdir / "postgres-results-write.log")
        urls = [f"{url}_{i}" for i in range(rounds)]  # a database a round, as fresh as a new job's
        with psycopg.connect(url, autocommit=True) as admin:
            for fresh in urls:
                admin.execute(f"CREATE DATABASE {fresh.rsplit('/', 1)[1]}")
    try:
        result = bench_results_write(input_path, urls, server_here=server is not None)
    finally:
        if server is not None:
            postgres.stop(server)
    print(f"results write per batch of {result['calls_per_batch']:,} calls, {rounds} rounds: SQLite p50 "
          f"{result['sqlite']['p50_ms']} ms, PostgreSQL p50 {result['postgresql']['p50_ms']} ms "
          f"({result['postgresql_over_sqlite_p50']}x, rounds {', '.join(f'{r}x' for r in result['each_round'])}; "
          f"target <= 1.5x) {'MET' if result['met'] else 'NOT MET'}", flush=True)
    cpu = result["cpu_ms_per_batch"]
    if cpu is not None:
        print(f"  CPU per batch: SQLite {cpu['sqlite']} ms; PostgreSQL {cpu['postgresql']} ms in the writer and "
              f"{cpu['postgresql server']} ms in its server ({cpu['postgresql_over_sqlite']}x: the ratio of times on a "
              "machine with no core to spare)", flush=True)
    return result
