"""`python -m sfcrime broker|spark-cluster|produce|consume|stream|report|dashboard|demo|bench`: every command's flags, in one place.

A bad flag exits 2 with a usage line; a problem the user can fix (a bad file, an unreachable broker)
exits 1 with one line on stderr; Ctrl-C exits 130 after cleaning up.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import re
import sys
from pathlib import Path
from typing import NoReturn

from . import config
from .errors import FlagConflict, UserError
from .flags import add_kafka_arguments, add_results_arguments, non_negative_int, positive_float, positive_int
from .kafka_settings import kafka_settings
from .terminal import discard_stdout, setup_logging

log = logging.getLogger("sfcrime")


# ------------------------------------------------------------------------------------------- commands


def cmd_broker(args: argparse.Namespace) -> int:
    from .local.kafka import run_foreground

    return run_foreground(args.host, args.port, args.data_dir, args.heap, args.nodes, args.secure)


def cmd_postgres(args: argparse.Namespace) -> int:
    from .local.postgres import run_foreground

    return run_foreground(args.port, args.data_dir)


def cmd_spark_cluster(args: argparse.Namespace) -> int:
    from .local.spark_cluster import run_foreground

    return run_foreground(args.workers, args.cores, args.memory, args.host, args.port, args.webui_port)


def cmd_produce(args: argparse.Namespace) -> int:
    from .dataset import load_calls
    from .producer import Pacing, replay

    settings = kafka_settings(args)
    if args.recreate and args.skip:
        raise FlagConflict("--recreate and --skip contradict each other: --skip resumes a replay into the topic as it is")
    if args.continue_replay and args.skip:
        raise FlagConflict("--continue and --skip contradict each other: --continue finds in the topic what to skip")
    calls = load_calls(args.input, order=args.order, limit=None if args.continue_replay else args.limit, skip=args.skip)
    if calls.without_event_time:
        log.warning("%d records have no parseable call_date_time; they are sent anyway, next to their neighbours",
                    calls.without_event_time)
    if args.continue_replay:  # --limit counts the calls left to send
        from .producer import keep_unsent

        total = len(calls)
        print(keep_unsent(calls, settings, progress=not args.quiet).line(total), file=sys.stderr, flush=True)
        calls.order = calls.order[:args.limit]
        if not calls.order:
            return 0
    summary = replay(calls, settings, Pacing(rate=args.rate, speedup=args.speedup), partitions=args.partitions,
                     progress=not args.quiet, append=args.append or args.skip > 0 or args.continue_replay,
                     recreate=args.recreate)  # --skip and --continue add to what the topic holds
    for line in summary.lines(skip=args.skip, continued=args.continue_replay):
        print(line, file=sys.stderr)
    if summary.interrupted:
        return 130
    return 0 if summary.ok else 1


def cmd_consume(args: argparse.Namespace) -> int:
    settings = kafka_settings(args)
    if args.verify:
        from .consumer import verify

        result = verify(settings, args.input, progress=not args.quiet)
        for line in result.lines():
            print(line, file=sys.stderr if not result.exact else sys.stdout)
        return 0 if result.exact else 1
    from .consumer import print_messages

    print_messages(settings, args.from_beginning, args.max_messages, args.group_id, args.pretty,
                   args.timeout_ms / 1000 if args.timeout_ms else None, quiet=args.quiet)
    return 0


def cmd_stream(args: argparse.Namespace) -> int:
    from .stream.job import run
    from .stream.options import StreamOptions

    options, settings = usage(lambda: StreamOptions.from_args(args)), kafka_settings(args)
    if args.dashboard is None:
        return run(options, settings)
    from .dashboard import start_in_background

    url, stop = start_in_background(options.place, port=args.dashboard, stall_after_s=args.stall_after)
    print(f"dashboard: {url}", file=sys.stderr, flush=True)
    try:
        return run(options, settings)
    finally:
        stop()


def cmd_report(args: argparse.Namespace) -> int:
    from .report import ReportOptions, run

    return run(ReportOptions(output=Path(args.output), results_url=args.results_url, results_config_file=args.results_config_file,
                             as_json=args.json, top=args.top, windows=args.windows, charts=not args.no_charts,
                             readme=Path(args.readme) if args.readme else None))


def cmd_dashboard(args: argparse.Namespace) -> int:
    from .dashboard import DashboardOptions, run
    from .results import ResultsPlace

    place = ResultsPlace(Path(args.output), args.results_url, args.results_config_file)
    return run(DashboardOptions(place=place, host=args.host, port=args.port, stall_after_s=args.stall_after))


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoOptions, run

    # Empty defaults: the demo uses a broker only when one is named, and gives it a fresh topic unless named.
    settings = kafka_settings(args, default_bootstrap="", default_topic="")
    return run(DemoOptions(output=args.output, input=args.input, limit=args.limit, dashboard_port=args.dashboard_port,
                           results_url=args.results_url, results_config_file=args.results_config_file), settings)


def usage(build):
    """Options are checked where they are made, with plain ValueErrors: here they are usage errors."""
    try:
        return build()
    except ValueError as error:
        raise FlagConflict(str(error)) from None


def _bench_package():
    """The benchmarks: a package of the repository (bench/), not of the installed product."""
    if str(config.REPO_DIR) not in sys.path:
        sys.path.insert(0, str(config.REPO_DIR))
    import bench

    return bench


def cmd_bench(args: argparse.Namespace) -> int:
    bench = _bench_package()
    return bench.run(bench.BenchOptions(
        what=tuple(args.what), results=Path(args.results), quick=args.quick,
        baseline=Path(args.baseline).resolve() if args.baseline else None,
        rates=tuple(args.rates) if args.rates else None, soak_minutes=args.soak_minutes,
        postgres_url=args.postgres))


# -------------------------------------------------------------------------------------------- parsers


def nearest(typo: str, flags: dict[str, str]) -> list[str]:
    """The flag a cut-short name begins (abbreviations are refused, not guessed), else the closest spelling;
    names without their dashes, which every flag shares (`--bogus` is not `--verbose`)."""
    begun = [flag for name, flag in flags.items() if typo and name.startswith(typo)]
    if len(begun) == 1:
        return begun
    return [flags[name] for name in difflib.get_close_matches(typo, flags, n=1)]


class Parser(argparse.ArgumentParser):
    """argparse with the mistake first, then a "did you mean", then a usage short enough to see: a command's
    full usage is some 20 lines and pushed the error line off a small terminal."""

    USAGE_LINES = 5  # a longer usage shrinks to `usage: PROG [options] ...`; --help still shows every flag

    def error(self, message: str) -> NoReturn:
        lines = [f"{self.prog}: error: {message}", *self.did_you_mean(message), self.short_usage()]
        self.exit(2, "\n".join(lines) + "\n")

    def did_you_mean(self, message: str) -> list[str]:
        """The nearest flag to each unknown one, or the nearest choice to a refused value."""
        if message.startswith("unrecognized arguments: "):
            flags = {flag.lstrip("-"): flag for action in self._actions for flag in action.option_strings}
            typos = [word.split("=", 1)[0] for word in message.split(": ", 1)[1].split() if word.startswith("--")]
            pairs = [(typo, nearest(typo.lstrip("-"), flags)) for typo in typos]
        else:
            refused = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
            if not refused:
                return []
            choices = [choice.strip(" '") for choice in refused.group(2).split(",")]
            pairs = [(refused.group(1), difflib.get_close_matches(refused.group(1), choices, n=1))]
        return [f"did you mean {close[0]} (for {typo})?" if len(pairs) > 1 else f"did you mean {close[0]}?"
                for typo, close in pairs if close]

    def short_usage(self) -> str:
        full = self.format_usage().rstrip()
        if full.count("\n") < self.USAGE_LINES:
            return full
        formatter = self._get_formatter()  # the positionals only, as argparse writes them (`[what ...]`)
        formatter.add_usage(None, [a for a in self._actions if not a.option_strings], [])
        positionals = formatter.format_help().strip().removeprefix(f"usage: {self.prog}")
        return f"usage: {self.prog} [options]{positionals}   ({self.prog} --help lists them)"


def port_number(text: str) -> int:
    value = non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {text!r}")
    return value


def add_stall_after(parser: argparse.ArgumentParser) -> None:
    from .dashboard.health import DEFAULT_STALL_AFTER_S
    from .stream.options import duration_seconds

    parser.add_argument("--stall-after", type=lambda text: float(duration_seconds(text)), metavar="DURATION",
                        default=DEFAULT_STALL_AFTER_S,
                        help="/healthz answers 503 when messages wait and no batch came for this long "
                             f"(default {DEFAULT_STALL_AFTER_S / 60:g} minutes: a cold job's first batch takes up to "
                             "a minute here; set it above a long --trigger)")


def add_produce_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", default=str(config.DEFAULT_INPUT),
                        help="calls file: a JSON array, plain, .gz or .bz2 (default: the bundled dataset)")
    parser.add_argument("--order", choices=("event-time", "file"), default="event-time",
                        help="event-time (oldest call first, as a live stream arrives) or file (newest first)")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--max-speed", action="store_true", help="send as fast as the broker takes it (the default)")
    pace.add_argument("--rate", type=positive_float, metavar="N", help="send N messages per second")
    pace.add_argument("--speedup", type=positive_float, metavar="X", help="replay event time X times faster than real time")
    parser.add_argument("--limit", type=non_negative_int, metavar="N", help="send at most N calls")
    parser.add_argument("--skip", type=non_negative_int, default=0, metavar="N",
                        help="skip the first N calls of the replay order (resume an interrupted replay)")
    held = parser.add_mutually_exclusive_group()
    held.add_argument("--append", action="store_true",
                      help="send even if the topic already holds messages (by default that is refused: it "
                           "would duplicate them); --skip implies it")
    held.add_argument("--recreate", action="store_true",
                      help="if the topic already holds messages, delete it and send into a new, empty one (a job "
                           "that read the old topic then refuses it until --start-over)")
    held.add_argument("--continue", dest="continue_replay", action="store_true",
                      help="send only the calls the topic does not hold yet, oldest first, at the given pace: live "
                           "traffic after a --limit replay, or the rest of an interrupted one (--limit: of those)")
    parser.add_argument("--partitions", type=positive_int, default=3, help="partitions if the topic is created (default 3)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    add_kafka_arguments(parser)


def add_consume_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from-beginning", action="store_true", help="start at the oldest message, not the newest")
    parser.add_argument("--max-messages", type=positive_int, metavar="N", help="exit after N messages")
    parser.add_argument("--group-id", help="consume as this consumer group (default: read by assignment, no group)")
    parser.add_argument("--pretty", action="store_true", help="indented JSON with partition, offset and key")
    parser.add_argument("--timeout-ms", type=positive_int, metavar="MS", help="exit when no message came for MS")
    parser.add_argument("--verify", action="store_true",
                        help="read the whole topic and compare it with --input; exit 0 only on exact delivery")
    parser.add_argument("--input", default=str(config.DEFAULT_INPUT), help="the source file for --verify")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    add_kafka_arguments(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="sfcrime", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="San Francisco police calls: replay them into Kafka, count them with Spark Structured "
                    "Streaming, and read the answers.",
        epilog="The classic scripts are these commands: kafka_server.py = produce, consumer_server.py = consume,\n"
               "data_stream.py = stream. 'python -m sfcrime COMMAND --help' shows a command's flags.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    common = argparse.ArgumentParser(add_help=False)  # -v after the command too, and in each script
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")

    from .local.kafka import DEFAULT_DATA_DIR, DEFAULT_HEAP

    broker = commands.add_parser("broker", allow_abbrev=False, parents=[common], help="run Apache Kafka (KRaft, one node) in the foreground")
    broker.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    broker.add_argument("--port", type=port_number, default=9092, help="client port (default 9092; 0: any free port)")
    broker.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR),
                        help="where Kafka keeps its data across restarts (default kafka-data/ in the repo)")
    broker.add_argument("--heap", default=DEFAULT_HEAP, help=f"each broker JVM's maximum heap (default {DEFAULT_HEAP})")
    broker.add_argument("--nodes", type=positive_int, default=1,
                        help="KRaft nodes on consecutive ports from --port; topics get one copy per node (default 1)")
    broker.add_argument("--secure", action="store_true",
                        help="SASL_SSL with SCRAM-SHA-512 and a local CA; writes a client properties file")
    broker.set_defaults(func=cmd_broker)

    from .local.postgres import DEFAULT_DATA_DIR as POSTGRES_DATA_DIR
    from .local.postgres import DEFAULT_PORT as POSTGRES_PORT

    postgres = commands.add_parser("postgres", allow_abbrev=False, parents=[common],
                                   help="run a local PostgreSQL in the foreground, for --results")
    postgres.add_argument("--port", type=port_number, default=POSTGRES_PORT,
                          help=f"port on 127.0.0.1 (default {POSTGRES_PORT})")
    postgres.add_argument("--data-dir", default=str(POSTGRES_DATA_DIR),
                          help="where PostgreSQL keeps its data across restarts (default postgres-data/ in the repo)")
    postgres.set_defaults(func=cmd_postgres)

    cluster = commands.add_parser("spark-cluster", allow_abbrev=False, parents=[common], help="run a Spark standalone master and workers in the foreground")
    cluster.add_argument("--workers", type=positive_int, default=2, help="worker JVMs (default 2)")
    cluster.add_argument("--cores", type=positive_int, default=1, help="cores each worker offers (default 1)")
    cluster.add_argument("--memory", default="1g", help="memory each worker offers its executors (default 1g)")
    cluster.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    cluster.add_argument("--port", type=port_number, default=7077, help="the master's port (default 7077; 0: any free port)")
    cluster.add_argument("--webui-port", type=port_number, default=8080,
                         help="the master's web UI (default 8080; 0: any free port)")
    cluster.set_defaults(func=cmd_spark_cluster)

    produce = commands.add_parser("produce", allow_abbrev=False, parents=[common], help="replay the calls file into the topic")
    add_produce_arguments(produce)
    produce.set_defaults(func=cmd_produce)

    consume = commands.add_parser("consume", allow_abbrev=False, parents=[common], help="print the topic, or --verify it against the source")
    add_consume_arguments(consume)
    consume.set_defaults(func=cmd_consume)

    from .stream.options import add_stream_arguments

    stream = commands.add_parser("stream", allow_abbrev=False, parents=[common], help="the Spark Structured Streaming job (as data_stream.py)")
    add_stream_arguments(stream)
    stream.add_argument("--dashboard", type=port_number, nargs="?", const=8050, metavar="PORT",
                        help="serve the live dashboard beside the job on 127.0.0.1:PORT (default 8050), with "
                             "/metrics for Prometheus and /healthz")
    add_stall_after(stream)
    stream.set_defaults(func=cmd_stream)

    from .answers import RECENT_WINDOWS

    report = commands.add_parser("report", allow_abbrev=False, parents=[common], help="print the answers and write the report with charts")
    report.add_argument("--output", default="out", help="the streaming job's output directory (default out/)")
    report.add_argument("--json", action="store_true", help="print the answers as JSON")
    report.add_argument("--top", type=positive_int, default=20, help="rows per table (default 20)")
    report.add_argument("--windows", type=positive_int, default=RECENT_WINDOWS,
                        help=f"latest windows in the top-5 series (default {RECENT_WINDOWS})")
    report.add_argument("--no-charts", action="store_true", help="print the tables only")
    report.add_argument("--readme", metavar="FILE", help="write the answers into FILE's answers block (README.md)")
    add_results_arguments(report)
    report.set_defaults(func=cmd_report)

    dashboard = commands.add_parser("dashboard", allow_abbrev=False, parents=[common], help="the live page, drawn from the results the job writes")
    dashboard.add_argument("--output", default="out", help="the streaming job's output directory (default out/)")
    dashboard.add_argument("--host", default="127.0.0.1",
                           help="address to listen on (default 127.0.0.1: the page has no authentication)")
    dashboard.add_argument("--port", type=port_number, default=8050, help="port (default 8050; 0: any free port)")
    add_stall_after(dashboard)
    add_results_arguments(dashboard)
    dashboard.set_defaults(func=cmd_dashboard)

    from .demo import DemoOptions

    demo_defaults = DemoOptions()
    demo = commands.add_parser("demo", allow_abbrev=False, parents=[common], help="broker + replay + streaming job + report, in one command")
    demo.add_argument("--output", default=demo_defaults.output,
                      help=f"the demo's own results folder, emptied each run; refused while a job uses it "
                           f"(default {demo_defaults.output}/)")
    demo.add_argument("--input", default=demo_defaults.input, help="calls file to replay (default: the bundled dataset)")
    demo.add_argument("--limit", type=non_negative_int, metavar="N", help="replay only N calls (default: all)")
    demo.add_argument("--dashboard-port", type=port_number, default=demo_defaults.dashboard_port,
                      help=f"port of the live dashboard (default {demo_defaults.dashboard_port}; 0: any free port)")
    add_kafka_arguments(demo, bootstrap_default="none: start a broker of its own; a named one is used if it answers",
                        topic_default="a fresh topic per run on a named broker, calls on the demo's own")
    add_results_arguments(demo)
    demo.set_defaults(func=cmd_demo)

    benchmarks = _bench_package().BENCHMARKS
    bench = commands.add_parser("bench", allow_abbrev=False, parents=[common], help="side-by-side benchmarks and the tuning grid; writes bench/results/")
    bench.add_argument("what", nargs="*", default=["all"], choices=[*benchmarks, "all"], metavar="BENCHMARK",
                       help=f"any of: {' '.join(benchmarks)} all (default all: "
                            f"{' '.join(name for name, b in benchmarks.items() if b.in_all)})")
    bench.add_argument("--soak-minutes", type=positive_float, default=5.0, help="length of the soak (default 5)")
    bench.add_argument("--quick", action="store_true", help="a smaller tuning grid; one round of latency")
    bench.add_argument("--rates", type=int, nargs="+", choices=(2000, 10000), metavar="CALLS_PER_S",
                       help="latency: only these input rates (2000, 10000; default both)")
    bench.add_argument("--baseline", metavar="CHECKOUT",
                       help="latency, stream and finality: also run the job of this checkout (git worktree add --detach DIR "
                            "COMMIT), alternating with this one, each with its own defaults")
    bench.add_argument("--results", default=str(config.REPO_DIR / "bench" / "results"),
                       help="where the JSON results and charts go (default bench/results/ in the repo)")
    bench.add_argument("--postgres", metavar="URL",
                       help="results-write: the PostgreSQL server to write to (default: a local one started for the run)")
    bench.set_defaults(func=cmd_bench)
    return parser


def _exit_past_stuck_threads(code: int) -> None:
    """A client library's thread stuck in a handshake would keep the process alive after our error line."""
    import os
    import threading

    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def main(argv: list[str] | None = None, command: str | None = None) -> int:
    """Run a command; `command` lets the top-level scripts be `sfcrime <command>` with their own argv."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if command is None:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # the command's own error, that knows its flags (the top parser would say `sfcrime: error`)
            _subcommand(parser, args.command).error(f"unrecognized arguments: {' '.join(unknown)}")
    else:  # a script (kafka_server.py, data_stream.py, ...): its own usage line, as if it were the command
        script = _subcommand(parser, command)
        script.prog = os.path.basename(sys.argv[0]) or command
        args = script.parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    try:
        return args.func(args)
    except FlagConflict as error:
        (script if command is not None else _subcommand(parser, args.command)).error(str(error))  # exits 2
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        _exit_past_stuck_threads(1)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... | head` stopped reading: not an error of ours
        discard_stdout()
        return 0
