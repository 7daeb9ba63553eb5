"""The job's durable output, written exactly once per micro-batch, through a Database (results/database.py).

Each micro-batch adds its counts in one transaction together with its batch id, the job's event-time
watermark (which decides which windows are final) and the identity of the query and topic it read. Spark
re-runs a batch after a crash with the same offsets (its offset log), and a batch id already here is
skipped, so a job killed at any moment and started again ends with exactly the counts of an uninterrupted
run. Batch ids mean something only for one query: results of another query, topic or broker are refused
(identity keys in `meta`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import NamedTuple

from ..errors import UserError
from ..dataset import second_occurrence
from ..stream.watermarks import Observation, PartitionClock, job_watermark, observe
from .database import Database
from .rows import BatchCounts, Loss, ProgressRow
from .schema import META_UPSERT, TABLES, add_to_count, upsert

log = logging.getLogger(__name__)
IDENTITY_KEYS = {"query_id": "query (checkpoint)", "cluster_id": "Kafka cluster", "topic_id": "topic id"}

# count set (rows.BatchCounts) -> (table, its columns, the count set's keys in that order)
_COUNTED = {
    "crime_type_windows": ("crime_type_panes", ("pane_start", "crime_type"), ("window_start", "crime_type")),
    "locations": ("locations", ("address",), ("address",)),
    "dispositions": ("dispositions", ("disposition", "description"), ("disposition", "description")),
    "hourly": ("hourly", ("hour", "crime_type"), ("hour", "crime_type")),
    "daily": ("daily", ("day", "crime_type"), ("day", "crime_type")),
}
_PARTITIONS = upsert("partitions", ("partition", "event_time", "read_to", "end_offset", "grew_at", "idle"),
                     ("partition",))
_PROGRESS = upsert("progress", ("batch_id",) + ProgressRow._fields[1:], ("batch_id",))
META_SQL = "SELECT key, value FROM meta"
CLOCKS_SQL = "SELECT partition, event_time, read_to, end_offset, grew_at, idle FROM partitions"
KEPT_WRITE_TIMES = 256  # more than the progress Spark keeps (recentProgress: 100), which the job writes again at its end
_ADD_PANE = add_to_count("crime_type_panes", ("pane_start", "crime_type"), ("pane_start", "crime_type"))


def watermark_of(meta: dict[str, str]) -> float | None:
    """The job's event-time watermark: windows ending at or before it are final. Results written before
    the watermark was kept per partition have only the stream's front, from which it was derived then."""
    if "job_watermark" in meta:  # empty while a partition with no event time yet holds it
        return float(meta["job_watermark"]) if meta["job_watermark"] else None
    front = meta.get("event_time_max")
    return None if front is None else float(front) - int(meta.get("watermark_seconds", 3600))


def batch_event_times(counts: BatchCounts) -> dict[int, float]:
    """The latest plausible event time of each partition in a batch's counts. Counts made without
    partitions (a hand-made batch) come from one, partition 0."""
    if "partition_event_times" in counts:
        return {r["partition"]: float(r["event_s_max"]) for r in counts["partition_event_times"]
                if r["event_s_max"] is not None}
    latest = (counts.get("total") or [{}])[0].get("event_s_max")
    return {} if latest is None else {0: float(latest)}


def read_clocks(db: Database) -> dict[int, PartitionClock]:
    """Each partition's clock (stream/watermarks.py) as the latest batch or look left it; none in results
    written before the watermark was kept per partition (read-only readers cannot add the table)."""
    if not db.has_table("partitions"):
        return {}
    return clocks_of(db.execute(CLOCKS_SQL).fetchall())


def clocks_of(rows: list[tuple]) -> dict[int, PartitionClock]:
    return {row[0]: PartitionClock(row[0], row[1], row[2] or 0, row[3], row[4] or 0.0, bool(row[5])) for row in rows}


def read_meta(db: Database) -> dict[str, str]:
    return dict(db.execute(META_SQL).fetchall())


def window_counts(db: Database, meta: dict[str, str], since: int | None = None) -> list[tuple[int, int, str, int]]:
    """(window start, window end, crime type, calls): each window is the sum of its panes.

    With tumbling windows a pane is a window; with sliding ones (window = k slides) each pane counts in the
    k windows that cover it, as Spark's window(..., slide) would count the call itself.
    """
    window_s, pane_s = int(meta.get("window_seconds", 3600)), int(meta.get("pane_seconds", 3600))
    k = max(1, window_s // pane_s)
    sums: dict[tuple[int, str], int] = {}
    sql = "SELECT pane_start, crime_type, count FROM crime_type_panes"
    for pane, crime_type, count in db.execute(sql + (" WHERE pane_start >= ?" if since is not None else ""),
                                              () if since is None else (since - window_s,)).fetchall():
        for j in range(k):
            key = (pane - j * pane_s, crime_type)
            sums[key] = sums.get(key, 0) + count
    return sorted((start, start + window_s, t, n) for (start, t), n in sums.items()
                  if since is None or start >= since)


# Topic ids kept before the client seam wrote them as Kafka does came from librdkafka, in standard base64.
_KAFKA_BASE64 = str.maketrans("+/", "-_")


def identity_clash(meta: dict[str, str], identity: dict[str, str]) -> str | None:
    """How `identity` (query, cluster, topic ids) differs from what these results were made from, or None."""
    for key, what in IDENTITY_KEYS.items():
        if key in identity and key in meta and meta[key] != identity[key]:
            if key == "topic_id" and meta[key].translate(_KAFKA_BASE64) == identity[key]:
                continue  # the same id in librdkafka's alphabet: the batch's transaction keeps Kafka's from now on
            return f"{what} {meta[key]} (now {identity[key]})"
    return None


class _State(NamedTuple):
    """What the store's writer keeps between transactions (ResultsStore._state)."""

    meta: dict[str, str]
    clocks: dict[int, PartitionClock]


class ResultsStore:
    """The writer side, used by the job's foreachBatch sink (on the driver) and its progress listener.

    The database (a backend) holds its writer's exclusive hold until closed: one job writes a store at a time.
    """

    def __init__(self, database: Database) -> None:
        self.database = database
        self.where = database.where
        self._lock = threading.Lock()  # the sink and the progress listener run on different threads
        self._window_s = 3600
        self._write_ms: dict[int, float] = {}  # batch id -> its write's milliseconds, for the last KEPT_WRITE_TIMES
        # The meta and the partitions' clocks as the last transaction committed them, if it kept them (_advance).
        # The store is their only writer (the backend's exclusive hold), so a batch need not read them back: to a
        # server, a batch is then one round trip. Any other transaction forgets them, and so does any error: a
        # COMMIT whose answer was lost with the connection may have committed.
        self._kept: _State | None = None
        self._keeping: _State | None = None

    def check_settings(self, settings: dict[str, str]) -> None:
        """Counts from different windows or topics must not be added up: refuse to mix them."""
        with self._lock:
            existing = read_meta(self.database)
        clashes = [f"{k}={existing[k]!r} (now {v!r})" for k, v in settings.items() if k in existing and existing[k] != v]
        if clashes:
            raise UserError(f"{self.where} holds results made with other settings: {', '.join(clashes)}; "
                            f"{self.database.instead} or delete them")
        self._window_s = int(settings.get("window_seconds", self._window_s))
        self._transaction(lambda db: db.executemany(META_UPSERT, settings.items()))

    def set_meta(self, **values: str | None) -> None:
        """Facts about the running job that readers want (the dashboard's Spark UI link); None is skipped."""
        self._transaction(lambda db: db.executemany(META_UPSERT, [(k, v) for k, v in values.items() if v is not None]))

    def meta(self) -> dict[str, str]:
        return self._read(read_meta)

    def record_losses(self, losses: list[Loss]) -> None:
        """Messages deleted before the job read them (--accept-data-loss): kept with the answers, which are
        short of them, so that every reader says so."""
        now = time.time()
        self._transaction(lambda db: db.executemany(
            "INSERT INTO data_loss VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(p, lo, hi, hi - lo, now) for p, lo, hi in losses]))

    def last_batch(self) -> int | None:
        """The highest batch id counted, or None."""
        return self._read(lambda db: db.execute("SELECT MAX(batch_id) FROM batches").fetchone()[0])

    def has_batches(self) -> bool:
        return self._read(lambda db: db.execute("SELECT 1 FROM batches LIMIT 1").fetchone() is not None)

    def event_time_max(self) -> float | None:
        """The latest plausible event time of every batch so far (epoch seconds): the stream's front."""
        value = self.meta().get("event_time_max")
        return None if value is None else float(value)

    def watermark(self) -> float | None:
        """The job's event-time watermark (epoch seconds): windows ending at or before it are final."""
        return watermark_of(self.meta())

    def partition_clocks(self) -> dict[int, PartitionClock]:
        return self._read(read_clocks)

    def write_batch(self, batch_id: int, counts: BatchCounts, identity: dict[str, str] | None = None,
                    observation: Observation | None = None) -> bool:
        """Add one micro-batch's counts; False, writing nothing, if it is already here.

        `identity` (query, cluster and topic ids) is checked and kept in the same transaction: a batch id
        of another query must never be taken for one of ours. So are the partitions' clocks and the job's
        watermark that the batch moves (`observation`: its offsets and Kafka's), so that a restart resumes
        them exactly where the last counted batch left them.
        """
        observation = observation or Observation(now=time.time(), idle_timeout_s=float("inf"))
        started = time.perf_counter()
        written = self._transaction(lambda db: self._write_batch(db, batch_id, counts, identity or {}, observation))
        with self._lock:
            while len(self._write_ms) >= KEPT_WRITE_TIMES:
                del self._write_ms[next(iter(self._write_ms))]
            self._write_ms[batch_id] = round(1000 * (time.perf_counter() - started), 1)
        return written

    def write_ms(self, batch_id: int) -> float | None:
        """How long write_batch took for this recent batch (the store's own share of it): kept with the batch's
        progress as "resultsWrite", beside Spark's durations, so that operators and `bench` can compare stores
        by the job's own batches."""
        with self._lock:
            return self._write_ms.get(batch_id)

    def observe_partitions(self, observation: Observation) -> tuple[float | None, float | None]:
        """Between batches: Kafka's end offsets alone may make a partition idle (or active again), and so move
        the watermark. Returns the watermark before and after."""
        def advance(db: Database) -> tuple[float | None, float | None]:
            meta, clocks = self._state(db)
            before = watermark_of(meta)
            after = self._advance(db, meta, before, {}, observation, clocks)
            return before, after
        return self._transaction(advance)

    def write_progress(self, row: ProgressRow) -> None:
        """A batch's progress line, kept for readers; while another program holds the database it is let go
        (the counts are what must wait: write_batch)."""
        with self._lock:
            try:
                self.database.execute(_PROGRESS, row)
            except self.database.errors() as error:
                log.debug("progress of batch %s not kept: %s", row.batch_id, error)

    def top_windows(self, limit: int, watermark: float | None) -> dict[str, tuple[int, list[tuple[str, int]]]]:
        """For the console view: the top crime types of the last final window (its end at or before the
        watermark) and of the latest, still open, one: {"final": (start, rows), "open": (start, rows)}."""
        def recent(db: Database) -> list[tuple[int, int, str, int]]:
            latest, = db.execute("SELECT MAX(pane_start) FROM crime_type_panes").fetchone()
            if latest is None:
                return []
            since = latest - 2 * self._window_s
            if watermark is not None:
                since = min(since, int(watermark) - 2 * self._window_s)
            return window_counts(db, read_meta(db), since=since)

        windows = self._read(recent)
        if not windows:
            return {}
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

    def discard(self) -> bool:
        """Every row of every table (--start-over on a server, where the tables stay). True if there were any."""
        def empty(db: Database) -> bool:
            had = db.execute("SELECT 1 FROM meta LIMIT 1").fetchone() is not None
            for table in TABLES:
                db.execute(f"DELETE FROM {table}")
            return had
        return bool(self._transaction(lambda db: empty(db) or None))

    def close(self) -> None:
        self.database.close()

    def _read(self, work):
        """Run `work(database)` outside a transaction, again after the backend reconnects from an outage."""
        with self._lock:
            while True:
                try:
                    return work(self.database)
                except Exception as error:
                    if not self.database.reconnect(error):
                        raise

    def _transaction(self, work):
        """Run `work(database)` in the writer's transaction: committed whole, or rolled back on any error; run
        again after the backend reconnects from an outage (Database.reconnect)."""
        with self._lock:
            db = self.database
            while True:
                self._keeping = None
                try:
                    db.begin_write()
                    result = work(db)
                    db.commit()
                    self._kept = self._keeping
                    return result
                except BaseException as error:
                    self._kept = None
                    try:
                        db.rollback()
                    except db.errors():
                        pass  # the connection itself is gone: so is the transaction
                    if isinstance(error, Exception) and db.batch_counted(error):
                        return False  # a replayed batch: its id was refused before anything else was kept
                    if not isinstance(error, Exception) or not db.reconnect(error):
                        raise

    def _state(self, db: Database) -> tuple[dict[str, str], dict[int, PartitionClock]]:
        """The meta and the clocks as committed, in the caller's transaction: as the last transaction kept them,
        or read (both asked before either is read: one round trip to a server)."""
        kept = self._kept
        if kept is not None:
            return dict(kept.meta), dict(kept.clocks)
        meta_rows = db.execute(META_SQL)
        clock_rows = db.execute(CLOCKS_SQL)
        return dict(meta_rows.fetchall()), clocks_of(clock_rows.fetchall())

    def _write_meta(self, db: Database, meta: dict[str, str], values: dict[str, str]) -> None:
        """Upsert the values that differ from `meta` (as committed), and note them in it."""
        changed = [(k, v) for k, v in values.items() if meta.get(k) != v]
        if changed:
            db.executemany(META_UPSERT, changed)
            meta.update(changed)

    def _advance(self, db: Database, meta: dict[str, str], before: float | None,
                 event_times: dict[int, float], observation: Observation,
                 clocks: dict[int, PartitionClock], values: dict[str, str] | None = None) -> float | None:
        """The partitions' clocks and the job's watermark moved on, and the watermark written to the meta with
        `values`, in the caller's transaction, which keeps them once it commits."""
        moved = observe(clocks, observation.now, observation.idle_timeout_s, event_times,
                        observation.read_to, observation.end_offsets)
        after = job_watermark(moved, before, int(meta.get("watermark_seconds", 3600)))
        db.executemany(_PARTITIONS, [(c.partition, c.event_time, c.read_to, c.end_offset, c.grew_at, int(c.idle))
                                     for p, c in moved.items() if clocks.get(p) != c])
        self._write_meta(db, meta, {**(values or {}), "job_watermark": "" if after is None else repr(after)})
        self._keeping = _State(meta, moved)
        return after

    def _write_batch(self, db: Database, batch_id: int, counts: BatchCounts, identity: dict[str, str],
                     observation: Observation) -> bool:
        # The batch's own row goes first, with no ON CONFLICT: a replayed batch id is refused there
        # (Database.batch_counted), and the transaction keeps nothing. The meta and the clocks are as this
        # writer kept them, or read: to a server the whole batch is then one round trip, its COMMIT.
        meta, clocks = self._state(db)
        clash = identity_clash(meta, identity)
        if clash:
            raise UserError(f"{self.where} holds results of another {clash}; pass --start-over to "
                            f"discard them, or {self.database.instead}")
        dead = counts.get("dead_letters", [])
        total = (counts.get("total") or [{"count": 0, "kafka_us_min": None, "kafka_us_max": None,
                                          "kafka_us_avg": None, "event_s_max": None}])[0]
        stamps = [None if total[k] is None else total[k] / 1e6 for k in ("kafka_us_min", "kafka_us_max", "kafka_us_avg")]
        db.execute("INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (batch_id, time.time(), total["count"], total["count"] - len(dead), len(dead), *stamps))
        self._add_counts(db, counts)
        pane_s = int(meta.get("pane_seconds", 3600))
        latest = self._place_repeated_hour(db, counts.get("repeated_hour", []), pane_s)
        watermark = watermark_of(meta)
        self._note_revisions(db, batch_id, counts, watermark, pane_s)
        db.executemany('INSERT INTO dead_letters (partition, "offset", kafka_timestamp, reason, value, batch_id, key) '
                       "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                       [(r["dl_partition"], r["dl_offset"], r["dl_timestamp"] / 1e6, r["reason"],
                         None if r["value"] is None else bytes(r["value"]), batch_id,
                         None if r.get("key") is None else bytes(r["key"])) for r in dead])
        values = dict(identity)
        fronts = [float(x) for x in (meta.get("event_time_max"), total.get("event_s_max"), latest) if x is not None]
        if fronts:
            values["event_time_max"] = str(max(fronts))
        self._advance(db, meta, watermark, batch_event_times(counts), observation, clocks, values)
        return True

    @staticmethod
    def _add_counts(db: Database, counts: BatchCounts) -> None:
        for name, (table, columns, fields) in _COUNTED.items():
            if counts.get(name):
                db.add_counts(table, columns, TABLES[table][1], counts[name], fields)

    @staticmethod
    def _note_revisions(db: Database, batch_id: int, counts: BatchCounts, watermark: float | None,
                        pane_s: int) -> None:
        """Late calls: counted all the same, into panes a final window already covered (its end at or before
        the watermark of the batches before this one). Kept per pane, to say which windows changed."""
        if watermark is None:
            return
        late: dict[int, int] = {}
        for row in counts.get("crime_type_windows", []):
            if row["window_start"] + pane_s <= watermark:
                late[row["window_start"]] = late.get(row["window_start"], 0) + row["count"]
        db.executemany("INSERT INTO revisions VALUES (?, ?, ?, ?)",
                       [(batch_id, pane, watermark, n) for pane, n in sorted(late.items())])

    @staticmethod
    def _place_repeated_hour(db: Database, rows: list, pane_s: int) -> float | None:
        """Calls in an hour a fall-back change repeats were counted in its first occurrence: move those that
        belong to the second one (dataset.second_occurrence decides, over every call of that hour seen so
        far, so the answer does not depend on the order calls arrive in). Returns the latest time placed."""
        if not rows:
            return None
        db.executemany("INSERT INTO repeated_hour_calls VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                       [(r["rh_crime_id"], r["rh_time"], r["rh_type"], r["rh_time"]) for r in rows])
        latest = None
        hours = db.execute("SELECT DISTINCT first_time / 3600 FROM repeated_hour_calls WHERE crime_id IN "
                           f"({','.join('?' * len(rows))})", [r["rh_crime_id"] for r in rows]).fetchall()
        for (hour,) in hours:
            calls = db.execute("SELECT crime_id, first_time, crime_type, counted_time FROM repeated_hour_calls "
                               "WHERE first_time / 3600 = ?", (hour,)).fetchall()
            second = second_occurrence((c[0], c[1]) for c in calls)
            for crime_id, first_time, crime_type, counted_time in calls:
                wanted = first_time + 3600 if crime_id in second else first_time
                latest = wanted if latest is None else max(latest, wanted)
                if wanted == counted_time:
                    continue
                for when, delta in ((counted_time, -1), (wanted, 1)):
                    db.execute(_ADD_PANE, (when - when % pane_s, crime_type, delta))
                db.execute("UPDATE repeated_hour_calls SET counted_time = ? WHERE crime_id = ?", (wanted, crime_id))
        db.execute("DELETE FROM crime_type_panes WHERE count = 0")
        return latest
