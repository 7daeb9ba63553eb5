"""The job's durable output: one SQLite file under --output, written exactly once per micro-batch.

Each micro-batch adds its counts in one transaction together with its batch id, the job's event-time
watermark (the latest event time so far, which decides which windows are final) and the identity of
the query and topic it read. Spark re-runs a batch after a crash with the same offsets (its offset log),
and a batch id already here is skipped, so a job killed at any moment and started again ends with exactly
the counts of an uninterrupted run. Batch ids mean something only for one query: results of another query,
topic or broker are refused (identity keys in `meta`).
SQLite in WAL mode lets the report read while the job writes; it is in the standard library.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

from .config import UserError
from .dataset import second_occurrence
from .stream.watermarks import Observation, PartitionClock, job_watermark, observe

log = logging.getLogger(__name__)
FILE_NAME = "results.sqlite"
BUSY_TIMEOUT_S = 30  # SQLite waits this long for another program's lock before saying "locked"
LOCK_NAME = ".lock"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS batches (
    batch_id INTEGER PRIMARY KEY, written_at REAL, rows INTEGER, calls INTEGER, malformed INTEGER,
    kafka_ts_min REAL, kafka_ts_max REAL, kafka_ts_mean REAL);
CREATE TABLE IF NOT EXISTS progress (
    batch_id INTEGER PRIMARY KEY, at TEXT, input_rows INTEGER, input_rps REAL, processed_rps REAL,
    duration_ms INTEGER, watermark REAL, late_rows INTEGER, state_rows INTEGER, backlog INTEGER,
    duplicates INTEGER, durations TEXT);
CREATE TABLE IF NOT EXISTS revisions (
    batch_id INTEGER, pane_start INTEGER, watermark INTEGER, calls INTEGER, PRIMARY KEY (batch_id, pane_start));
CREATE TABLE IF NOT EXISTS repeated_hour_calls (
    crime_id TEXT PRIMARY KEY, first_time INTEGER, crime_type TEXT, counted_time INTEGER);
CREATE TABLE IF NOT EXISTS crime_type_panes (
    pane_start INTEGER, crime_type TEXT, count INTEGER, PRIMARY KEY (pane_start, crime_type));
CREATE TABLE IF NOT EXISTS locations (address TEXT PRIMARY KEY, count INTEGER);
CREATE TABLE IF NOT EXISTS dispositions (disposition TEXT PRIMARY KEY, description TEXT, count INTEGER);
CREATE TABLE IF NOT EXISTS hourly (hour INTEGER, crime_type TEXT, count INTEGER, PRIMARY KEY (hour, crime_type));
CREATE TABLE IF NOT EXISTS daily (day TEXT, crime_type TEXT, count INTEGER, PRIMARY KEY (day, crime_type));
CREATE TABLE IF NOT EXISTS partitions (
    partition INTEGER PRIMARY KEY, event_time REAL, read_to INTEGER, end_offset INTEGER, grew_at REAL, idle INTEGER);
CREATE TABLE IF NOT EXISTS data_loss (
    partition INTEGER, from_offset INTEGER, to_offset INTEGER, messages INTEGER, noticed_at REAL,
    PRIMARY KEY (partition, from_offset));
CREATE TABLE IF NOT EXISTS dead_letters (
    partition INTEGER, offset INTEGER, kafka_timestamp REAL, reason TEXT, value BLOB, batch_id INTEGER, key BLOB,
    PRIMARY KEY (partition, offset));
"""

# count set (transforms.COUNT_SETS) -> (table, its columns, the count set's columns in that order)
_COUNTED = {
    "crime_type_windows": ("crime_type_panes", ("pane_start", "crime_type"), ("window_start", "crime_type")),
    "locations": ("locations", ("address",), ("address",)),
    "dispositions": ("dispositions", ("disposition", "description"), ("disposition", "description")),
    "hourly": ("hourly", ("hour", "crime_type"), ("hour", "crime_type")),
    "daily": ("daily", ("day", "crime_type"), ("day", "crime_type")),
}


def watermark_of(meta: dict[str, str]) -> float | None:
    """The job's event-time watermark: windows ending at or before it are final. Results written before
    the watermark was kept per partition have only the stream's front, from which it was derived then."""
    if "job_watermark" in meta:  # empty while a partition with no event time yet holds it
        return float(meta["job_watermark"]) if meta["job_watermark"] else None
    front = meta.get("event_time_max")
    return None if front is None else float(front) - int(meta.get("watermark_seconds", 3600))


def batch_event_times(counts: dict[str, list[dict]]) -> dict[int, float]:
    """The latest plausible event time of each partition in a batch's counts. Counts made without
    partitions (a hand-made batch) come from one, partition 0."""
    if "partition_event_times" in counts:
        return {r["partition"]: float(r["event_s_max"]) for r in counts["partition_event_times"]
                if r["event_s_max"] is not None}
    latest = (counts.get("total") or [{}])[0].get("event_s_max")
    return {} if latest is None else {0: float(latest)}


def read_clocks(db: sqlite3.Connection) -> dict[int, PartitionClock]:
    """Each partition's clock (stream/watermarks.py) as the latest batch or look left it; none in results
    written before the watermark was kept per partition (read-only readers cannot add the table)."""
    try:
        rows = db.execute("SELECT partition, event_time, read_to, end_offset, grew_at, idle FROM partitions").fetchall()
    except sqlite3.OperationalError as error:
        if "no such table" not in str(error):
            raise
        return {}
    return {row[0]: PartitionClock(row[0], row[1], row[2] or 0, row[3], row[4] or 0.0, bool(row[5])) for row in rows}


def path_in(output: str | Path) -> Path:
    return Path(output) / FILE_NAME


def lock_holder(output: str | Path) -> int | None:
    """The pid OUTPUT/.lock names: the job (or demo) that holds it now, or the last one that did. None when
    there is no lock file or it names no pid (the file is in the user's folder: anything may be in it)."""
    try:
        text = (Path(output) / LOCK_NAME).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        if not path.exists():
            raise UserError(f"no results at {path} (run the streaming job with --output {path.parent} first)")
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            connection.executescript(SCHEMA)
            columns = {row[1] for row in connection.execute("PRAGMA table_info(progress)")}
        except sqlite3.DatabaseError as error:  # not SQLite ("file is not a database"), or damaged
            connection.close()
            raise UserError(f"cannot use the results in {path}: {error} (use another --output)") from None
        if "duplicates" not in columns:  # results written before duplicates were counted
            connection.execute("ALTER TABLE progress ADD COLUMN duplicates INTEGER")
        if "durations" not in columns:  # results written before Spark's durationMs was kept
            connection.execute("ALTER TABLE progress ADD COLUMN durations TEXT")
        if "key" not in {row[1] for row in connection.execute("PRAGMA table_info(dead_letters)")}:
            connection.execute("ALTER TABLE dead_letters ADD COLUMN key BLOB")  # before dead letters kept keys
    return connection


IDENTITY_KEYS = {"query_id": "query (checkpoint)", "cluster_id": "Kafka cluster", "topic_id": "topic id"}


def identity_clash(meta: dict[str, str], identity: dict[str, str]) -> str | None:
    """How `identity` (query, cluster, topic ids) differs from what these results were made from, or None."""
    for key, what in IDENTITY_KEYS.items():
        if key in identity and key in meta and meta[key] != identity[key]:
            return f"{what} {meta[key]} (now {identity[key]})"
    return None


class OutputLock:
    """OUTPUT/.lock, held (flock) for as long as a job or the demo uses the folder, with the holder's pid.

    Another process that would delete or add to the results refuses with one line instead; the lock goes
    with the process, so a killed job leaves nothing to clean up. Within one process it is shared (the demo
    holds it and then runs the job).
    """

    _held: dict[Path, list] = {}  # resolved folder -> [open file, users]
    _guard = threading.Lock()

    def __init__(self, output: str | Path) -> None:
        self.output = Path(output)
        self._key: Path | None = None

    def acquire(self) -> "OutputLock":
        if self.output.exists() and not self.output.is_dir():
            raise UserError(f"--output {self.output} is a file: it names a folder for the results")
        key = self.output.resolve()
        with OutputLock._guard:
            held = OutputLock._held.get(key)
            if held is None:
                try:
                    self.output.mkdir(parents=True, exist_ok=True)
                    handle = open(key / LOCK_NAME, "a+")
                except OSError as error:
                    raise UserError(f"cannot use --output {self.output}: {error.strerror or error}") from None
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown"
                    handle.close()
                    raise UserError(f"{self.output} is in use by a running job (pid {holder}): stop it first, "
                                    "or use another --output") from None
                handle.seek(0)
                handle.truncate()
                handle.write(f"{os.getpid()}\n")
                handle.flush()
                held = OutputLock._held[key] = [handle, 0]
            held[1] += 1
        self._key = key
        return self

    def release(self) -> None:
        if self._key is None:
            return
        with OutputLock._guard:
            held = OutputLock._held[self._key]
            held[1] -= 1
            if held[1] == 0:
                del OutputLock._held[self._key]
                held[0].close()  # closing the file lets the lock go
        self._key = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class ResultStore:
    """The writer side, used by the job's foreachBatch sink (on the driver) and its progress listener.

    Holds the output folder's lock (OutputLock) until closed: one job writes a results folder at a time.
    """

    def __init__(self, output: str | Path) -> None:
        self.path = path_in(output)
        self._output_lock = OutputLock(output).acquire()
        try:
            self._db = connect(self.path)
        except BaseException:
            self._output_lock.release()
            raise
        self._lock = threading.Lock()  # the sink and the progress listener run on different threads
        self._window_s = 3600

    def check_settings(self, settings: dict[str, str]) -> None:
        """Counts from different windows or topics must not be added up: refuse to mix them."""
        existing = dict(self._db.execute("SELECT key, value FROM meta"))
        clashes = [f"{k}={existing[k]!r} (now {v!r})" for k, v in settings.items() if k in existing and existing[k] != v]
        if clashes:
            raise UserError(f"{self.path.parent} holds results made with other settings: {', '.join(clashes)}; "
                            "use another --output or delete it")
        self._window_s = int(settings.get("window_seconds", self._window_s))
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", settings.items())
            self._db.execute("COMMIT")

    def set_meta(self, **values: str | None) -> None:
        """Facts about the running job that readers want (the dashboard's Spark UI link); None is skipped."""
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                 [(k, v) for k, v in values.items() if v is not None])

    def meta(self) -> dict[str, str]:
        with self._lock:
            return dict(self._db.execute("SELECT key, value FROM meta"))

    def record_losses(self, losses: list[tuple[int, int, int]]) -> None:
        """Messages deleted before the job read them (--accept-data-loss): kept with the answers, which are
        short of them, so that every reader says so."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT OR IGNORE INTO data_loss VALUES (?, ?, ?, ?, ?)",
                                 [(p, lo, hi, hi - lo, time.time()) for p, lo, hi in losses])
            self._db.execute("COMMIT")

    def last_batch(self) -> int | None:
        """The highest batch id counted, or None."""
        with self._lock:
            return self._db.execute("SELECT MAX(batch_id) FROM batches").fetchone()[0]

    def has_batches(self) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM batches LIMIT 1").fetchone() is not None

    def event_time_max(self) -> float | None:
        """The latest plausible event time of every batch so far (epoch seconds): the stream's front."""
        value = self.meta().get("event_time_max")
        return None if value is None else float(value)

    def watermark(self) -> float | None:
        """The job's event-time watermark (epoch seconds): windows ending at or before it are final."""
        return watermark_of(self.meta())

    def partition_clocks(self) -> dict[int, PartitionClock]:
        with self._lock:
            return read_clocks(self._db)

    def write_batch(self, batch_id: int, counts: dict[str, list[dict]], identity: dict[str, str] | None = None,
                    observation: Observation | None = None) -> bool:
        """Add one micro-batch's counts (transforms.count_table); False, writing nothing, if it is already here.

        `identity` (query, cluster and topic ids) is checked and kept in the same transaction: a batch id
        of another query must never be taken for one of ours. So are the partitions' clocks and the job's
        watermark that the batch moves (`observation`: its offsets and Kafka's), so that a restart resumes
        them exactly where the last counted batch left them.
        """
        with self._lock:
            return self._write_batch(batch_id, counts, identity or {},
                                     observation or Observation(now=time.time(), idle_timeout_s=float("inf")))

    def observe_partitions(self, observation: Observation) -> tuple[float | None, float | None]:
        """Between batches: Kafka's end offsets alone may make a partition idle (or active again), and so move
        the watermark. Returns the watermark before and after."""
        with self._lock:
            db = self._db
            self._begin()
            try:
                meta = dict(db.execute("SELECT key, value FROM meta"))
                before = watermark_of(meta)
                after = self._advance(db, meta, before, {}, observation)
                db.execute("COMMIT")
                return before, after
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _advance(self, db: sqlite3.Connection, meta: dict[str, str], before: float | None,
                 event_times: dict[int, float], observation: Observation) -> float | None:
        """The partitions' clocks and the job's watermark moved on, in the caller's transaction."""
        clocks = observe(read_clocks(db), observation.now, observation.idle_timeout_s, event_times,
                         observation.read_to, observation.end_offsets)
        after = job_watermark(clocks, before, int(meta.get("watermark_seconds", 3600)))
        db.executemany("INSERT OR REPLACE INTO partitions VALUES (?, ?, ?, ?, ?, ?)",
                       [(c.partition, c.event_time, c.read_to, c.end_offset, c.grew_at, int(c.idle))
                        for c in clocks.values()])
        db.execute("INSERT OR REPLACE INTO meta VALUES ('job_watermark', ?)", ("" if after is None else repr(after),))
        return after

    def _begin(self) -> None:
        """BEGIN IMMEDIATE, for as long as another program holds the file's write lock (a sqlite3 shell in a
        transaction, a GUI that writes): a line a minute, and the batch counted once it lets go. Each try
        waits out SQLite's own busy timeout (30 s) first; readers never block it (WAL)."""
        first = said = None
        while True:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                if first is not None:
                    log.warning("%s is free again after %.0f s: counting on", self.path, time.monotonic() - first)
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) and "busy" not in str(error):
                    raise
                now = time.monotonic()
                first = now - BUSY_TIMEOUT_S if first is None else first
                if said is None or now - said >= 60:
                    said = now
                    log.warning("%s is locked by another program for %.0f s (a sqlite3 shell in a transaction?): "
                                "waiting for it; nothing is lost, and the batch is counted once it lets go",
                                self.path, now - first)

    def _write_batch(self, batch_id: int, counts: dict[str, list[dict]], identity: dict[str, str],
                     observation: Observation) -> bool:
        db = self._db
        self._begin()
        try:
            meta = dict(db.execute("SELECT key, value FROM meta"))
            clash = identity_clash(meta, identity)
            if clash:
                raise UserError(f"{self.path.parent} holds results of another {clash}; pass --start-over to "
                                "discard them, or use another --output")
            if db.execute("SELECT 1 FROM batches WHERE batch_id = ?", (batch_id,)).fetchone():
                db.execute("ROLLBACK")
                return False
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", identity.items())
            for name, (table, columns, fields) in _COUNTED.items():
                keys = ", ".join(columns[:1] if table == "dispositions" else columns)
                db.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}, count) VALUES ({', '.join('?' * (len(columns) + 1))}) "
                    f"ON CONFLICT ({keys}) DO UPDATE SET count = count + excluded.count",
                    [tuple(row[f] for f in fields) + (row["count"],) for row in counts.get(name, [])])
            pane_s = int(meta.get("pane_seconds", 3600))
            latest = self._place_repeated_hour(counts.get("repeated_hour", []), pane_s)
            # Late calls: counted all the same, into panes a final window already covered (its end at or
            # before the watermark of the batches before this one). Kept per pane, to say which windows changed.
            front = meta.get("event_time_max")
            watermark = watermark_of(meta)
            if watermark is not None:
                late: dict[int, int] = {}
                for row in counts.get("crime_type_windows", []):
                    if row["window_start"] + pane_s <= watermark:
                        late[row["window_start"]] = late.get(row["window_start"], 0) + row["count"]
                db.executemany("INSERT INTO revisions VALUES (?, ?, ?, ?)",
                               [(batch_id, pane, watermark, n) for pane, n in sorted(late.items())])
            dead = counts.get("dead_letters", [])
            db.executemany("INSERT OR IGNORE INTO dead_letters (partition, offset, kafka_timestamp, reason, value, "
                           "batch_id, key) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           [(r["dl_partition"], r["dl_offset"], r["dl_timestamp"] / 1e6, r["reason"], r["value"],
                             batch_id, r.get("key")) for r in dead])
            total = (counts.get("total") or [{"count": 0, "kafka_us_min": None, "kafka_us_max": None,
                                              "kafka_us_avg": None, "event_s_max": None}])[0]
            fronts = [float(x) for x in (front, total.get("event_s_max"), latest) if x is not None]
            if fronts:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('event_time_max', ?)", (str(max(fronts)),))
            self._advance(db, meta, watermark, batch_event_times(counts), observation)
            stamps = [None if total[k] is None else total[k] / 1e6 for k in ("kafka_us_min", "kafka_us_max", "kafka_us_avg")]
            db.execute("INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (batch_id, time.time(), total["count"], total["count"] - len(dead), len(dead), *stamps))
            db.execute("COMMIT")
            return True
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _place_repeated_hour(self, rows: list[dict], pane_s: int) -> float | None:
        """Calls in an hour a fall-back change repeats were counted in its first occurrence: move those that
        belong to the second one (dataset.second_occurrence decides, over every call of that hour seen so
        far, so the answer does not depend on the order calls arrive in). Returns the latest time placed."""
        if not rows:
            return None
        db = self._db
        db.executemany("INSERT OR IGNORE INTO repeated_hour_calls VALUES (?, ?, ?, ?)",
                       [(r["rh_crime_id"], r["rh_time"], r["rh_type"], r["rh_time"]) for r in rows])
        latest = None
        for (hour,) in db.execute("SELECT DISTINCT first_time / 3600 FROM repeated_hour_calls WHERE crime_id IN "
                                  f"({','.join('?' * len(rows))})", [r["rh_crime_id"] for r in rows]).fetchall():
            calls = db.execute("SELECT crime_id, first_time, crime_type, counted_time FROM repeated_hour_calls "
                               "WHERE first_time / 3600 = ?", (hour,)).fetchall()
            second = second_occurrence((c[0], c[1]) for c in calls)
            for crime_id, first_time, crime_type, counted_time in calls:
                wanted = first_time + 3600 if crime_id in second else first_time
                latest = wanted if latest is None else max(latest, wanted)
                if wanted == counted_time:
                    continue
                for when, delta in ((counted_time, -1), (wanted, 1)):
                    db.execute("INSERT INTO crime_type_panes VALUES (?, ?, ?) ON CONFLICT (pane_start, crime_type) "
                               "DO UPDATE SET count = count + excluded.count", (when - when % pane_s, crime_type, delta))
                db.execute("UPDATE repeated_hour_calls SET counted_time = ? WHERE crime_id = ?", (wanted, crime_id))
        db.execute("DELETE FROM crime_type_panes WHERE count = 0")
        return latest

    def write_progress(self, row: tuple) -> None:
        """A batch's progress line, kept for readers; while another program locks the file it is let go
        (the counts are what must wait: write_batch)."""
        with self._lock, closing(self._db.cursor()) as cursor:
            try:
                cursor.execute("INSERT OR REPLACE INTO progress VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            except sqlite3.OperationalError as error:
                log.debug("progress of batch %s not kept: %s", row[0], error)

    def top_windows(self, limit: int, watermark: float | None) -> dict[str, tuple[int, list[tuple[str, int]]]]:
        """For the console view: the top crime types of the last final window (its end at or before the
        watermark) and of the latest, still open, one: {"final": (start, rows), "open": (start, rows)}."""
        with self._lock:
            latest, = self._db.execute("SELECT MAX(pane_start) FROM crime_type_panes").fetchone()
            if latest is None:
                return {}
            since = latest - 2 * self._window_s
            if watermark is not None:
                since = min(since, int(watermark) - 2 * self._window_s)
            windows = window_counts(self._db, since=since)
        chosen: dict[str, int] = {}
        final = [w[0] for w in windows if watermark is not None and w[1] <= watermark]
        if final:
            chosen["final"] = max(final)
        still_open = [w[0] for w in windows if watermark is None or w[1] > watermark]
        if still_open:
            chosen["open"] = max(still_open)
        return {label: (start, sorted(((t, n) for s, _, t, n in windows if s == start),
                                      key=lambda r: (-r[1], r[0]))[:limit])
                for label, start in chosen.items()}

    def close(self) -> None:
        self._db.close()
        self._output_lock.release()


def window_counts(db: sqlite3.Connection, since: int | None = None) -> list[tuple[int, int, str, int]]:
    """(window start, window end, crime type, calls): each window is the sum of its panes.

    With tumbling windows a pane is a window; with sliding ones (window = k slides) each pane counts in the
    k windows that cover it, as Spark's window(..., slide) would count the call itself.
    """
    meta = dict(db.execute("SELECT key, value FROM meta"))
    window_s, pane_s = int(meta.get("window_seconds", 3600)), int(meta.get("pane_seconds", 3600))
    k = max(1, window_s // pane_s)
    sums: dict[tuple[int, str], int] = {}
    sql = "SELECT pane_start, crime_type, count FROM crime_type_panes"
    for pane, crime_type, count in db.execute(sql + (" WHERE pane_start >= ?" if since is not None else ""),
                                              () if since is None else (since - window_s,)):
        for j in range(k):
            key = (pane - j * pane_s, crime_type)
            sums[key] = sums.get(key, 0) + count
    return sorted((start, start + window_s, t, n) for (start, t), n in sums.items()
                  if since is None or start >= since)
