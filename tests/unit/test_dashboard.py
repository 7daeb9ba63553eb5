"""The dashboard's server without a browser: its endpoint is answers.answers(), bad queries are one-line 400s,
and it tells a running job from a stopped one. (The page itself: tests/integration/test_dashboard.py.)"""

import json
import os
import subprocess
import time
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.error import HTTPError
from pathlib import Path
from urllib.request import ProxyHandler, build_opener

import pytest

from sfcrime.dashboard import start_in_background
from sfcrime.dashboard.server import BadRequest, parse_query
from sfcrime.answers import answers
from sfcrime.dashboard.health import job_state
from sfcrime.results import ResultStore
from tests.conftest import run_cli

OPENER = build_opener(ProxyHandler({}))  # local servers only


def get(url: str) -> tuple[int, str]:
    try:
        with OPENER.open(url, timeout=10) as response:
            return response.status, response.read().decode()
    except HTTPError as error:
        return error.code, error.read().decode()


def write_batch(store: ResultStore, batch_id: int, pane_start: int, crime_type: str, n: int) -> None:
    store.write_batch(batch_id, {
        "crime_type_windows": [{"window_start": pane_start, "crime_type": crime_type, "count": n}],
        "locations": [{"address": "800 Block Of Bryant St", "count": n}],
        "dispositions": [{"disposition": "HAN", "description": "Handled", "count": n}],
        "total": [{"count": n, "kafka_us_min": 1e15, "kafka_us_max": 1e15, "kafka_us_avg": 1e15}]})


@pytest.fixture
def results(tmp_path):
    store = ResultStore(tmp_path)
    store.check_settings({"window": "1 hour", "slide": "1 hour", "window_seconds": "3600", "pane_seconds": "3600"})
    yield store
    store.close()


@pytest.fixture
def dashboard(results, tmp_path):
    url, stop = start_in_background(tmp_path, port=0)
    yield url
    stop()


def test_the_endpoint_gives_the_answers_of_report_json_and_follows_new_batches(results, dashboard, tmp_path):
    write_batch(results, 0, 1538470800, "Traffic Stop", 3)  # 2018-10-02 02:00 in San Francisco, a Tuesday
    status, body = get(dashboard + "api/answers")
    assert status == 200 and json.loads(body) == json.loads(json.dumps(answers(tmp_path)))
    assert json.loads(body)["calls_by_weekday_hour"][1][2] == 3
    write_batch(results, 1, 1538470800, "Traffic Stop", 4)
    status, body = get(dashboard + "api/answers?top=5&windows=2")
    assert json.loads(body)["top_crime_types"] == [{"crime_type": "Traffic Stop", "count": 7}]


@pytest.mark.parametrize("query, reason", [
    ("top=abc", "top must be a whole number from 1 to 1000, got 'abc'"),
    ("top=0", "top must be a whole number from 1 to 1000, got '0'"),
    ("windows=-3", "windows must be a whole number from 1 to 1000, got '-3'"),
    ("top=5&top=6", "query parameter 'top' given more than once"),
    ("colour=red", "unknown query parameter 'colour' (known: top, windows)"),
])
def test_a_bad_query_is_a_400_with_one_line(dashboard, query, reason):
    for path in ("api/answers", ""):  # the page passes its query on to the endpoint: it is checked there too
        status, body = get(f"{dashboard}{path}?{query}")
        assert (status, body) == (400, f"bad request: {reason}\n")
    with pytest.raises(BadRequest):
        parse_query(query)


def test_unknown_paths_are_404_and_no_file_outside_static_is_served(dashboard):
    assert get(dashboard + "nothing")[0] == 404
    assert get(dashboard + "static/../server.py")[0] == 404
    assert get(dashboard + "static/%2E%2E%2Fserver.py")[0] == 404
    status, body = get(dashboard + "static/chart.umd.min.js")
    assert status == 200 and body.startswith("/*!\n * Chart.js v4.6.1")


def test_before_the_first_results_the_endpoint_says_what_it_waits_for(tmp_path):
    url, stop = start_in_background(tmp_path / "not-yet", port=0)
    try:
        status, body = get(url + "api/answers")
        page_status, page = get(url)
    finally:
        stop()
    assert status == 503 and json.loads(body)["error"].startswith("no results at ")
    assert page_status == 200 and "/static/dashboard.js" in page


def fake_spark_ui(app_id: str):
    """Answers /api/v1/applications/<app_id> as Spark's UI does for its own application, 404 otherwise."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == f"/api/v1/applications/{app_id}" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_the_job_is_running_while_its_spark_ui_knows_its_application():
    server = fake_spark_ui("local-1")
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert job_state(url, "local-1") == "running"
        assert job_state(url, "local-2") == "stopped"  # another Spark job took the port
        assert job_state(url, "local-1", os.getpid()) == "running"
        gone = subprocess.Popen(["true"])
        gone.wait()
        assert job_state(url, "local-1", gone.pid) == "stopped"  # its process has ended
    finally:
        server.shutdown()
        server.server_close()
    assert job_state(url, "local-1") == "stopped"
    assert job_state(None, None) == "unknown"


def test_the_spark_ui_address_is_kept_in_the_results(results, tmp_path):
    results.set_meta(spark_ui_url="http://127.0.0.1:9", spark_app_id="local-1", unset=None)
    pipeline = answers(tmp_path)["pipeline"]
    assert (pipeline["spark_ui_url"], pipeline["spark_app_id"], pipeline["job"]) == ("http://127.0.0.1:9", "local-1",
                                                                                     "stopped")


def test_a_host_other_than_loopback_is_warned_about_and_a_bind_failure_is_one_line(tmp_path):
    result = run_cli("dashboard", "--output", str(tmp_path), "--host", "192.0.2.1", "--port", "0")  # not ours
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "warning: the dashboard on 192.0.2.1 has no authentication: anyone who can reach 192.0.2.1:0 can read the results",
        "error: cannot serve the dashboard on 192.0.2.1:0: Cannot assign requested address"]
    bad = run_cli("dashboard", "--port", "70000")
    assert bad.returncode == 2 and "a port is 0 to 65535" in bad.stderr and "Traceback" not in bad.stderr
    (tmp_path / "a-file").write_text("x")  # else it would wait for results to appear there, for ever
    a_file = run_cli("dashboard", "--output", str(tmp_path / "a-file"), "--port", "0", timeout=30)
    assert a_file.returncode == 1 and a_file.stderr.splitlines() == [
        f"error: --output {tmp_path / 'a-file'} is a file: it names the streaming job's results folder"]


HOSTILE_PATHS = ["/static/..%2f..%2fsfcrime%2fcli.py", "/static/%2e%2e/%2e%2e/README.md", "/static/../../README.md",
                 "/static//etc/passwd", "/static/.hidden", "/%2e%2e/%2e%2e/etc/passwd", "/static/dashboard.js%00.txt",
                 "/static/..\\..\\README.md", "/static/" + "a" * 5000, "/" + "%C0%AE" * 200]


def raw_request(url: str, request: bytes, timeout: float = 10) -> bytes:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_nothing_outside_the_static_folder_is_served_and_errors_repeat_little_of_the_request(results, dashboard):
    secret = (Path(__file__).resolve().parents[2] / "README.md").read_bytes()[:200]
    for path in HOSTILE_PATHS:
        answer = raw_request(dashboard, f"GET {path} HTTP/1.0\r\n\r\n".encode("latin-1"))
        status, _, body = answer.partition(b"\r\n\r\n")
        assert status.split()[1] in (b"400", b"404"), (path, status)
        assert len(body) < 120 and secret not in answer and b"root:" not in answer, (path, body)
    for request in (b"GARBAGE " + b"x" * 3000 + b"\r\n\r\n", b"GET /\x00\x01 HTTP/9.9\r\n\r\n", b"POST / HTTP/1.0\r\n\r\n",
                    b"GET /api/answers?top=" + b"9" * 3000 + b" HTTP/1.0\r\n\r\n"):
        answer = raw_request(dashboard, request)
        if not answer.startswith(b"HTTP/"):  # a request line of two words is HTTP/0.9: the answer has no headers
            answer = b"HTTP/0.9 " + answer + b"\r\n\r\n"
        status, _, body = answer.partition(b"\r\n\r\n")
        first_line = status.split(b"\r\n")[0]
        assert first_line.split()[1].startswith(b"4") and len(first_line) < 120 and len(body) < 160, answer[:300]


def test_a_stalled_client_or_a_burst_of_clients_does_not_stop_it_answering(results, dashboard):
    import socket
    import threading

    write_batch(results, 0, 1538470800, "Traffic Stop", 3)
    stalled = socket.create_connection(("127.0.0.1", int(dashboard.rsplit(":", 1)[1].strip("/"))))
    stalled.sendall(b"GET /api/answers HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    answers_seen: list[int] = []

    def ask() -> None:
        status, body = get(dashboard + "api/answers")
        answers_seen.append(json.loads(body)["total_calls"] if status == 200 else -status)

    try:
        threads = [threading.Thread(target=ask) for _ in range(40)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert answers_seen == [3] * 40 and time.monotonic() - started < 20
    finally:
        stalled.close()
