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
