"""How a command reaches Kafka: the broker, the topic, the client library and its properties, from flags, the
environment and a properties file. Properties use the Java/librdkafka names (`security.protocol`,
`sasl.mechanism`, ...); clients/ translates them for kafka-python. Secrets never reach an output.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .config import CLIENTS, DEFAULT_BOOTSTRAP, DEFAULT_TOPIC
from .errors import UserError


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
