"""Configuration: flags win over the environment, which wins over defaults; secrets never print."""

import argparse

import pytest

from sfcrime.cli import build_parser
from sfcrime.clients.kafka_python import kafka_python_config
from sfcrime.kafka_settings import kafka_settings, redact


def settings(argv, env):
    args = build_parser().parse_args(["produce", *argv])
    return kafka_settings(args, env)


def test_defaults():
    s = settings([], {})
    assert (s.bootstrap_servers, s.topic, s.client, s.properties) == ("localhost:9092", "calls", "confluent", {})


def test_environment_over_defaults_and_flags_over_environment():
    env = {"KAFKA_BOOTSTRAP_SERVERS": "envhost:9092", "KAFKA_TOPIC": "envtopic", "KAFKA_SASL_PASSWORD": "envpw"}
    assert settings([], env).bootstrap_servers == "envhost:9092"
    s = settings(["--bootstrap-servers", "flaghost:9092", "--sasl-password", "flagpw"], env)
    assert s.bootstrap_servers == "flaghost:9092" and s.topic == "envtopic"
    assert s.properties["sasl.password"] == "flagpw"


def test_the_client_comes_from_the_environment_when_valid():
    from sfcrime.errors import UserError

    assert settings([], {"SFCRIME_CLIENT": "kafka-python"}).client == "kafka-python"
    assert settings(["--client", "confluent"], {"SFCRIME_CLIENT": "kafka-python"}).client == "confluent"
    with pytest.raises(UserError, match="^SFCRIME_CLIENT='kafka_python': the Kafka client is one of confluent, kafka-python$"):
        settings([], {"SFCRIME_CLIENT": "kafka_python"})


def test_kafka_config_passes_through_and_explicit_flags_win():
    s = settings(["--kafka-config", "security.protocol=SASL_SSL", "--kafka-config", "sasl.mechanism=PLAIN",
                  "--sasl-mechanism", "SCRAM-SHA-512", "--kafka-config", "linger.ms=5"], {})
    assert s.properties == {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "linger.ms": "5"}


def test_secrets_are_redacted_when_printed():
    s = settings(["--sasl-username", "alice", "--sasl-password", "hunter2",
                  "--kafka-config", "ssl.key.password=k3y", "--kafka-config", "sasl.jaas.config=secret"], {})
    shown = s.describe()
    assert "hunter2" not in shown and "k3y" not in shown and "secret" not in shown.split("=", 1)[-1].replace("***", "")
    assert "sasl.username=alice" in shown
    assert redact({"sasl.password": "x"}) == {"sasl.password": "***"}


def test_kafka_python_gets_its_own_names():
    config = kafka_python_config({"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-256",
                                  "sasl.username": "u", "sasl.password": "p", "ssl.ca.location": "/ca.pem",
                                  "linger.ms": "5", "acks": "1"})
    assert config == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256",
                      "sasl_plain_username": "u", "sasl_plain_password": "p", "ssl_cafile": "/ca.pem",
                      "linger_ms": 5, "acks": 1}


@pytest.mark.parametrize("argv", [
    ["produce", "--rate", "-5"], ["produce", "--rate", "fast"], ["produce", "--limit", "-1"],
    ["produce", "--client", "nope"], ["produce", "--kafka-config", "novalue"], ["produce", "--rate", "1", "--speedup", "2"],
    ["stream", "--window", "an hour"], ["stream", "--window", "0 minutes"], ["stream", "--trigger", "soon"],
    ["stream", "--timezone", "Bogus/Zone"], ["stream", "--timezone", "+25:99:99:99"], ["stream", "--spark-conf", "novalue"], ["stream", "--spark-conf", "=4"], ["stream", "--console-top", "-1"], ["stream", "--console-every", "-1"], ["stream", "--console-every", "often"],
    ["demo", "--kafka-config", "novalue"], ["demo", "--dashboard-port", "99999"], ["broker", "--port", "70000"],
])
def test_bad_flags_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_durations_are_normalised():
    from sfcrime.stream.options import duration, duration_seconds

    assert duration("1 hour") == "1 hour" and duration("30min") == "30 minutes" and duration("2 H") == "2 hours"
    assert duration_seconds("90 seconds") == 90 and duration_seconds("1 day") == 86400
    with pytest.raises(ValueError, match="not a duration: '-1 hour'"):  # a plain error: the demo builds options too
        duration("-1 hour")


def test_a_live_job_starts_each_batch_when_the_last_is_done_unless_told_an_interval():
    from sfcrime.stream.options import trigger_interval

    assert build_parser().parse_args(["stream"]).trigger == "0 seconds"
    assert trigger_interval("0") == trigger_interval("0 seconds") == "0 seconds"
    assert trigger_interval("10 sec") == "10 seconds"
    with pytest.raises(ValueError):
        trigger_interval("-1 second")


def test_checkpoint_on_shared_storage_passes_as_a_uri_and_a_local_one_is_made_absolute(tmp_path, monkeypatch):
    from sfcrime.stream.startup_checks import checkpoint_location

    monkeypatch.chdir(tmp_path)
    assert checkpoint_location("hdfs://namenode:8020/sfcrime/ckpt", tmp_path / "out") == "hdfs://namenode:8020/sfcrime/ckpt"
    assert checkpoint_location("s3a://bucket/ckpt", tmp_path / "out") == "s3a://bucket/ckpt"
    assert checkpoint_location("ckpt", tmp_path / "out") == str(tmp_path / "ckpt")
    assert checkpoint_location(None, tmp_path / "out") == str(tmp_path / "out" / "checkpoint")


def test_spark_cluster_flags_and_a_bad_memory_size_is_one_line():
    from sfcrime.errors import UserError
    from sfcrime.local.spark_cluster import SparkStandaloneCluster

    args = build_parser().parse_args(["spark-cluster", "--workers", "3", "--port", "0"])
    assert (args.workers, args.cores, args.memory, args.port, args.webui_port) == (3, 1, "1g", 0, 8080)
    with pytest.raises(UserError, match="like 512m or 1g"):
        SparkStandaloneCluster(memory="lots")


def test_the_stream_flags_become_typed_options_once():
    from sfcrime.stream.options import StreamOptions

    assert StreamOptions.from_args(build_parser().parse_args(["stream"])) == StreamOptions()
    options = StreamOptions.from_args(build_parser().parse_args(
        ["stream", "--once", "--window", "2h", "--slide", "30min", "--spark-conf", "spark.sql.shuffle.partitions=2",
         "--spark-conf", "spark.a=b=c"]))
    assert (options.once, options.window, options.pane) == (True, "2 hours", "30 minutes")
    assert options.spark_conf == {"spark.sql.shuffle.partitions": "2", "spark.a": "b=c"}


def test_the_demo_takes_the_shared_kafka_flags_and_names_no_broker_by_default(tmp_path):
    from sfcrime.cli import build_parser as parser

    config_file = tmp_path / "client.properties"
    config_file.write_text("bootstrap.servers=filehost:9093\nsecurity.protocol=SASL_SSL\n")
    unnamed = kafka_settings(parser().parse_args(["demo"]), {}, default_bootstrap="", default_topic="")
    assert (unnamed.bootstrap_servers, unnamed.topic) == ("", "")
    named = kafka_settings(parser().parse_args(["demo", "--kafka-config-file", str(config_file)]), {},
                           default_bootstrap="", default_topic="")
    assert (named.bootstrap_servers, named.properties) == ("filehost:9093", {"security.protocol": "SASL_SSL"})


@pytest.mark.parametrize("zone", ["America/Los_Angeles", "UTC", "Z", "+08:00", "-08", "GMT-7", "UTC+05:30"])
def test_time_zones_spark_takes_are_taken(zone):
    assert build_parser().parse_args(["stream", f"--timezone={zone}"]).timezone == zone


def test_a_count_flag_says_its_own_range_whatever_the_wrong_number():
    from sfcrime.flags import non_negative_int, positive_int

    for text in ("0", "-1"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"^must be 1 or more, got '{text}'$"):
            positive_int(text)
    with pytest.raises(argparse.ArgumentTypeError, match="^must be 0 or more, got '-1'$"):
        non_negative_int("-1")
    with pytest.raises(argparse.ArgumentTypeError, match="^not a whole number: '1.5'$"):
        positive_int("1.5")
