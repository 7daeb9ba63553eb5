"""Is the job doing its work? What /healthz answers and the page shows, from the results the job writes.

Healthy: the job runs, and either its last batch is recent or there is nothing to read. Not healthy, with
one line of why: it is not running, it has lost its broker, or it has stalled (messages waiting and no
batch for --stall-after). The job's own look at Kafka (each batch, and every few seconds while live) says
how many messages wait and whether the broker answers (results: `partitions`, meta `broker_lost_since`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..results import ResultsPlace, as_place
from ..stream.watermarks import PartitionClock

# A warm batch takes well under a second, but a cold job's first one takes 10 to 60 s on 2 cores (the JIT,
# Python workers), and the clock starts when the job does: two minutes flags a real stall without flagging
# a start. A --trigger longer than a minute needs a longer --stall-after.
DEFAULT_STALL_AFTER_S = 120.0


@dataclass(frozen=True)
class Health:
    healthy: bool
    status: str  # ok, not running, broker lost, stalled, no results
    reason: str  # one line
    unread: int | None = None
    seconds_since_batch: float | None = None

    def summary(self) -> dict:
        """What the page and report --json show: without the seconds, which change between two asks."""
        return {"status": self.status, "reason": self.reason, "unread": self.unread}

    def as_dict(self) -> dict:
        return {"status": self.status, "reason": self.reason, "unread": self.unread,
                "seconds_since_batch": None if self.seconds_since_batch is None else round(self.seconds_since_batch, 1)}


def job_health(place: ResultsPlace | str | Path, stall_after_s: float = DEFAULT_STALL_AFTER_S,
               now: float | None = None, job: str | None = None) -> Health:
    """`job`: running, stopped or unknown, when the caller has asked already (job_state)."""
    place = as_place(place)
    try:
        with place.open_reader() as results:
            meta, last_batch, clocks, job_pid = results.meta(), results.last_written(), results.clocks(), results.job_pid()
    except UserError:
        return Health(False, "no results", f"no results in {place.describe()} yet: the job has not started")
    except Exception as error:  # the backend's own errors: a damaged file, a server away
        return Health(False, "no results", f"cannot read the results in {place.describe()}: {str(error).splitlines()[0]}")
    if job is None:
        job = job_state(meta.get("spark_ui_url"), meta.get("spark_app_id"), job_pid)
    return assess(meta, last_batch, clocks, job, stall_after_s, now)


def assess(meta: dict[str, str], last_batch: float | None, clocks: dict[int, PartitionClock], job: str,
           stall_after_s: float, now: float | None = None) -> Health:
    """The health the results say, for a job that is `job` (running, stopped, unknown)."""
    now = time.time() if now is None else now
    known = [c.unread for c in clocks.values() if c.unread is not None]
    unread = sum(known) if known else None
    since = now - max(last_batch or 0.0, float(meta.get("started_at") or 0.0))
    if job != "running":
        return Health(False, "not running", f"the job is {job}", unread, since)
    if meta.get("broker_lost_since"):
        lost_s = now - float(meta["broker_lost_since"])
        return Health(False, "broker lost", f"the job has had no answer from its broker for {lost_s:.0f} s",
                      unread, since)
    if unread and since > stall_after_s:
        return Health(False, "stalled", f"{unread:,} messages wait and no batch for {since:.0f} s "
                      f"(--stall-after {stall_after_s:g} s)", unread, since)
    return Health(True, "ok", "counting" if unread else "nothing to read", unread, since)


def job_state(ui_url: str | None, app_id: str | None, job_pid: int | None = None) -> str:
    """running, stopped or unknown: the Spark UI lives as long as the job's Spark session.

    Asks the UI for this job's application id, so another Spark job on the same port is not taken for it.
    On this machine the job's own process (job_pid, from OUTPUT/.lock) must be alive too: once that has
    ended, whatever still answers at the UI's address (CI once saw this, right after a --once run) is not
    the job.
    """
    if not ui_url or not app_id:
        return "unknown"
    from urllib.error import HTTPError, URLError
    from urllib.parse import urlsplit
    from urllib.request import ProxyHandler, build_opener

    opener = build_opener(ProxyHandler({}))  # the UI is on this machine or the driver's: never via a proxy
    parts = urlsplit(ui_url)
    if parts.hostname and parts.port and on_this_machine(parts.hostname):
        if job_pid and not process_alive(job_pid):
            return "stopped"
        ui_url = f"http://127.0.0.1:{parts.port}"  # Spark names the UI by the host's address; it listens on all
    try:
        with opener.open(f"{ui_url.rstrip('/')}/api/v1/applications/{app_id}", timeout=3) as response:
            return "running" if response.status == 200 else "stopped"
    except (HTTPError, URLError, OSError, ValueError):
        return "stopped"


def process_alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def on_this_machine(host: str) -> bool:
    """Whether `host` is one of this machine's addresses (only those can be bound), so loopback reaches it."""
    import socket

    try:
        addresses = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    for family, _, _, _, address in addresses:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((address[0], 0))
                return True
            except OSError:
                continue
    return False


