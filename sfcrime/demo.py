"""`make demo`: broker -> replay -> verify -> streaming job -> answers and report, in one command.

Writes to a folder of its own (out/demo/ by default), starting over each time; a folder that a running job
holds is refused. Uses the broker the Kafka settings name (--bootstrap-servers, KAFKA_BOOTSTRAP_SERVERS or
a properties file) when one answers, with a fresh topic so nothing already there is counted; otherwise
starts Apache Kafka on a free port with its data in a temporary folder. Stops and removes whatever it started.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from .config import DEFAULT_INPUT, DEFAULT_TOPIC
from .errors import UserError
from .kafka_settings import KafkaSettings

log = logging.getLogger(__name__)
DEMO_TIMEOUT_S = 5.0  # how long a named broker has to answer before the demo starts its own


@dataclass(frozen=True)
class DemoOptions:
    output: str = "out/demo"
    input: str = str(DEFAULT_INPUT)
    limit: int | None = None  # replay only this many calls (and skip the verification)
    dashboard_port: int = 8050
    results_url: str | None = None  # a PostgreSQL results store instead of SQLite in `output`
    results_config_file: str | None = None

    @property
    def place(self):
        """Where the results go: a ResultsPlace."""
        from .results import ResultsPlace

        return ResultsPlace(Path(self.output), self.results_url, self.results_config_file)


def _step(text: str) -> None:
    print(f"\n==> {text}", file=sys.stderr, flush=True)


def run(options: DemoOptions, settings: KafkaSettings) -> int:
    """`settings` with an empty bootstrap_servers (or topic): nobody named one, the demo chooses."""
    from .results import OutputLock

    started = time.monotonic()
    output = Path(options.output)
    with ExitStack() as cleanup:
        settings = _named_broker(settings)
        # The demo starts over in a folder of its own; one a running job holds is refused, never deleted under it.
        cleanup.callback(OutputLock(output).acquire().release)
        if not settings.bootstrap_servers:
            settings = _own_broker(settings, cleanup)
        if (output / "report").is_dir():
            shutil.rmtree(output / "report")  # the results and the checkpoint go with the job's start_over
        _replay_and_verify(options, settings)
        url = _dashboard(options.place, options.dashboard_port, cleanup)
        code = _stream(options, settings)
        if code:
            return code
        _answers(options.place, url, started)
        return 0


def _named_broker(settings: KafkaSettings) -> KafkaSettings:
    """The named broker, with a fresh topic unless one was named; no bootstrap_servers if it does not answer."""
    from .clients import check_reachable

    if not settings.bootstrap_servers:
        return settings
    try:
        check_reachable(dataclasses.replace(settings, timeout_s=min(settings.timeout_s, DEMO_TIMEOUT_S)))
    except UserError:
        _step(f"no broker answers at {settings.bootstrap_servers}: starting one of our own instead")
        return dataclasses.replace(settings, bootstrap_servers="")
    settings = dataclasses.replace(settings, topic=settings.topic or f"sfcrime-demo-{int(time.time())}")
    _step(f"using the Kafka at {settings.bootstrap_servers}, topic {settings.topic}")
    return settings


def _own_broker(settings: KafkaSettings, cleanup: ExitStack) -> KafkaSettings:
    """Apache Kafka in a temporary folder, stopped and removed on the way out; plaintext, so the named
    broker's security settings do not apply to it."""
    from .local.kafka import KafkaNode

    kafka_data = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="sfcrime-demo-kafka-"))
    _step("starting Apache Kafka (KRaft, one node)")
    broker = KafkaNode(kafka_data).start()
    cleanup.callback(broker.stop)
    print(f"Kafka on {broker.bootstrap_servers}, log {broker.log_file}", file=sys.stderr)
    return KafkaSettings(bootstrap_servers=broker.bootstrap_servers, topic=settings.topic or DEFAULT_TOPIC,
                         client=settings.client)


def _replay_and_verify(options: DemoOptions, settings: KafkaSettings) -> None:
    from .consumer import verify
    from .dataset import load_calls
    from .producer import Pacing, replay

    _step(f"replaying {options.input} in event-time order")
    summary = replay(load_calls(options.input, limit=options.limit), settings, Pacing())
    for line in summary.lines():
        print(line, file=sys.stderr)
    if not summary.ok:
        raise UserError("the replay did not deliver every call")
    if options.limit is None:
        _step("verifying the topic against the source file")
        result = verify(settings, options.input)
        for line in result.lines():
            print(line, file=sys.stderr)
        if not result.exact:
            raise UserError("the topic does not hold exactly the source file")


def _dashboard(place, port: int, cleanup: ExitStack) -> str:
    from .dashboard import start_in_background

    try:
        url, stop = start_in_background(place, port=port)
    except UserError:  # the port is taken (another dashboard?): any free one
        url, stop = start_in_background(place, port=0)
    cleanup.callback(stop)
    _step(f"live dashboard: {url}")
    return url


def _stream(options: DemoOptions, settings: KafkaSettings) -> int:
    from .stream.job import run as run_stream
    from .stream.options import StreamOptions

    _step("Spark Structured Streaming over the topic (data_stream.py --once)")
    return run_stream(StreamOptions(output=options.output, once=True, start_over=True, max_offsets_per_trigger=100000,
                                    console_top=5, results_url=options.results_url,
                                    results_config_file=options.results_config_file), settings)


def _answers(place, url: str, started: float) -> None:
    """The tables and the report; a person at a terminal keeps the dashboard open until Ctrl-C."""
    from .answers import answers
    from .report import print_tables, write_report

    _step("the answers")
    result = answers(place)
    print_tables(result)
    page, _ = write_report(result, place.output)
    print(f"\nreport with charts: {page}   ({time.monotonic() - started:.0f} s in all)")
    print(f"dashboard: {url}" + ("   (Ctrl-C stops it)" if sys.stdout.isatty() else ""), flush=True)
    if sys.stdout.isatty():  # a person keeps the page open; a pipe or a test goes on
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
