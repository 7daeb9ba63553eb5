"""`python -m sfcrime bench`: side-by-side measurements in one run, written to bench/results/.

Benchmarks are a tool of the repository, not part of the product: this package is not installed and not
shipped to executors. Each benchmark's name, whether `all` runs it, and what it measures are in BENCHMARKS
below, the one list the CLI and `all` read.

This machine is noisy, so every comparison runs both sides in the same run, alternating, and reports
medians and their ratio. Targets (from the issues):
  producer   kafka_server.py --max-speed       <= 2x a minimal librdkafka producer (bench/minimal_producer.py)
  memory     kafka_server.py, full replay      <= 200 MB peak RSS
  consumer   consumer_server.py --verify       topic read <= 2x a minimal librdkafka consumer
  stream     data_stream.py --once, connector   <= 1.0x a plain Spark batch job (python -m sfcrime.baseline.batch);
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

import importlib
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple

from sfcrime.config import DEFAULT_INPUT, REPO_DIR
from sfcrime.errors import UserError

if TYPE_CHECKING:
    from .processes import LocalPostgres

RESULTS_DIR = REPO_DIR / "bench" / "results"


@dataclass(frozen=True)
class BenchOptions:
    what: tuple[str, ...] = ("all",)
    results: Path = RESULTS_DIR
    quick: bool = False  # a smaller tuning grid, one round where rounds are counted
    baseline: Path | None = None  # a checkout of the code to run beside this one (latency, stream, finality)
    rates: tuple[int, ...] | None = None  # latency: only these input rates
    soak_minutes: float = 5.0
    postgres_url: str | None = None  # a PostgreSQL server to use (default: one of our own, started when needed)


class Context(NamedTuple):
    """What every benchmark of one run shares: the broker, a scratch folder, the full file in a topic."""
    options: BenchOptions
    bootstrap: str
    workdir: Path
    input_path: str
    topic: Callable[[], str]  # the full file replayed into a topic once, on first ask
    postgres: "LocalPostgres"  # a fresh PostgreSQL database for a job's results, on each ask


class Benchmark(NamedTuple):
    run: Callable[[Context], object]
    in_all: bool
    what: str


def _rounds(context: Context, quick: int, full: int) -> int:
    return quick if context.options.quick else full


def _module(name: str):
    """A benchmark's module, imported when it runs: naming the benchmarks (the CLI's help) imports nothing. The
    accessors' names start with _: importing bench.x sets the package's attribute x, which is its global x."""
    return importlib.import_module(f"{__name__}.{name}")


_kafka_side, _stream_runs, _latency, _soak, _finality, _results_write = (
    lambda: _module("kafka_side"), lambda: _module("stream_runs"), lambda: _module("latency"), lambda: _module("soak"),
    lambda: _module("finality"), lambda: _module("results_write"))

# Every benchmark, in the order a run takes them: the one list of their names.
BENCHMARKS: dict[str, Benchmark] = {
    "broker": Benchmark(lambda c: _kafka_side().bench_broker(c.workdir), True, "Kafka's start and restart"),
    "producer": Benchmark(lambda c: _kafka_side().bench_producer(c.bootstrap, c.input_path), True,
                          "the replay beside a minimal librdkafka loop, and its memory"),
    "consumer": Benchmark(lambda c: _kafka_side().bench_consumer(c.bootstrap, c.input_path, c.topic()), True,
                          "--verify's read beside a minimal librdkafka loop"),
    "stream": Benchmark(lambda c: _stream_runs().bench_stream(c.bootstrap, c.input_path, c.topic(), c.workdir,
                                                            _rounds(c, 1, 2), baseline=c.options.baseline,
                                                            postgres=c.postgres.fresh_database),
                        True, "the full replay --once beside the batch baseline, and into PostgreSQL"),
    "startup": Benchmark(lambda c: _stream_runs().bench_startup(c.bootstrap, c.input_path, c.topic(), c.workdir,
                                                              _rounds(c, 1, 2)),
                         True, "Spark with and without the class archive"),
    "tuning": Benchmark(lambda c: _stream_runs().bench_tuning(c.bootstrap, c.input_path, c.topic(), c.workdir,
                                                            c.options.quick), True, "a grid of Spark settings"),
    "latency": Benchmark(lambda c: _latency().bench_latency(c.bootstrap, c.input_path, c.workdir, c.options.quick,
                                                          c.options.baseline, rates=c.options.rates,
                                                          postgres=c.postgres.fresh_database),
                         True, "produce-to-counted latency, live, SQLite beside PostgreSQL"),
    "memory": Benchmark(lambda c: _kafka_side().bench_producer(c.bootstrap, c.input_path), False,
                        "the producer's peak memory (measured with producer)"),
    "once-parts": Benchmark(lambda c: _stream_runs().bench_once_parts(c.bootstrap, c.input_path, c.topic(), c.workdir,
                                                                    _rounds(c, 1, 3)),
                            False, "what each part of the plan costs"),
    "scale": Benchmark(lambda c: _stream_runs().bench_scale(c.bootstrap, c.input_path, c.workdir), False,
                       "partitions x executors on a Spark cluster"),
    "soak": Benchmark(lambda c: _soak().bench_soak(c.bootstrap, c.input_path, c.workdir, c.options.soak_minutes),
                      False, "a live job for minutes: flat memory, nothing lost"),
    "finality": Benchmark(lambda c: _finality().bench_finality(c.bootstrap, c.input_path, c.workdir,
                                                               c.options.baseline),
                          False, "no final window revised over the whole file"),
    "results-write": Benchmark(lambda c: _results_write().bench_results_write_with_server(
        c.input_path, c.workdir, c.options.postgres_url), False, "a batch's write to SQLite beside PostgreSQL"),
}


def run(options: BenchOptions) -> int:
    from sfcrime.local.kafka import KafkaNode

    from .kafka_side import filled_topic
    from .machine import machine, save
    from .processes import LocalPostgres

    registry = BENCHMARKS
    what = set(options.what)
    if "all" in what:
        what = (what - {"all"}) | {name for name, bench in registry.items() if bench.in_all}
    unknown = what - set(registry)
    if unknown:
        raise UserError(f"unknown benchmark(s): {', '.join(sorted(unknown))} (known: {', '.join(registry)}, all)")
    if "memory" in what:  # measured by the producer's benchmark
        what = (what - {"memory"}) | {"producer"}
    if options.baseline and not (options.baseline / "data_stream.py").exists():
        raise UserError(f"--baseline {options.baseline}: no data_stream.py there (a checkout of the code to compare with)")
    options.results.mkdir(parents=True, exist_ok=True)
    report: dict = {"machine": machine()}
    path = options.results / f"bench-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}.json"
    with tempfile.TemporaryDirectory(prefix="sfcrime-bench-") as tmp, KafkaNode(Path(tmp) / "kafka") as broker:
        input_path, filled = str(DEFAULT_INPUT), []

        def topic() -> str:
            if not filled:
                filled.append(filled_topic(broker.bootstrap_servers, input_path))
            return filled[0]

        postgres = LocalPostgres(Path(tmp), options.postgres_url)
        context = Context(options, broker.bootstrap_servers, Path(tmp), input_path, topic, postgres)
        print(f"benchmarks on {broker.bootstrap_servers}: {', '.join(sorted(what))}", flush=True)
        try:
            for name, bench in registry.items():
                if name in what:
                    report[name] = bench.run(context)
                    save(report, path, options.results)  # what was measured survives a later failure
        finally:
            postgres.stop()
    print(f"results: {path}")
    return 0
