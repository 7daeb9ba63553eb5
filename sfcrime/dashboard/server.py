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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qsl, urlsplit

from ..config import UserError
from ..report import RECENT_WINDOWS, answers
from ..results import lock_holder, path_in
from .health import DEFAULT_STALL_AFTER_S, job_health, job_state
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
    """answers() costs about half a second on the full run: compute it again only when the results changed.

    SQLite in WAL mode touches results.sqlite-wal on every commit, so the two files' sizes and times are
    the version. Whether the job runs is asked afresh each time (it changes without a write).
    """

    def __init__(self, output: str | Path, stall_after_s: float = DEFAULT_STALL_AFTER_S) -> None:
        self.output, self.stall_after_s = output, stall_after_s
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._answers: dict | None = None

    def get(self, top: int, windows: int) -> dict:
        results = path_in(self.output)
        stats = []
        for path in (results, results.with_name(results.name + "-wal")):
            try:
                stat = path.stat()
                stats.append((stat.st_mtime_ns, stat.st_size))
            except FileNotFoundError:
                stats.append(None)
        key = (top, windows, *stats)
        with self._lock:
            if key != self._key or self._answers is None:
                self._answers, self._key = answers(self.output, top, windows, self.stall_after_s), key
            cached = self._answers
        pipeline = cached["pipeline"]
        job = job_state(pipeline["spark_ui_url"], pipeline["spark_app_id"], lock_holder(self.output))
        health = job_health(self.output, self.stall_after_s, job=job)  # changes with time, not only with writes
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
                self.send_body(200, exposition(self.server.answers.output, self.server.answers.stall_after_s),
                               CONTENT_TYPE_LATEST)
            elif url.path == "/healthz":
                health = job_health(self.server.answers.output, self.server.answers.stall_after_s)
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

    def __init__(self, address: tuple[str, int], output: str | Path,
                 stall_after_s: float = DEFAULT_STALL_AFTER_S) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.answers = CachedAnswers(output, stall_after_s)
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


def make_server(output: str | Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                stall_after_s: float = DEFAULT_STALL_AFTER_S) -> DashboardServer:
    """Bind (port 0: any free port); a host other than loopback gets a warning: anyone who reaches it can read."""
    if not is_loopback(host):
        print(f"warning: the dashboard on {host} has no authentication: anyone who can reach {host}:{port} "
              "can read the results", file=sys.stderr, flush=True)
    try:
        return DashboardServer((host, port), output, stall_after_s)
    except OSError as error:
        raise UserError(f"cannot serve the dashboard on {host}:{port}: {error.strerror or error}"
                        + (" (try another --port)" if error.errno == 98 else "")) from None


def start_in_background(output: str | Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                        stall_after_s: float = DEFAULT_STALL_AFTER_S) -> tuple[str, Callable[[], None]]:
    """Serve from a daemon thread, beside a job or a demo: returns the page's URL and a function that stops it."""
    server = make_server(output, host, port, stall_after_s)
    thread = threading.Thread(target=server.serve_forever, name="sfcrime-dashboard", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return server.url, stop


def run(args) -> int:
    """Serve in the foreground until Ctrl-C."""
    if Path(args.output).exists() and not Path(args.output).is_dir():
        raise UserError(f"--output {args.output} is a file: it names the streaming job's results folder")
    server = make_server(args.output, args.host, args.port, args.stall_after)
    if not path_in(args.output).exists():
        print(f"no results in {args.output} yet: the page fills in once the streaming job writes them",
              file=sys.stderr)
    print(f"dashboard: {server.url}  (results in {args.output}; metrics at {server.url}metrics, health at "
          f"{server.url}healthz; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
