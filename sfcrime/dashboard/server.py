"""`python -m sfcrime dashboard`: a small threaded HTTP server for the page, its static files and /api/answers.

Bound to 127.0.0.1 by default: it has no authentication, so another address gets a warning. A bad query
parameter is a 400 with a one-line reason; no request ever shows a traceback.
"""

from __future__ import annotations

import ipaddress
import json
import re
import logging
import socket
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qsl, urlsplit

from ..errors import UserError
from ..answers import RECENT_WINDOWS, read_answers
from ..results import ResultsPlace, as_place, path_in
from .health import DEFAULT_STALL_AFTER_S, assess, job_health, job_state
from .metrics import CONTENT_TYPE_LATEST, exposition

log = logging.getLogger(__name__)
DEFAULT_PORT = 8050
STATIC = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png"}
# query parameter -> (smallest, largest, default); the same meaning as report's --top and --windows
PARAMETERS = {"top": (1, 1000, 20), "windows": (1, 1000, RECENT_WINDOWS)}


class BadRequest(ValueError):
    """A query the user can fix: answered 400 with this one line."""


ECHO = 40  # characters of a request's own text that an error answer repeats
STATIC_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,100}$")  # a file right in static/, and nothing else


def echo(text: str) -> str:
    """A request's text as an error answer repeats it: short, whatever the client sent."""
    return text if len(text) <= ECHO else text[:ECHO] + "..."


def parse_query(query: str) -> dict[str, int]:
    """`top` and `windows` as whole numbers in range; anything else is a BadRequest."""
    values = {name: default for name, (_, _, default) in PARAMETERS.items()}
    seen = set()
    for name, raw in parse_qsl(query, keep_blank_values=True):
        if name not in PARAMETERS:
            raise BadRequest(f"unknown query parameter {echo(name)!r} (known: {', '.join(PARAMETERS)})")
        if name in seen:
            raise BadRequest(f"query parameter {echo(name)!r} given more than once")
        seen.add(name)
        low, high, _ = PARAMETERS[name]
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise BadRequest(f"{name} must be a whole number from {low} to {high}, got {echo(raw)!r}")
        values[name] = value
    return values


class CachedAnswers:
    """The answers cost about half a second on the full run: compute them again only when the results changed
    (the backend's version: SQLite's file times, PostgreSQL's last batch and look). Whether the job runs, and
    its health, are asked afresh each time (they change without a write)."""

    def __init__(self, place: ResultsPlace, stall_after_s: float = DEFAULT_STALL_AFTER_S) -> None:
        self.place, self.stall_after_s = place, stall_after_s
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._answers: dict | None = None

    def get(self, top: int, windows: int) -> dict:
        with self.place.open_reader() as results:
            try:
                key = (top, windows, results.version())
                with self._lock:
                    if key != self._key or self._answers is None:
                        self._answers, self._key = read_answers(results, top, windows, self.stall_after_s), key
                    cached = self._answers
                meta, written, clocks, job_pid = (results.meta(), results.last_written(), results.clocks(),
                                                  results.job_pid())
            except results.database.errors() as error:
                raise UserError(f"cannot read the results in {results.where}: {error}") from None
        pipeline = cached["pipeline"]
        job = job_state(pipeline["spark_ui_url"], pipeline["spark_app_id"], job_pid)
        health = assess(meta, written, clocks, job, self.stall_after_s)  # changes with time, not only with writes
        return cached | {"pipeline": pipeline | {"job": job, "health": health.summary()}}


class DashboardHandler(BaseHTTPRequestHandler):
    server_version = "sfcrime-dashboard"
    server: "DashboardServer"
    timeout = 10  # a client that stalls holds its own thread only, and only this long
    error_content_type = "text/plain; charset=utf-8"
    error_message_format = "%(code)d %(message)s\n"  # http.server's own errors: one short line, not a page

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's answer to a request it cannot parse repeats the request line: keep it short. A client's
        fault is a 4xx: an HTTP version it made up (505) is a bad request, a method we do not serve (501) 405."""
        code = {505: 400, 501: 405}.get(code, code)
        super().send_error(code, echo(message) if message else None, "")

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        try:
            if url.path == "/api/answers":
                self.send_answers(parse_query(url.query))
            elif url.path == "/metrics":
                self.send_body(200, exposition(self.server.answers.place, self.server.answers.stall_after_s),
                               CONTENT_TYPE_LATEST)
            elif url.path == "/healthz":
                health = job_health(self.server.answers.place, self.server.answers.stall_after_s)
                self.send_body(200 if health.healthy else 503, (json.dumps(health.as_dict()) + "\n").encode(),
                               "application/json")
            elif url.path in ("/", "/index.html"):
                parse_query(url.query)  # the page passes its query on to the endpoint: refuse a bad one here too
                self.send_static("index.html")
            elif url.path.startswith("/static/"):
                self.send_static(url.path.removeprefix("/static/"))
            else:
                self.send_text(404, f"not found: {echo(url.path)}")
        except BadRequest as error:
            self.send_text(400, f"bad request: {error}")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away
        except Exception:  # never a traceback to the browser; the log has it
            log.exception("dashboard: %s failed", self.path)
            self.send_text(500, "internal error: see the dashboard's log")

    def send_answers(self, query: dict[str, int]) -> None:
        try:
            body = self.server.answers.get(query["top"], query["windows"])
            status = 200
        except UserError as error:  # no results yet: the page says so and keeps asking
            body, status = {"error": str(error)}, 503
        self.send_body(status, json.dumps(body, ensure_ascii=False).encode(), "application/json; charset=utf-8")

    def send_static(self, name: str) -> None:
        path = STATIC / name if STATIC_NAME.match(name) else None
        if path is None or not path.is_file():
            self.send_text(404, f"not found: /static/{echo(name)}")
            return
        self.send_body(200, path.read_bytes(), CONTENT_TYPES.get(path.suffix, "application/octet-stream"))

    def send_text(self, status: int, line: str) -> None:
        self.send_body(status, (line + "\n").encode(), "text/plain; charset=utf-8")

    def send_body(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        log.debug("dashboard: " + format, *args)


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], place: ResultsPlace | str | Path,
                 stall_after_s: float = DEFAULT_STALL_AFTER_S) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.answers = CachedAnswers(as_place(place), stall_after_s)
        super().__init__(address, DashboardHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(place: ResultsPlace | str | Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                stall_after_s: float = DEFAULT_STALL_AFTER_S) -> DashboardServer:
    """Bind (port 0: any free port); a host other than loopback gets a warning: anyone who reaches it can read."""
    if not is_loopback(host):
        print(f"warning: the dashboard on {host} has no authentication: anyone who can reach {host}:{port} "
              "can read the results", file=sys.stderr, flush=True)
    try:
        return DashboardServer((host, port), place, stall_after_s)
    except OSError as error:
        raise UserError(f"cannot serve the dashboard on {host}:{port}: {error.strerror or error}"
                        + (" (try another --port)" if error.errno == 98 else "")) from None


def start_in_background(place: ResultsPlace | str | Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                        stall_after_s: float = DEFAULT_STALL_AFTER_S) -> tuple[str, Callable[[], None]]:
    """Serve from a daemon thread, beside a job or a demo: returns the page's URL and a function that stops it."""
    server = make_server(place, host, port, stall_after_s)
    thread = threading.Thread(target=server.serve_forever, name="sfcrime-dashboard", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return server.url, stop


@dataclass(frozen=True)
class DashboardOptions:
    place: ResultsPlace = ResultsPlace(Path("out"))
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    stall_after_s: float = DEFAULT_STALL_AFTER_S


def run(options: DashboardOptions) -> int:
    """Serve in the foreground until Ctrl-C."""
    place = options.place
    if not place.url and place.output.exists() and not place.output.is_dir():
        raise UserError(f"--output {place.output} is a file: it names the streaming job's results folder")
    server = make_server(place, options.host, options.port, options.stall_after_s)
    if not place.url and not path_in(place.output).exists():
        print(f"no results in {place.output} yet: the page fills in once the streaming job writes them",
              file=sys.stderr)
    print(f"dashboard: {server.url}  (results in {place.describe()}; metrics at {server.url}metrics, health at "
          f"{server.url}healthz; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
