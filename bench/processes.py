"""Running whole commands as processes and measuring them: wall time, peak and live memory, side-by-side
rounds; and the small waits and topics every benchmark shares."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from contextlib import closing, contextmanager
from pathlib import Path

from sfcrime.config import REPO_DIR
from sfcrime.errors import UserError
from sfcrime.results import path_in


PY = sys.executable


ROUNDS = 3


def timed(command: list[str], env: dict | None = None, timeout: float = 900,
          cwd: Path = REPO_DIR) -> tuple[float, str]:
    """Run a command to completion; return (wall seconds, its stdout and stderr)."""
    started = time.monotonic()
    result = subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, **(env or {})), timeout=timeout)
    if result.returncode != 0:
        raise UserError(f"benchmark command failed ({result.returncode}): {' '.join(command)}\n{result.stdout[-2000:]}")
    return time.monotonic() - started, result.stdout


def peak_rss_mb(command: list[str]) -> tuple[float, float]:
    """Wall seconds and the peak RSS (MB) of one process, measured by wait4 on it alone."""
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=REPO_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise UserError(f"benchmark command failed: {' '.join(command)}: {process.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def side_by_side(name: str, baseline: callable, ours: callable, rounds: int = ROUNDS, target: float = 2.0) -> dict:
    """Alternate the two, `rounds` times each; medians and ratio."""
    base_times, our_times = [], []
    for i in range(rounds):
        base_times.append(baseline(i))
        our_times.append(ours(i))
        print(f"  {name} round {i + 1}: baseline {base_times[-1]:.2f} s, ours {our_times[-1]:.2f} s", flush=True)
    base, mine = statistics.median(base_times), statistics.median(our_times)
    result = {"baseline_s": base_times, "ours_s": our_times, "baseline_median_s": round(base, 3),
              "ours_median_s": round(mine, 3), "ratio": round(mine / base, 3), "target_ratio": target,
              "met": mine / base <= target}
    print(f"{name}: ours {mine:.2f} s vs baseline {base:.2f} s: {mine / base:.2f}x (target <= {target}x) "
          f"{'MET' if result['met'] else 'NOT MET'}", flush=True)
    return result


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def process_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as {"Name": "java", "VmRSS": "123456 kB", ...}; empty once the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return dict((key, value.strip()) for key, _, value in (line.partition(":") for line in lines))


def process_cpu_s(pid: int) -> float | None:
    """The CPU seconds (user and system) a process of this machine has used, or None if there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_rss_mb(pid: int, only: str | None = None) -> float:
    """Resident memory of a process and all its descendants (the job: Python driver, JVM, Python workers);
    with `only`, of those whose command name is that (e.g. "java")."""
    total = 0.0
    for current in process_tree(pid):
        status = proc_status(current)
        if status and (only is None or status.get("Name") == only):
            total += int(status.get("VmRSS", "0 kB").split()[0]) / 1024
    return round(total, 1)


def live_heap_mb(pid: int) -> float | None:
    """The JVM's heap in use right after a full GC (jcmd GC.run, then jstat): what a leak would grow.

    RSS can't tell: G1 lets the old generation fill to its cap before it collects. None without a JDK."""
    java = [p for p in process_tree(pid) if proc_status(p).get("Name") == "java"]
    if not java or not shutil.which("jcmd") or not shutil.which("jstat"):
        return None
    try:
        subprocess.run(["jcmd", str(java[0]), "GC.run"], capture_output=True, timeout=60, check=True)
        header, values = subprocess.run(["jstat", "-gc", str(java[0])], capture_output=True, text=True,
                                        timeout=60, check=True).stdout.split("\n")[:2]
    except (subprocess.SubprocessError, OSError, ValueError):
        return None
    gc = dict(zip(header.split(), map(float, values.split())))
    return round(sum(gc.get(k, 0.0) for k in ("S0U", "S1U", "EU", "OU")) / 1024, 1)


def dir_mb(path: Path) -> float:
    """Bytes under a folder, in MB (the checkpoint's state: what the dedupe keeps on disk). The job writes
    there meanwhile: a temporary file renamed between the listing and its stat is skipped."""
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                total += os.stat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                pass
    return round(total / 2**20, 1)


def stop_job(job: subprocess.Popen) -> None:
    """Ctrl-C for the live job, as a user would stop it; kill if it doesn't go."""
    job.send_signal(signal.SIGINT)
    try:
        job.wait(60)
    except subprocess.TimeoutExpired:
        job.kill()


def wait_for(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except sqlite3.Error:
            pass
        time.sleep(0.5)
    raise UserError(f"benchmark step did not finish within {timeout_s:g}s")


def create_topic(bootstrap: str, topic: str, partitions: int = 3) -> None:
    from sfcrime.clients import ensure_topic
    from sfcrime.kafka_settings import KafkaSettings

    ensure_topic(KafkaSettings(bootstrap_servers=bootstrap, topic=topic), partitions)


def has_progress(output: Path) -> bool:
    db = sqlite3.connect(output / "results.sqlite")
    try:
        return db.execute("SELECT COUNT(*) FROM progress").fetchone()[0] > 0
    finally:
        db.close()


def wait_drained(output: Path, rows: int, timeout_s: float, url: str | None = None) -> None:
    """Until the live job has read `rows` messages (input rows: repeated calls are dropped after the read)."""
    def drained() -> bool:
        with closing(open_results(output, url)) as db:
            return (db.execute("SELECT COALESCE(SUM(input_rows), 0) FROM progress").fetchone()[0] or 0) >= rows
    wait_for(drained, timeout_s)


def open_results(output: Path, url: str | None = None):
    """A job's results, to read with SQLite's SQL and `?` whichever store holds them: the SQLite file in
    `output`, or the PostgreSQL database at `url` (--results)."""
    if url is None:
        return sqlite3.connect(path_in(output))
    return QmarkConnection(url)


class QmarkConnection:
    """psycopg with `?` parameters and SUM()s as ints, as sqlite3 gives them: the benchmarks' queries, unchanged."""

    def __init__(self, url: str) -> None:
        import psycopg

        from sfcrime.results.postgres import _number_loader

        self._connection = psycopg.connect(url, autocommit=True)
        self._connection.adapters.register_loader("numeric", _number_loader())

    def execute(self, sql: str, params=()):
        return self._connection.execute(sql.replace("?", "%s"), tuple(params))

    def close(self) -> None:
        self._connection.close()


class LocalPostgres:
    """A PostgreSQL server of our own for a benchmark run (`python -m sfcrime postgres`'s), started on first
    ask; each ask gets a fresh database, as a new job's results need."""

    def __init__(self, workdir: Path, server_url: str | None = None) -> None:
        self.workdir, self._server, self._url, self._made = workdir, None, server_url, 0

    def fresh_database(self) -> str:
        import psycopg

        from sfcrime.local import postgres

        if self._url is None:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            self._server, self._url = postgres.start(self.workdir / "postgres", port, self.workdir / "postgres.log")
        self._made += 1
        name = f"bench_{os.getpid()}_{self._made}"
        with psycopg.connect(self._url, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        return self._url.rsplit("/", 1)[0] + "/" + name

    def stop(self) -> None:
        if self._server is not None:
            from sfcrime.local import postgres

            postgres.stop(self._server)
            self._server = None


@contextmanager
def environment(**values: str):
    """Environment variables set for what runs inside (a child process inherits them), then put back."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
