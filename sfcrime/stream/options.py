"""The streaming job's options: a dataclass, and the flags that make one (`data_stream.py`, `python -m sfcrime stream`).

The CLI turns the flags into StreamOptions once (`StreamOptions.from_args`); other callers, such as the demo,
build StreamOptions directly. Kafka settings come separately, as kafka_settings.KafkaSettings.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import DEFAULT_RADIO_CODES
from ..flags import add_kafka_arguments, add_results_arguments, flag_type, key_value, non_negative_int, positive_int
from ..sf_time import ZONE_NAME

if TYPE_CHECKING:
    from ..results import ResultsPlace

ONCE_BROKER_TIMEOUT_S = 30

_DURATION = re.compile(
    r"^\s*(\d+)\s*(second|seconds|sec|secs|s|minute|minutes|min|mins|m|hour|hours|h|day|days|d)\s*$", re.I)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> str:
    """A Spark interval such as "1 hour" or "30 minutes", normalised; rejects anything Spark would not take."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (try '1 hour', '30 minutes', '10 seconds')")
    amount, unit = int(match.group(1)), match.group(2).lower()
    if amount <= 0:
        raise ValueError(f"a duration must be positive, got {text!r}")
    name = {"s": "second", "m": "minute", "h": "hour", "d": "day"}[unit[0] if unit not in ("min", "mins") else "m"]
    return f"{amount} {name}{'s' if amount != 1 else ''}"


_ZONE_OFFSET = re.compile(r"^(Z|UTC|GMT|UT|((UTC|GMT|UT)?[+-]\d{1,2}(:\d{2}(:\d{2})?)?))$")


def time_zone(text: str) -> str:
    """A zone Spark's session takes: a region ID ("America/Los_Angeles") or an offset ("+08:00", "UTC")."""
    from zoneinfo import ZoneInfo

    if _ZONE_OFFSET.match(text):
        return text
    try:
        ZoneInfo(text)
    except (ValueError, OSError, LookupError):  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"not a time zone: {text!r} (a region such as 'America/Los_Angeles', "
                         "or an offset such as '-08:00')") from None
    return text


def trigger_interval(text: str) -> str:
    """A micro-batch interval: a duration, or 0 for each batch as soon as the one before has finished."""
    if text.strip() in ("0", "0s") or _DURATION.match(text) and int(_DURATION.match(text).group(1)) == 0:
        return "0 seconds"
    return duration(text)


def broker_timeout(text: str) -> str:
    """How long a job waits for a broker that is away: a duration, or never (0)."""
    if text.strip().lower() in ("0", "never", "none"):
        return "never"
    return duration(text)


def seconds_or_duration(text: str) -> float:
    """A number of seconds ("10", "0.5", "0") or a duration ("1 minute")."""
    try:
        value = float(text)
    except ValueError:
        return float(duration_seconds(text))
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"a number of seconds is 0 or more, got {text!r}")
    return value


def duration_seconds(text: str) -> int:
    amount, name = duration(text).split()
    return int(amount) * _UNIT_SECONDS[name[0]]


@dataclass(frozen=True)
class StreamOptions:
    """What the streaming job does; `job.run(options, settings)`. Durations are Spark intervals ("1 hour")."""

    output: str = "out"
    checkpoint: str | None = None  # None: OUTPUT/checkpoint; a URI (hdfs://, s3a://) passes unchanged
    radio_codes: str = str(DEFAULT_RADIO_CODES)
    window: str = "1 hour"
    slide: str | None = None  # None: the window length (tumbling windows)
    watermark: str = "1 hour"
    max_ahead: str = "1 day"
    # Processing time. A minute outlasts what makes a busy partition briefly quiet (a leader election, a
    # broker restart in a cluster, a long GC pause), so its calls are not made late by it; and a partition
    # that never gets data delays finality by only a minute. Partitions with traffic never go idle.
    idle_timeout: str = "1 minute"
    max_offsets_per_trigger: int | None = None
    trigger: str = "0 seconds"  # each micro-batch as soon as the one before has finished
    starting_offsets: str = "earliest"
    start_over: bool = False
    once: bool = False
    source: str = "kafka"  # kafka: Spark's connector; python: ours on the Python Data Source API
    timezone: str = ZONE_NAME
    master: str | None = None
    spark_conf: dict[str, str] = field(default_factory=dict)
    console_top: int = 5
    console_every: float | None = None  # seconds between batch lines; None: 10 live, every batch with --once
    accept_data_loss: bool = False  # count on from what Kafka still holds, the loss recorded in the results
    broker_timeout: str | None = None  # None: 30 s with --once, no limit live; "never": no limit
    group_id: str | None = None  # None: sfcrime-<query id>; the consumer group the job's offsets are committed to
    strict: bool = False
    results_url: str | None = None  # a PostgreSQL results store (postgresql://user@host:port/db) instead of SQLite
    results_config_file: str | None = None  # a file with the store's password
    warm_up: int = 30  # batches of generated calls through the plan before a live query reads (warm_up.py)

    def __post_init__(self) -> None:
        """Plain ValueErrors, whoever builds the options: the CLI turns them into usage errors."""
        for name in ("window", "watermark", "max_ahead", "idle_timeout"):
            duration(getattr(self, name))
        if self.slide is not None:
            duration(self.slide)
        if self.window_s % self.pane_s:
            raise ValueError(f"--window ({self.window}) must be a whole multiple of --slide ({self.slide})")

    @property
    def window_s(self) -> int:
        return duration_seconds(self.window)

    @property
    def pane_s(self) -> int:
        return duration_seconds(self.pane)

    @property
    def watermark_s(self) -> int:
        return duration_seconds(self.watermark)

    @property
    def max_ahead_s(self) -> int:
        return duration_seconds(self.max_ahead)

    @property
    def idle_timeout_s(self) -> int:
        return duration_seconds(self.idle_timeout)

    @property
    def broker_timeout_s(self) -> float | None:
        """--broker-timeout, else 30 s for --once (a command in a terminal must not hang on a broker that is
        gone) and no limit for a live job: a service rides an outage out, saying so every minute and on
        /healthz, because ending it would not bring the broker back. None: no limit."""
        if self.broker_timeout is None:
            return ONCE_BROKER_TIMEOUT_S if self.once else None
        return None if self.broker_timeout == "never" else duration_seconds(self.broker_timeout)

    @property
    def console_every_s(self) -> float:
        """A live job under traffic makes several batches a second, and a line each scrolled the screen: one
        every 10 s (each batch is still kept in the results). --once is a finite run: every batch."""
        if self.console_every is None:
            return 0.0 if self.once else 10.0
        return self.console_every

    @property
    def warm_up_batches(self) -> int:
        """A live job warms up before it reads its topic; --once is a finite run, where it would only add."""
        return 0 if self.once else self.warm_up

    @property
    def place(self) -> "ResultsPlace":
        from ..results import ResultsPlace

        return ResultsPlace(Path(self.output), self.results_url, self.results_config_file)

    @property
    def pane(self) -> str:
        """The window slide: windows are counted in panes this long."""
        return self.slide or self.window

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "StreamOptions":
        values = {f.name: getattr(args, f.name) for f in fields(cls)}
        values["spark_conf"] = dict(values["spark_conf"] or [])
        return cls(**values)


DEFAULTS = StreamOptions()


def add_stream_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default=DEFAULTS.output, help="results, dead letters and checkpoint (default out/)")
    parser.add_argument("--checkpoint", help="Spark checkpoint directory (default OUTPUT/checkpoint)")
    parser.add_argument("--radio-codes", default=DEFAULTS.radio_codes, help="disposition code descriptions")
    parser.add_argument("--window", type=flag_type(duration), default=DEFAULTS.window,
                        help=f"event-time window length (default {DEFAULTS.window})")
    parser.add_argument("--slide", type=flag_type(duration), help="window slide (default: the window length, i.e. tumbling)")
    parser.add_argument("--watermark", type=flag_type(duration), default=DEFAULTS.watermark,
                        help=f"a window is final once the stream is this far past its end (default {DEFAULTS.watermark}); "
                             "a call arriving later still counts, and marks the window revised")
    parser.add_argument("--idle-timeout", type=flag_type(duration), default=DEFAULTS.idle_timeout,
                        help="a partition with nothing unread and no new message for this long (processing time) "
                             f"stops holding the watermark back (default {DEFAULTS.idle_timeout}): shorter makes "
                             "windows final sooner, longer is surer a quiet partition's calls are not late")
    parser.add_argument("--max-ahead", type=flag_type(duration), default=DEFAULTS.max_ahead,
                        help=f"an event time this far ahead of the stream is a dead letter, not a call "
                             f"(default {DEFAULTS.max_ahead})")
    parser.add_argument("--max-offsets-per-trigger", type=positive_int, metavar="N",
                        help="at most N messages per micro-batch (default: all available)")
    parser.add_argument("--trigger", type=flag_type(trigger_interval), default=DEFAULTS.trigger,
                        help="micro-batch interval (default 0: each batch as soon as the one before is done, "
                             "for answers within a second or two; e.g. '10 seconds' for fewer, larger batches)")
    parser.add_argument("--starting-offsets", choices=("earliest", "latest"), default=DEFAULTS.starting_offsets,
                        help="where a new query starts (a restarted one resumes from its checkpoint)")
    parser.add_argument("--start-over", action="store_true",
                        help="delete the results and the checkpoint in --output first (to count a new topic or query)")
    parser.add_argument("--once", action="store_true", help="process everything available now, then exit 0")
    parser.add_argument("--source", choices=("kafka", "python"), default=DEFAULTS.source,
                        help="kafka: Spark's own connector (spark-sql-kafka-0-10, the default); "
                             "python: ours on the Python Data Source API")
    parser.add_argument("--timezone", type=flag_type(time_zone), default=DEFAULTS.timezone,
                        help="session time zone: call_date_time is San Francisco local time")
    parser.add_argument("--master", help="Spark master (default: what spark-submit says, else local[*])")
    parser.add_argument("--spark-conf", action="append", metavar="KEY=VALUE", type=key_value("--spark-conf"),
                        help="any Spark setting, repeatable (e.g. spark.sql.shuffle.partitions=4)")
    parser.add_argument("--console-top", type=non_negative_int, default=DEFAULTS.console_top, metavar="N",
                        help="top crime types of the current window printed per batch (0: none)")
    parser.add_argument("--console-every", type=flag_type(seconds_or_duration), metavar="SECONDS",
                        help="at most one batch line per SECONDS on the console, the first and the last always "
                             "(default 10 for a live job, 0: every batch, with --once); every batch is kept in "
                             "the results")
    parser.add_argument("--accept-data-loss", action="store_true",
                        help="when Kafka's retention has deleted messages the job had not read, count on from what "
                             "is left: the loss is recorded in the results, and every answer says it is short of it")
    parser.add_argument("--broker-timeout", type=flag_type(broker_timeout), metavar="DURATION",
                        help="give up when no broker has answered for this long (default 30 seconds with --once; "
                             "never for a live job, which says so every minute and starts counting again when the "
                             "broker is back; 'never' for no limit)")
    parser.add_argument("--group-id", metavar="GROUP",
                        help="the Kafka consumer group each counted batch's offsets are committed to, for "
                             "kafka-consumer-groups.sh to show the lag (default sfcrime-<query id>, printed at start); "
                             "a restart still resumes from the checkpoint")
    parser.add_argument("--strict", action="store_true", help="fail on the first malformed record instead of counting it")
    parser.add_argument("--warm-up", type=non_negative_int, default=DEFAULTS.warm_up, metavar="BATCHES",
                        help=f"a live job first runs its plan on this many batches of generated calls, thrown away, "
                             f"so that the first real calls do not wait for the JVM to compile Spark's code "
                             f"(default {DEFAULTS.warm_up}, about 10 s here; 0: none; never with --once)")
    add_results_arguments(parser)
    add_kafka_arguments(parser, client=False)
