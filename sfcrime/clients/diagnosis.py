"""Why a Kafka client got nowhere, in one line a user can act on: every client's errors are read here."""

from __future__ import annotations

import re
import socket

from ..errors import UserError
from ..kafka_settings import KafkaSettings


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def any_port_open(bootstrap_servers: str) -> bool:
    """Whether anything takes a connection at one of the bootstrap addresses."""
    for address in bootstrap_servers.split(","):
        host, _, port = address.strip().rpartition(":")
        if host and port.isdigit() and port_open(host.strip("[]"), int(port), 1.0):
            return True
    return False


def unreachable(settings: KafkaSettings, detail: str = "") -> UserError:
    reason = f": {detail}" if detail else ""
    if any_port_open(settings.bootstrap_servers):  # something listens: a protocol mismatch, not a missing broker
        advice = ("something listens there but gave no metadata; does the broker require SASL or TLS, "
                  "or the client ask for what the broker does not speak? see --security-protocol")
    else:
        advice = "start one with `python -m sfcrime broker`, or set --bootstrap-servers"
    return UserError(f"cannot reach Kafka at {settings.bootstrap_servers} within {settings.timeout_s:g}s{reason} "
                     f"({advice})")


def kafka_python_error(settings: KafkaSettings, error: Exception) -> UserError:
    """A kafka-python client that could not be built: a bad setting, or no broker that answers."""
    from kafka.errors import KafkaConfigurationError

    if isinstance(error, (KafkaConfigurationError, ValueError, TypeError)):
        return UserError(f"bad Kafka setting for kafka-python: {error}")
    return unreachable(settings, type(error).__name__)


def confluent_setting_error(error: Exception) -> UserError:
    """librdkafka refused its configuration as the client was made: a property it does not know (a Java
    client's name, a typo), a bad value, a certificate file it can't read."""
    detail = error.args[0].str() if error.args and hasattr(error.args[0], "str") else str(error)
    names = (" (--kafka-config and --kafka-config-file take librdkafka's property names)"
             if "No such configuration property" in detail else "")
    return UserError(f"bad Kafka setting: {detail}{names}")


def confluent_connect_error(settings: KafkaSettings, client, errors: list, error: Exception) -> UserError:
    """Why a librdkafka client got no metadata, in one line: a refused login says so, not "unreachable".

    librdkafka hands its connection errors to error_cb only when the client is polled: poll once to have them.
    """
    client.poll(0)
    from confluent_kafka import KafkaError

    for err in errors:
        if err.code() == KafkaError._AUTHENTICATION:
            return UserError(f"Kafka at {settings.bootstrap_servers} refused the login: {_short(err.str())}")
    for err in errors:
        if any(word in err.str() for word in ("SSL", "SASL", "handshake")):
            return unreachable(settings, _short(err.str()))
    return unreachable(settings, confluent_error_detail(error.args[0]))


def confluent_error_detail(error) -> str:
    text = str(error)
    return text if len(text) < 200 else text[:200] + "..."


def _short(librdkafka_text: str) -> str:
    """'sasl_ssl://h:9092/bootstrap: SASL ... failed: ... (after 36ms in state AUTH_REQ)' without the noise."""
    text = re.sub(r"^\S+://\S+?: ", "", librdkafka_text)
    return re.sub(r" \(after \d+ms in state \w+\)$", "", text)
