"""`make demo` end to end on a sample: broker, replay, verify, Spark, answers and a report with real charts."""

import json
import subprocess

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

CHART_TITLES = {
    "top_crime_types": "Top crime types (SF police calls for service)",
    "top_locations": "Crime density by location: the busiest addresses",
    "dispositions": "Dispositions of calls (radio code and description)",
    "calls_by_hour": "Calls by hour of day for the top crime types",
    "calls_over_time": "Calls over time for the top crime types",
    "calls_by_window": "Top crime types per event-time window",
}


def demo_brokers() -> set[str]:
    """The demo's own brokers (their data folder is sfcrime-demo-kafka-*): other tests, running beside this one,
    start and stop brokers of their own."""
    out = subprocess.run(["pgrep", "-f", "java.*sfcrime-demo-kafka-.* kafka.Kafka "], capture_output=True,
                         text=True).stdout
    return set(out.split())


def test_demo_runs_end_to_end_and_leaves_nothing_running(sample_file, tmp_path):
    from PIL import Image

    before = demo_brokers()
    output = tmp_path / "out"
    result = run_cli("demo", "--input", str(sample_file), "--output", str(output), "--dashboard-port", "0",
                     env={"KAFKA_BOOTSTRAP_SERVERS": ""}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "verify: EXACT: expected 3,000, received 3,000" in result.stderr
    assert "Kafka source: Spark's connector" in result.stderr
    assert "2,999 calls" in result.stdout and "Top crime types" in result.stdout
    assert "live dashboard: http://127.0.0.1:" in result.stderr and "dashboard: http://127.0.0.1:" in result.stdout
    assert demo_brokers() <= before  # the broker it started is gone

    page = (output / "report" / "report.md").read_text()
    for name, title in CHART_TITLES.items():
        chart = output / "report" / "charts" / f"{name}.png"
        assert f"(charts/{name}.png)" in page
        with Image.open(chart) as image:
            assert image.format == "PNG" and image.width > 500 and image.height > 200
            assert image.info.get("Title") == title
    assert "| Passing Call | 467 |" in page  # the numbers beside the chart

    again = run_cli("report", "--output", str(output), "--json")
    assert json.loads(again.stdout)["total_calls"] == 2999


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
