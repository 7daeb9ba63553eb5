"""The live dashboard in a real browser (Debian's headless Chromium through chromium-driver, `make setup-browser`):
the numbers a person sees on the page, against `report --json` and an independent count, from the real job."""

import json
import os
import select
import signal
import subprocess
import time
from urllib.request import ProxyHandler, build_opener

import pytest

from sfcrime.dataset import load_calls
from sfcrime.local.kafka import free_port
from sfcrime.producer import Pacing, replay
from tests.conftest import PYTHON, REPO, run_cli, wait_for
from tests.integration.test_stream import expected_answers, stream

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
OPENER = build_opener(ProxyHandler({}))  # local servers only


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-background-networking", "--disable-gpu",
                 "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # a path: no driver download
    yield driver
    driver.quit()



def start_dashboard(output) -> tuple[subprocess.Popen, str]:
    """`python -m sfcrime dashboard` as a user runs it; returns the process and the URL it prints."""
    process = subprocess.Popen([PYTHON, "-m", "sfcrime", "dashboard", "--output", str(output), "--port", "0"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ready, _, _ = select.select([process.stdout], [], [], 30)
    line = process.stdout.readline() if ready else ""
    assert line.startswith("dashboard: http://127.0.0.1:"), line
    return process, line.split()[1]



def page_text(browser, element_id: str) -> str:
    return browser.execute_script(f"return document.getElementById({element_id!r}).innerText").strip()


def page_number(browser, element_id: str) -> int | None:
    text = page_text(browser, element_id).replace(",", "")
    return int(text) if text.isdigit() else None


def page_table(browser, element_id: str) -> list[list[str]]:
    """The rows of a table body, as the text a person reads in each cell."""
    return browser.execute_script(
        "return [...document.querySelectorAll(`#" + element_id + " tbody tr`)]"
        ".map(tr => [...tr.cells].map(td => td.innerText.trim()))")


def ranking(browser, element_id: str) -> list[tuple[str, int]]:
    """(name, count) per row of a ranking table: rank | name | bar | count."""
    return [(row[1], int(row[3].replace(",", ""))) for row in page_table(browser, element_id) if len(row) == 4]


def api_answers(url: str) -> dict:
    with OPENER.open(url + "api/answers", timeout=30) as response:
        return json.load(response)


def test_the_page_shows_the_answers_of_report_json_for_a_finished_run(kafka, sample_file, sample_records, browser,
                                                                        tmp_path):
    replay(load_calls(sample_file), kafka, Pacing(), progress=False)
    output = tmp_path / "out"
    stream(kafka, output, "--max-offsets-per-trigger", "1000")
    printed = run_cli("report", "--output", str(output), "--json")  # its defaults are the page's: 20 rows
    assert printed.returncode == 0, printed.stderr
    expected = json.loads(printed.stdout)
    independent = expected_answers(sample_records)
    dashboard, url = start_dashboard(output)
    try:
        browser.get(url)
        wait_for("the answers on the page", lambda: page_number(browser, "total-calls"), lambda n: n is not None)
        assert page_number(browser, "total-calls") == expected["total_calls"] == independent["total_calls"] == 2999
        top = ranking(browser, "top-crime-types")
        assert top == [(r["crime_type"], r["count"]) for r in expected["top_crime_types"]] and len(top) == 20
        assert top[0] == independent["types"].most_common(1)[0] == ("Passing Call", 467)
        assert ranking(browser, "top-locations") == [(r["address"], r["count"]) for r in expected["top_locations"]]
        latest, last_final = expected["windows"]["latest"], expected["windows"]["last_final"]
        assert ranking(browser, "current-window") == [(r["crime_type"], r["count"]) for r in latest["top_crime_types"]]
        assert page_text(browser, "current-window-state") == "open"
        assert ranking(browser, "last-final-window") == [(r["crime_type"], r["count"])
                                                        for r in last_final["top_crime_types"]]
        assert page_text(browser, "last-final-window-span") == f"{last_final['start']} to {last_final['end'][11:]}"

        dispositions = [(row[0], row[1], int(row[3].replace(",", ""))) for row in page_table(browser, "dispositions")]
        assert dispositions == [(r["code"], r["description"] or "unknown code (not in radio_code.json)", r["count"])
                                for r in expected["dispositions"]]
        assert any(description.startswith("unknown code") for _, description, _ in dispositions)

        heat = browser.execute_script("return [...document.querySelectorAll('#heatmap tbody tr')]"
                                      ".map(tr => [...tr.querySelectorAll('td.n')].map(td => +td.dataset.count))")
        assert heat == expected["calls_by_weekday_hour"] and sum(map(sum, heat)) == 2999

        assert browser.find_element("id", "job").get_attribute("data-state") == "stopped"
        assert page_text(browser, "job").startswith("Job stopped")
        last_batch = [b for b in expected["pipeline"]["batches"] if b["input_rows"]][-1]
        assert page_text(browser, "health-batch") == f"(batch {last_batch['batch_id']})"
        assert page_number(browser, "health-backlog") == last_batch["backlog"] == 0
        assert page_number(browser, "health-processed-rps") == round(last_batch["processed_rps"]) > 0
        assert api_answers(url) == expected  # programs and the page read the same answers

        # each partition's own event time; every one read to its end in the topic (asked of Kafka here)
        from confluent_kafka import Consumer, TopicPartition

        reader = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": "test-ends"})
        ends = {p: reader.get_watermark_offsets(TopicPartition(kafka.topic, p), timeout=10)[1] for p in range(3)}
        reader.close()
        shown = [(int(r[0]), r[1], int(r[2].replace(",", "")), int(r[3].replace(",", "")), r[5])
                 for r in page_table(browser, "partitions")]
        assert shown == [(p["partition"], p["event_time"], ends[p["partition"]], ends[p["partition"]],
                          "holds the watermark" if p["holds_watermark"] else "idle" if p["idle"] else "active")
                         for p in expected["pipeline"]["partitions"]]
        holding = [event for _, event, _, _, state in shown if state == "holds the watermark"]
        assert holding == [min(event for _, event, *_ in shown)]  # the slowest partition holds it

        browser.set_window_size(1400, browser.execute_script("return document.body.scrollHeight") + 40)
        screenshot = tmp_path / "dashboard.png"
        assert browser.save_screenshot(str(screenshot))
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 50_000
    finally:
        dashboard.terminate()
        dashboard.wait(10)


def test_the_numbers_grow_on_the_page_while_the_job_runs_without_a_reload(kafka, sample_file, browser, tmp_path):
    first = load_calls(sample_file, limit=1000)
    first_calls = len({key for key, _, _ in first})  # the replay's first 1,000 messages, each call once
    replay(first, kafka, Pacing(), progress=False)
    output, beside_the_job = tmp_path / "out", free_port()
    job = subprocess.Popen([PYTHON, "data_stream.py", "--trigger", "1 second", "--dashboard", str(beside_the_job),
                            "--bootstrap-servers", kafka.bootstrap_servers, "--topic", kafka.topic,
                            "--output", str(output), "--console-top", "0"],
                           cwd=REPO, stdout=subprocess.DEVNULL, stderr=(tmp_path / "job.err").open("w"),
                           start_new_session=True)
    dashboard, url = start_dashboard(output)
    try:
        browser.get(url)
        wait_for("the first 1,000 messages counted", lambda: page_number(browser, "total-calls"),
                 lambda n: n == first_calls, timeout=240)
        wait_for("the job shown running", lambda: browser.find_element("id", "job").get_attribute("data-state"),
                 lambda state: state == "running", timeout=30)
        assert page_text(browser, "spark-ui").startswith("http")
        browser.execute_script("window.sameDocument = true")  # gone if the page reloads
        refreshes = int(browser.find_element("tag name", "body").get_attribute("data-refreshes"))

        replay(load_calls(sample_file, skip=1000), kafka, Pacing(), progress=False, append=True)
        wait_for("the rest counted", lambda: page_number(browser, "total-calls"), lambda n: n == 2999, timeout=120)
        assert browser.execute_script("return window.sameDocument") is True
        assert int(browser.find_element("tag name", "body").get_attribute("data-refreshes")) > refreshes
        assert page_number(browser, "batches") >= 2
        assert api_answers(f"http://127.0.0.1:{beside_the_job}/")["total_calls"] == 2999  # --dashboard serves too

        os.killpg(job.pid, signal.SIGINT)  # Ctrl-C: the job stops; the page says so, still without a reload
        job.wait(60)
        said = (tmp_path / "job.err").read_text()
        assert job.returncode == 130 and "Traceback" not in said, said[-3000:]
        assert said.strip().splitlines()[-1] == (
            f"stopping (Ctrl-C); every finished batch is kept: resume with the same --output {output}")
        wait_for("the job shown stopped", lambda: browser.find_element("id", "job").get_attribute("data-state"),
                 lambda state: state == "stopped", timeout=30)
        assert page_number(browser, "total-calls") == 2999
        assert browser.execute_script("return window.sameDocument") is True
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
        dashboard.terminate()
        dashboard.wait(10)


def test_the_page_shows_the_duplicates_dropped_and_the_last_known_latency_after_batches_of_duplicates(browser,
                                                                                                      tmp_path):
    """Results as a job writes them (no Spark needed): batch 0 counts 40 calls 2 s after Kafka took them;
    batches 1 and 2 hold only calls sent again, which count nothing and so have no latency. The page said
    nothing of the duplicates and "– / –" for the latency."""
    from sfcrime.dashboard import start_in_background
    from sfcrime.results import ResultStore
    from sfcrime.results.rows import ProgressRow

    store = ResultStore(tmp_path)
    store.check_settings({"window": "1 hour", "slide": "1 hour", "window_seconds": "3600", "pane_seconds": "3600"})
    kafka_us = (time.time() - 2.0) * 1e6
    store.write_batch(0, {"crime_type_windows": [{"window_start": 1538470800, "crime_type": "Traffic Stop", "count": 40}],
                          "locations": [{"address": "800 Block Of Bryant St", "count": 40}],
                          "total": [{"count": 40, "kafka_us_min": kafka_us - 1e6, "kafka_us_max": kafka_us,
                                     "kafka_us_avg": kafka_us - 5e5, "event_s_max": 1538470900}]})
    for batch_id, rows, duplicates in ((0, 41, 1), (1, 25, 25), (2, 30, 30)):
        if batch_id:
            store.write_batch(batch_id, {})
        store.write_progress(ProgressRow(batch_id, "2026-12-02T12:00:00.000Z", rows, 100.0, 100.0, 800, None, 40, 0,
                                         duplicates, None))
    expected = answers_of(tmp_path)
    timed = [b for b in expected["pipeline"]["batches"] if b["latency_mean_s"] is not None]
    assert [b["batch_id"] for b in timed] == [0] and expected["duplicates"] == 56
    url, stop = start_in_background(tmp_path, port=0)
    try:
        browser.get(url)
        wait_for("the answers on the page", lambda: page_number(browser, "total-calls"), lambda n: n == 40)
        assert page_number(browser, "duplicates") == 56
        assert page_text(browser, "health-batch") == "(batch 2)"  # the latest batch with data: duplicates only
        assert page_text(browser, "health-latency") == (f"{timed[0]['latency_mean_s']:.2f} s / "
                                                        f"{timed[0]['latency_max_s']:.2f} s")
        assert page_text(browser, "health-latency-batch") == "(batch 0)"
    finally:
        stop()
        store.close()


def answers_of(output) -> dict:
    from sfcrime.answers import answers

    return json.loads(json.dumps(answers(output)))
