"""Kafka's tool scripts in .venv/bin talk to the broker every sfcrime command talks to, unless told another
(issue: `kafka-topics.sh --describe --topic calls` printed a Java stack trace for want of --bootstrap-server).
The scripts run /bin/echo here instead of Java: what they would hand Kafka's tool is what they print."""

import subprocess

import pytest

from sfcrime.local.setup import KAFKA_TOOLS, NO_BOOTSTRAP_TOOLS, tool_script


def run_tool(tmp_path, name, *args, env=None):
    script = tmp_path / name
    script.write_text(tool_script(name, "Main", "/bin/echo", "log4j", "jars/*", tmp_path / "no-archive.jsa"))
    result = subprocess.run(["sh", str(script), *args], env={"PATH": "/usr/bin:/bin", **(env or {})},
                            capture_output=True, text=True, check=True)
    return result.stdout.split("Main", 1)[1].split(), result.stderr


@pytest.mark.parametrize("name", sorted(set(KAFKA_TOOLS) - NO_BOOTSTRAP_TOOLS))
def test_a_tool_without_bootstrap_server_gets_the_environments_else_localhost_9092(tmp_path, name):
    assert run_tool(tmp_path, name, "--describe", "--topic", "calls")[0] == [
        "--bootstrap-server", "localhost:9092", "--describe", "--topic", "calls"]
    assert run_tool(tmp_path, name, "--list", env={"KAFKA_BOOTSTRAP_SERVERS": "broker:9093"})[0] == [
        "--bootstrap-server", "broker:9093", "--list"]


@pytest.mark.parametrize("given", [["--bootstrap-server", "b:1"], ["--bootstrap-server=b:1"],
                                   ["--bootstrap-controller", "c:2"], ["--broker-list", "b:1"]])
def test_a_server_named_on_the_command_line_is_left_alone(tmp_path, given):
    args = ["--list", *given]
    assert run_tool(tmp_path, "kafka-topics.sh", *args, env={"KAFKA_BOOTSTRAP_SERVERS": "x:9"})[0] == args


def test_the_storage_tool_takes_no_server_and_gets_none(tmp_path):
    assert run_tool(tmp_path, "kafka-storage.sh", "random-uuid")[0] == ["random-uuid"]


def test_help_says_the_default_first(tmp_path):
    args, said = run_tool(tmp_path, "kafka-console-consumer.sh", "--help", env={"KAFKA_BOOTSTRAP_SERVERS": "b:7"})
    assert said.splitlines() == ["(sfcrime: --bootstrap-server defaults to $KAFKA_BOOTSTRAP_SERVERS, else "
                                 "localhost:9092; here b:7)"]
    assert args == ["--bootstrap-server", "b:7", "--help"]
