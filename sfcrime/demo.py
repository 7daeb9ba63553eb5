"""`make demo`: broker -> replay -> verify -> streaming job -> answers and report, in one command.

Writes to a folder of its own (out/demo/ by default), starting over each time; a folder that a running job
holds is refused. Uses the broker at --bootstrap-servers / KAFKA_BOOTSTRAP_SERVERS when one answers (with a fresh topic,
so nothing already there is counted), otherwise starts Apache Kafka on a free port with its data in a
temporary folder; stops and removes whatever it started.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from .config import DEFAULT_TOPIC, KafkaSettings, UserError

log = logging.getLogger(__name__)


def _step(text: str) -> None:
    print(f"\n==> {text}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from .cli import build_parser
    from .clients import check_reachable
    from .consumer import verify
    from .dataset import load_calls
    from .producer import Pacing, replay
    from .report import answers, print_tables, write_charts, write_markdown
    from .local.kafka import KafkaNode
    from .results import OutputLock
    from .stream.job import run as run_stream

    started = time.monotonic()
    bootstrap = args.bootstrap_servers or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = None
    topic = args.topic
    if bootstrap:
        try:
            check_reachable(KafkaSettings(bootstrap_servers=bootstrap, timeout_s=5))
            topic = topic or f"sfcrime-demo-{int(time.time())}"
            _step(f"using the Kafka at {bootstrap}, topic {topic}")
        except UserError:
            _step(f"no broker answers at {bootstrap}: starting one of our own instead")
            bootstrap = None
    output = Path(args.output)
    kafka_data = None
    stop_dashboard = None
    # The demo starts over in a folder of its own; one a running job holds is refused, never deleted under it.
    output_lock = OutputLock(output).acquire()
    try:
        if not bootstrap:
            kafka_data = tempfile.TemporaryDirectory(prefix="sfcrime-demo-kafka-")
            _step("starting Apache Kafka (KRaft, one node)")
            broker = KafkaNode(kafka_data.name).start()
            bootstrap, topic = broker.bootstrap_servers, topic or DEFAULT_TOPIC
            print(f"Kafka on {bootstrap}, log {broker.log_file}", file=sys.stderr)
        settings = KafkaSettings(bootstrap_servers=bootstrap, topic=topic)
        if (output / "report").is_dir():
            shutil.rmtree(output / "report")  # the results and the checkpoint go with the job's --start-over

        _step(f"replaying {args.input} in event-time order")
        calls = load_calls(args.input, limit=args.limit)
        summary = replay(calls, settings, Pacing())
        for line in summary.lines():
            print(line, file=sys.stderr)
        if not summary.ok:
            raise UserError("the replay did not deliver every call")

        if args.limit is None:
            _step("verifying the topic against the source file")
            result = verify(settings, args.input)
            for line in result.lines():
                print(line, file=sys.stderr)
            if not result.exact:
                raise UserError("the topic does not hold exactly the source file")

        from .dashboard import start_in_background

        try:
            url, stop_dashboard = start_in_background(output, port=args.dashboard_port)
        except UserError:  # the port is taken (another dashboard?): any free one
            url, stop_dashboard = start_in_background(output, port=0)
        _step(f"live dashboard: {url}")

        _step("Spark Structured Streaming over the topic (data_stream.py --once)")
        stream_args = build_parser().parse_args([
            "stream", "--once", "--start-over", "--bootstrap-servers", bootstrap, "--topic", topic,
            "--output", str(output),
            "--max-offsets-per-trigger", "100000", "--console-top", "5"])
        code = run_stream(stream_args)
        if code:
            return code

        _step("the answers")
        result = answers(output)
        print_tables(result)
        directory = output / "report"
        page = write_markdown(result, write_charts(result, directory / "charts"), directory / "report.md")
        print(f"\nreport with charts: {page}   ({time.monotonic() - started:.0f} s in all)")
        print(f"dashboard: {url}" + ("   (Ctrl-C stops it)" if sys.stdout.isatty() else ""), flush=True)
        if sys.stdout.isatty():  # a person keeps the page open; a pipe or a test goes on
            try:
                threading.Event().wait()
            except KeyboardInterrupt:
                pass
        return 0
    finally:
        output_lock.release()
        if stop_dashboard is not None:
            stop_dashboard()
        if broker is not None:
            broker.stop()
        if kafka_data is not None:
            kafka_data.cleanup()
