"""argparse helpers shared by the commands: typed values with one-line errors, and the flag groups several
commands take (Kafka, the results store)."""

from __future__ import annotations

import argparse
import os

from .config import CLIENTS, DEFAULT_BOOTSTRAP, DEFAULT_TOPIC
from .kafka_settings import SECURITY_PROPERTIES, env_name


def key_value(flag: str):
    """The argparse type of a repeatable `key=value` flag (--kafka-config, --spark-conf): a bad pair exits 2
    with a usage line when the flags are parsed, not later at run time."""

    def pair(text: str) -> tuple[str, str]:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"{flag} expects key=value, got {text!r}")
        return key.strip(), value

    pair.__name__ = "key=value"  # what argparse names in its error
    return pair


def add_kafka_arguments(parser: argparse.ArgumentParser, client: bool = True,
                        bootstrap_default: str = DEFAULT_BOOTSTRAP, topic_default: str = DEFAULT_TOPIC) -> None:
    """The flags every Kafka-facing command shares; the defaults only word the help."""
    group = parser.add_argument_group("Kafka")
    group.add_argument("--bootstrap-servers", help=f"env KAFKA_BOOTSTRAP_SERVERS, default {bootstrap_default}")
    group.add_argument("--topic", help=f"env KAFKA_TOPIC, default {topic_default}")
    if client:
        group.add_argument("--client", choices=CLIENTS, help="Kafka client library (env SFCRIME_CLIENT, default confluent)")
    group.add_argument("--kafka-config-file", metavar="FILE",
                       help="a Kafka client properties file, as Kafka's tools take (env KAFKA_CONFIG_FILE); "
                            "flags and the environment win over it")
    group.add_argument(
        "--kafka-config", action="append", metavar="KEY=VALUE", type=key_value("--kafka-config"),
        help="any Kafka client property, repeatable (e.g. security.protocol=SASL_SSL)",
    )
    for prop in SECURITY_PROPERTIES:
        group.add_argument("--" + prop.replace(".", "-"), metavar="VALUE", help=f"env {env_name(prop)}")
    group.add_argument("--timeout", type=positive_float, metavar="SECONDS",
                       help="give up on an unreachable broker after this long (default 15)")


def add_results_arguments(parser: argparse.ArgumentParser) -> None:
    """--results URL: a PostgreSQL results store instead of SQLite in --output (the job, report, dashboard, demo)."""
    parser.add_argument("--results", dest="results_url", metavar="URL", default=os.environ.get("SFCRIME_RESULTS_URL") or None,
                        help="keep the results in PostgreSQL: postgresql://USER@HOST:PORT/DB (default "
                             "$SFCRIME_RESULTS_URL, else SQLite in --output); the password from PGPASSWORD, "
                             "~/.pgpass or --results-config-file")
    parser.add_argument("--results-config-file", metavar="FILE",
                        help="a file holding the results store's password (a line password=...)")


def flag_type(parse):
    """A parser that raises ValueError, as argparse's type=: its message shown, not argparse's "invalid value"."""
    def parsed(text: str):
        try:
            return parse(text)
        except argparse.ArgumentTypeError:
            raise
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    parsed.__name__ = parse.__name__
    return parsed


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    return whole_number(text, 0)


def positive_int(text: str) -> int:
    return whole_number(text, 1)
