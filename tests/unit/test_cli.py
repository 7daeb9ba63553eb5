"""Each script's own usage line, and no silent abbreviations (issue: `consumer_server.py --from` once ran
as `--from-beginning`)."""

import pytest

from tests.conftest import run_cli


@pytest.mark.parametrize("script, typo, meant", [("kafka_server.py", "--bogus", None),
                                                 ("consumer_server.py", "--from", "--from-beginning"),
                                                 ("data_stream.py", "--onc", "--once"),
                                                 ("data_stream.py", "--windw 1h", "--window")])
def test_a_mistyped_or_abbreviated_flag_is_refused_first_then_the_flag_meant_then_a_short_usage(script, typo, meant):
    """The error on the first line, where a terminal's last screen still shows it (the whole usage was 18
    lines above it); abbreviations stay refused, but the flag they begin is named."""
    result = run_cli(script, *typo.split(), timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"{script}: error: unrecognized arguments: {typo}"
    assert lines[1:-1] == ([f"did you mean {meant}?"] if meant else [])
    assert lines[-1].startswith(f"usage: {script} [options]") and "--help" in lines[-1]


def test_the_module_command_names_the_flag_meant_among_its_own_flags():
    """The top parser would say `sfcrime: error` and know no command's flags: the command answers."""
    for argv, meant in ((["consume", "--from-beg"], "--from-beginning"), (["stream", "--windw"], "--window")):
        result = run_cli(*argv, timeout=60)
        assert result.returncode == 2
        command = f"sfcrime {argv[0]}"
        assert result.stderr.splitlines() == [f"{command}: error: unrecognized arguments: {argv[1]}",
                                              f"did you mean {meant}?",
                                              f"usage: {command} [options]   ({command} --help lists them)"]


def test_a_mistyped_command_or_choice_names_the_one_meant():
    command = run_cli("strem", timeout=60)
    assert command.returncode == 2 and command.stderr.splitlines()[1:] == ["did you mean stream?",
                                                                          "usage: sfcrime [-h] [-v] COMMAND ..."]
    choice = run_cli("produce", "--order", "event_time", timeout=60)
    assert choice.returncode == 2 and choice.stderr.splitlines()[1] == "did you mean event-time?"


def test_every_usage_printed_under_an_error_fits_a_terminal():
    from sfcrime.cli import Parser, _subcommand, build_parser

    parser = build_parser()
    names = next(a for a in parser._actions if a.choices and a.dest == "command").choices
    for command in (parser, *(_subcommand(parser, name) for name in names)):
        assert isinstance(command, Parser)
        assert len(command.short_usage().splitlines()) <= Parser.USAGE_LINES, command.prog


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
    assert result.stderr.startswith(f"{script}: error: {message}")
    assert result.stderr.strip().splitlines()[-1].startswith(f"usage: {script} ")


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


def test_a_file_that_holds_no_calls_is_refused_in_one_line_before_any_broker_is_asked():
    """radio_code.json is a JSON array too: it went out as 19 junk messages and exit 0. Nothing is at
    localhost:1, so a refusal made after contacting the broker would say "cannot reach" instead."""
    result = run_cli("kafka_server.py", "--input", "radio_code.json", "--bootstrap-servers", "localhost:1", timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["error: radio_code.json: not a calls file: none of its 19 records has a "
                                          "crime_id or a call_date_time (the first has: description, disposition_code)"]
