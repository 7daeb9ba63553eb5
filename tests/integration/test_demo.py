"""The demo beside a broker of the user's own, and `report` before any results. `make demo` itself, on the full file,
runs in test_readme.py as README prints it."""

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def test_demo_uses_a_broker_that_answers(bootstrap_servers, sample_file, tmp_path):
    result = run_cli("demo", "--input", str(sample_file), "--output", str(tmp_path / "out"), "--limit", "300",
                     "--bootstrap-servers", bootstrap_servers, "--dashboard-port", "0", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"using the Kafka at {bootstrap_servers}, topic sfcrime-demo-" in result.stderr


def test_report_without_results_is_one_clear_line(tmp_path):
    result = run_cli("report", "--output", str(tmp_path / "nothing"))
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: no results at {tmp_path / 'nothing' / 'results.sqlite'} " \
                                    f"(run the streaming job with --output {tmp_path / 'nothing'} first)"
