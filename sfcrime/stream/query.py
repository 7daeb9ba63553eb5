"""The query's lifecycle: start it, wait for it, and ride out what ends it without losing anything.

A Python worker late to connect back, or (live) a broker that is away, stops the query with nothing lost:
it starts again from its checkpoint. Ctrl-C and a broker gone for --broker-timeout end the wait, each in
one line.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Callable

from pyspark.errors import StreamingQueryException

from ..clients import any_port_open
from ..errors import UserError
from ..kafka_settings import KafkaSettings
from .identity import checkpoint_offsets
from .listener import ProgressReporter, clock
from .options import StreamOptions
from .sink import BatchWriter
from .spark_errors import first_line

log = logging.getLogger(__name__)


def await_query(query, bootstrap_servers: str, timeout_s: float | None, say: Callable[[str], None],
                down_since: float | None = None, check_every_s: float = 10.0) -> str | None:
    """Wait for the query to end: None when it did, "interrupted" on Ctrl-C, "lost broker" when no broker
    address has taken a connection for `timeout_s` (None: never). With no query, wait for a broker that is
    away: "back" once one answers. While none answers, one line a minute.

    Our own SIGINT handler only sets a flag: pyspark's cancels jobs over py4j from inside the signal
    handler, re-entering a py4j call in progress, and a Ctrl-C ended in pages of tracebacks. Spark's Kafka
    connector retries a vanished broker for minutes and then fails in a hundred lines; a closed port says it
    in one.
    """
    interrupted = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    try:
        last_check = time.monotonic()
        said = down_since
        while not interrupted.is_set():
            if query is None:
                time.sleep(1)
            elif query.awaitTermination(1):
                return None
            now = time.monotonic()
            if now - last_check < (check_every_s if query is not None else 2.0):
                continue
            last_check = now
            if any_port_open(bootstrap_servers):
                if down_since is not None and now - down_since >= 60:
                    say(f"{clock()} the broker at {bootstrap_servers} answers again after {now - down_since:.0f} s")
                if down_since is not None and query is None:
                    return "back"
                down_since = said = None
                continue
            down_since = now if down_since is None else down_since
            said = down_since if said is None else said
            if timeout_s is not None and now - down_since >= timeout_s:
                return "lost broker"
            if now - said >= 60:  # the first after a minute: a short outage passes without a word
                said = now
                say(f"{clock()} no broker has answered at {bootstrap_servers} for {now - down_since:.0f} s: waiting "
                    "for it (every finished batch is kept; --broker-timeout gives up)")
        return "interrupted"
    finally:
        signal.signal(signal.SIGINT, previous)


def run_query(writer, options: StreamOptions, settings: KafkaSettings, batch_writer: BatchWriter,
              listener: ProgressReporter, on_start: Callable[[object], None]):
    """Start the query and wait for it: (the query, how it ended, as await_query says). A query that failed
    only because a Python worker was late, or (live) because its source gave up on a broker that is away,
    starts again from its checkpoint, the second once a broker answers again: nothing is lost or doubled."""
    timeout_s, late_starts = options.broker_timeout_s, 0
    while True:
        try:
            query = writer.start()
        except Exception as error:  # e.g. a checkpoint folder that can't be made
            raise UserError(f"the streaming query did not start: {first_line(error)}") from None
        on_start(query)
        try:
            ended = await_query(query, settings.bootstrap_servers, timeout_s, listener.say)
        except StreamingQueryException:
            ended = None  # awaitTermination re-raises the query's failure with the whole plan: reported in one line
        error = query.exception() if ended is None and batch_writer.failure is None else None
        if error is None:
            return query, ended
        if python_worker_late(error) and late_starts < QUERY_ATTEMPTS - 1:
            late_starts += 1
            log.warning("the query stopped because a Python worker did not start within Spark's fixed 10 s "
                        "(a busy machine): starting it again from its checkpoint in %d s (attempt %d of %d)",
                        QUERY_ATTEMPT_PAUSE_S * late_starts, late_starts + 1, QUERY_ATTEMPTS)
            time.sleep(QUERY_ATTEMPT_PAUSE_S * late_starts)
            continue
        if not options.once and not any_port_open(settings.bootstrap_servers):
            listener.say(f"{clock()} the query stopped while no broker answers at {settings.bootstrap_servers}: it "
                         "starts again from its checkpoint once one does")
            ended = await_query(None, settings.bootstrap_servers, timeout_s, listener.say, down_since=time.monotonic())
            if ended == "back":
                continue
        return query, ended


# Spark gives a Python worker it starts for planning (our source's reader, in the driver) a fixed 10 s to
# connect back (PythonWorkerFactory); on a loaded machine importing pyspark can take longer. The query then
# fails with nothing lost: it starts again from its checkpoint, and the results take each batch once. A
# busy spell can outlast a few seconds (CI once saw three late starts in a row, 13 s apart), so each new
# attempt first waits a little longer, about a minute in all. `make setup` puts compiled bytecode in
# pyspark's zips (local/pyspark_zips.py), which halves the import.
QUERY_ATTEMPTS = 5


QUERY_ATTEMPT_PAUSE_S = 5


PYTHON_WORKER_LATE = "Python worker failed to connect back"


def python_worker_late(error) -> bool:
    """The query failed only because a Python worker did not connect back to Spark in time."""
    return error is not None and PYTHON_WORKER_LATE in first_line(error)


def reading(topic: str, checkpoint: Path | None) -> str:
    """What the query was reading, for a line about a lost broker: the topic's partitions and the offsets
    the latest batch reads up to (from the checkpoint's offset log)."""
    offsets = checkpoint_offsets(checkpoint) if checkpoint is not None else None
    if not offsets:
        return f"topic {topic!r}"
    shown = ", ".join(f"{p} up to offset {o:,}" for p, o in sorted(offsets.items()))
    return f"topic {topic!r} (partition{'s' if len(offsets) > 1 else ''} {shown})"


def stop_query(query) -> None:
    """Stop the query; a source stuck on a vanished broker may not stop in time (spark.sql.streaming.stopTimeout)."""
    try:
        query.stop()
    except Exception as error:  # noqa: BLE001 - we are leaving anyway; say why it was not clean
        log.info("the query did not stop cleanly: %s", str(error).splitlines()[0] if str(error) else error)
