"""Each script's own usage line, and no silent abbreviations (issue: `consumer_server.py --from` once ran
as `--from-beginning`)."""

import pytest

from tests.conftest import run_cli


@pytest.mark.parametrize("script, typo", [("kafka_server.py", "--bogus"), ("consumer_server.py", "--from"),
                                          ("data_stream.py", "--onc")])
def test_a_mistyped_or_abbreviated_flag_is_refused_with_the_script_s_own_usage(script, typo):
    result = run_cli(script, typo, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith(f"usage: {script} ")
    assert result.stderr.strip().splitlines()[-1] == f"{script}: error: unrecognized arguments: {typo}"


def test_the_module_command_refuses_abbreviations_too():
    result = run_cli("consume", "--from-beg", timeout=60)
    assert result.returncode == 2 and result.stderr.strip().endswith("unrecognized arguments: --from-beg")


def test_help_is_plain_words_and_every_broker_and_demo_flag_says_what_it_does():
    from sfcrime.cli import _subcommand, build_parser

    top = run_cli("--help", timeout=60)
    assert top.returncode == 0 and "`" not in top.stdout and "kafka_server.py = produce" in top.stdout
    for name in ("broker", "demo"):
        for action in _subcommand(build_parser(), name)._actions:
            assert action.help, f"{name} {action.option_strings} has no help text"


@pytest.mark.parametrize("script, flags, message", [
    ("kafka_server.py", ["--recreate", "--skip", "3"], "--recreate and --skip contradict each other"),
    ("data_stream.py", ["--window", "1 hour", "--slide", "7 minutes"],
     "--window (1 hour) must be a whole multiple of --slide (7 minutes)"),
])
def test_flags_that_contradict_each_other_are_a_usage_error_before_any_broker_is_asked(script, flags, message):
    """Exit 2 with the usage, as argparse does for --append --recreate; no broker is at localhost:1, so a
    check made after contacting it would exit 1 with "cannot reach"."""
    result = run_cli(script, *flags, "--bootstrap-servers", "localhost:1", timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"usage: {script} ")
    assert result.stderr.strip().splitlines()[-1].startswith(f"{script}: error: {message}")


@pytest.mark.parametrize("script", ["kafka_server.py", "consumer_server.py", "data_stream.py"])
@pytest.mark.parametrize("setting, message", [
    ("receive.buffer.bytes=1048576", 'No such configuration property: "receive.buffer.bytes"'),  # a Java client's name
    ("acks=banana", 'Invalid value for configuration property "request.required.acks"'),
])
def test_a_setting_the_kafka_client_refuses_is_one_line(script, setting, message):
    """librdkafka checks its settings as a client is made, before it connects (nothing is at localhost:1)."""
    result = run_cli(script, "--bootstrap-servers", "localhost:1", "--kafka-config", setting, timeout=60)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"error: bad Kafka setting: {message}") and len(result.stderr.splitlines()) == 1
