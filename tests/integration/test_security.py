"""Secured brokers: the settings reach every client, a client that asks for TLS or SASL of a broker
that doesn't speak it fails fast with one clear line, and against Apache Kafka demanding SCRAM-SHA-512
a login with the right password replays, verifies and counts, a wrong one is reported as a refused
login. No secret is ever printed.
"""

import time

import pytest

from sfcrime.cli import build_parser
from sfcrime.clients import java_client_config
from sfcrime.clients.kafka_python import kafka_python_config
from sfcrime.kafka_settings import kafka_settings
from sfcrime.stream.source import settings_from_options
from tests.conftest import run_cli

SECRET = "hunter2-do-not-print"


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
@pytest.mark.parametrize("protocol, extra", [
    ("SSL", []),
    ("SASL_PLAINTEXT", ["--sasl-mechanism", "SCRAM-SHA-256", "--sasl-username", "alice", "--sasl-password", SECRET]),
    ("SASL_SSL", ["--sasl-mechanism", "PLAIN", "--sasl-username", "alice", "--sasl-password", SECRET]),
])
def test_security_against_a_plaintext_broker_fails_fast_and_clearly(bootstrap_servers, topic, client, protocol,
                                                                    extra, sample_file):
    started = time.monotonic()
    result = run_cli("kafka_server.py", "--input", str(sample_file), "--bootstrap-servers", bootstrap_servers,
                     "--topic", topic, "--client", client, "--security-protocol", protocol, *extra,
                     "--timeout", "8", timeout=90)
    assert time.monotonic() - started < 30
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_security_settings_reach_each_client_the_same_way(monkeypatch):
    argv = ["produce", "--security-protocol", "SASL_SSL", "--sasl-mechanism", "SCRAM-SHA-512",
            "--sasl-username", "alice", "--ssl-ca-location", "/etc/ca.pem", "--kafka-config", "client.id=sf"]
    settings = kafka_settings(build_parser().parse_args(argv), {"KAFKA_SASL_PASSWORD": SECRET})
    assert settings.properties == {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                                   "sasl.username": "alice", "sasl.password": SECRET,
                                   "ssl.ca.location": "/etc/ca.pem", "client.id": "sf"}
    # kafka-python gets its own names
    assert kafka_python_config(settings.properties)["sasl_plain_password"] == SECRET
    # Spark's connector (the Java client) gets a JAAS line and a PEM truststore
    java = java_client_config(settings.properties)
    assert java["sasl.jaas.config"] == ("org.apache.kafka.common.security.scram.ScramLoginModule required "
                                        f'username="alice" password="{SECRET}";')
    assert (java["ssl.truststore.type"], java["ssl.truststore.location"]) == ("PEM", "/etc/ca.pem")
    # the Spark source gets them as kafka.* options, as Spark's connector would
    options = {f"kafka.{k}": v for k, v in settings.properties.items()} | {"kafka.bootstrap.servers": "h:1"}
    assert settings_from_options(options).properties == settings.properties
    assert SECRET not in settings.describe()


def test_the_job_passes_security_settings_to_its_source(bootstrap_servers, topic, tmp_path):
    started = time.monotonic()
    result = run_cli("data_stream.py", "--once", "--bootstrap-servers", bootstrap_servers, "--topic", topic,
                     "--security-protocol", "SASL_SSL", "--sasl-mechanism", "PLAIN", "--sasl-username", "a",
                     "--sasl-password", SECRET, "--timeout", "8", "--output", str(tmp_path / "out"), timeout=90)
    assert time.monotonic() - started < 30 and result.returncode == 1
    assert "error: cannot reach Kafka" in result.stderr and SECRET not in result.stderr


RIGHT_PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory):
    from sfcrime.local.kafka import KafkaNode

    with KafkaNode(tmp_path_factory.mktemp("sasl"), scram_users={"alice": RIGHT_PASSWORD}) as broker:
        yield broker.bootstrap_servers


def scram_login(password: str) -> list[str]:
    return ["--security-protocol", "SASL_PLAINTEXT", "--sasl-mechanism", "SCRAM-SHA-512",
            "--sasl-username", "alice", "--sasl-password", password, "--timeout", "8"]


@pytest.mark.parametrize("command", [["kafka_server.py", "--input", "SAMPLE"], ["consumer_server.py", "--max-messages", "1"],
                                     ["data_stream.py", "--once", "--output", "OUT"]])
def test_a_refused_scram_login_is_named_as_such(sasl_broker, topic, sample_file, tmp_path, command):
    command = [str(sample_file) if a == "SAMPLE" else str(tmp_path / "out") if a == "OUT" else a for a in command]
    started = time.monotonic()
    result = run_cli(*command, "--bootstrap-servers", sasl_broker, "--topic", topic, *scram_login(SECRET), timeout=90)
    assert time.monotonic() - started < 30 and result.returncode == 1
    # the broker's own SCRAM answer: the credentials went over the wire through a real SASL exchange
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: Kafka at {sasl_broker} refused the login: "), last
    assert "invalid credentials" in last
    assert SECRET not in result.stderr + result.stdout and "Traceback" not in result.stderr


def test_a_scram_login_replays_and_verifies(sasl_broker, topic, sample_file):
    """(The Spark job on a secured broker, both sources: test_secured_and_replicated.py, over SASL_SSL.)"""
    login = scram_login(RIGHT_PASSWORD)
    replayed = run_cli("kafka_server.py", "--input", str(sample_file), "--quiet", "--bootstrap-servers", sasl_broker,
                       "--topic", topic, *login)
    assert replayed.returncode == 0, replayed.stderr
    verified = run_cli("consumer_server.py", "--verify", "--input", str(sample_file), "--quiet",
                       "--bootstrap-servers", sasl_broker, "--topic", topic, *login)
    assert verified.returncode == 0 and "verify: EXACT" in verified.stdout, verified.stderr
    for output in (replayed, verified):
        assert RIGHT_PASSWORD not in output.stdout + output.stderr


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_no_login_to_a_broker_that_demands_one_points_at_the_security_settings(sasl_broker, topic, client):
    started = time.monotonic()
    result = run_cli("consumer_server.py", "--bootstrap-servers", sasl_broker, "--topic", topic,
                     "--client", client, "--timeout", "8", timeout=90)
    assert time.monotonic() - started < 30 and result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot reach Kafka at {sasl_broker}") and "does the broker require SASL" in last
