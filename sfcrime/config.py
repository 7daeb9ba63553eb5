"""Configuration in one place: explicit flags win over the environment, which wins over defaults.

The environment is read when a command runs, never at import, so tests can set it per test.
Kafka settings use the Java/librdkafka property names (`security.protocol`, `sasl.mechanism`, ...);
`clients.py` translates them for kafka-python.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
DEFAULT_INPUT = REPO_DIR / "police-department-calls-for-service.json.gz"
DEFAULT_RADIO_CODES = REPO_DIR / "radio_code.json"
DEFAULT_BOOTSTRAP = "localhost:9092"
DEFAULT_TOPIC = "calls"
CLIENTS = ("confluent", "kafka-python")

# Security settings that may also come from the environment (KAFKA_SASL_PASSWORD=...).
SECURITY_PROPERTIES = (
    "security.protocol",
    "sasl.mechanism",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.key.password",
)
_SECRET = re.compile(r"password|secret|token|jaas|credential", re.IGNORECASE)

log = logging.getLogger(__name__)


class UserError(Exception):
    """A problem the user can fix (bad file, unreachable broker): one line, exit 1, no traceback."""


class FlagConflict(UserError):
    """Flags that each parse but contradict each other: a usage error, so exit 2 with the usage, as argparse does."""


class TopicMissing(UserError):
    """The topic is not on the broker (an in-memory broker loses its topics when it restarts)."""


@dataclass
class KafkaSettings:
    """Where the calls live and how to talk to the broker."""

    bootstrap_servers: str = DEFAULT_BOOTSTRAP
    topic: str = DEFAULT_TOPIC
    client: str = "confluent"
    properties: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 15.0

    def redacted(self) -> dict[str, str]:
        """The properties safe to print: secrets show as ***."""
        return redact(self.properties)

    def describe(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in sorted(self.redacted().items()))
        return f"bootstrap={self.bootstrap_servers} topic={self.topic} client={self.client} {extra}".strip()


def redact(properties: dict[str, str]) -> dict[str, str]:
    return {k: ("***" if _SECRET.search(k) else v) for k, v in properties.items()}


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


_JAAS_FIELD = re.compile(r'(username|password)\s*=\s*"((?:[^"\\]|\\.)*)"')


def properties_lines(text: str):
    """The logical lines of a Java properties file: a line ending in a backslash goes on in the next one;
    blank lines and # or ! comments are left out."""
    pending = ""
    for line in text.splitlines():
        line = pending + line.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1]
            continue
        if line and line[0] not in "#!":
            yield line


def read_properties_file(path: str) -> dict[str, str]:
    """A Kafka client properties file (Java format: key=value, # comments), in librdkafka's names.

    It is what Kafka's own tools take (`--command-config`), so one file serves both:
    sasl.jaas.config becomes sasl.username/sasl.password, a PEM truststore becomes ssl.ca.location.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise UserError(f"cannot read --kafka-config-file {path}: {error.strerror or error}") from None
    raw: dict[str, str] = {}
    for line in properties_lines(text):
        match = re.match(r"([^=:\s]+)\s*[=:]\s*(.*)$", line)
        if not match:
            raise UserError(f"{path}: expected key=value, got {line.split()[0]!r}")
        key, value = match.groups()
        raw[key] = value
    properties = dict(raw)
    jaas = properties.pop("sasl.jaas.config", None)
    if jaas is not None:
        fields = {name: value.replace('\\"', '"').replace("\\\\", "\\") for name, value in _JAAS_FIELD.findall(jaas)}
        if "username" not in fields:
            raise UserError(f"{path}: sasl.jaas.config has no username=\"...\"")
        properties["sasl.username"] = fields["username"]
        properties["sasl.password"] = fields.get("password", "")
    store_type = properties.pop("ssl.truststore.type", "PEM").upper()
    truststore = properties.pop("ssl.truststore.location", None)
    if truststore is not None:
        if store_type != "PEM":
            raise UserError(f"{path}: only a PEM truststore (ssl.truststore.type=PEM) works for every client here, "
                            f"got {store_type}")
        properties["ssl.ca.location"] = truststore
    return properties


def env_name(prop: str) -> str:
    return "KAFKA_" + prop.upper().replace(".", "_")


def kafka_settings(args: argparse.Namespace, environ: dict[str, str] | None = None,
                   default_bootstrap: str = DEFAULT_BOOTSTRAP, default_topic: str = DEFAULT_TOPIC) -> KafkaSettings:
    """Resolve Kafka settings: flag > environment > properties file > default, for every field.

    The demo passes empty defaults: an empty bootstrap_servers or topic then means nobody named one."""
    env = os.environ if environ is None else environ
    config_file = getattr(args, "kafka_config_file", None) or env.get("KAFKA_CONFIG_FILE")
    from_file = read_properties_file(config_file) if config_file else {}
    file_bootstrap = from_file.pop("bootstrap.servers", None)
    properties = dict(from_file)
    properties.update({p: env[env_name(p)] for p in SECURITY_PROPERTIES if env.get(env_name(p))})
    properties.update(getattr(args, "kafka_config", None) or [])
    for prop in SECURITY_PROPERTIES:
        value = getattr(args, prop.replace(".", "_"), None)
        if value:
            properties[prop] = value
    client = getattr(args, "client", None) or env.get("SFCRIME_CLIENT") or "confluent"
    if client not in CLIENTS:  # the flag's choices are argparse's; the environment's are checked here
        raise UserError(f"SFCRIME_CLIENT={client!r}: the Kafka client is one of {', '.join(CLIENTS)}")
    return KafkaSettings(
        bootstrap_servers=(args.bootstrap_servers or env.get("KAFKA_BOOTSTRAP_SERVERS") or file_bootstrap
                           or default_bootstrap),
        topic=args.topic or env.get("KAFKA_TOPIC") or default_topic,
        client=client,
        properties=properties,
        timeout_s=getattr(args, "timeout", None) or 15.0,
    )


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


def discard_stdout() -> None:
    """`... | head` stopped reading, a normal way to stop: what is still buffered for stdout can never be
    written, so stdout goes to /dev/null and the interpreter's last flush does not fail on it."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr, unless the application already configured logging."""
    root = logging.getLogger()
    if root.handlers:
        return
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("kafka", "py4j", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not verbose else logging.INFO)
    logging.getLogger("sfcrime.librdkafka").setLevel(logging.DEBUG if verbose else logging.CRITICAL)
