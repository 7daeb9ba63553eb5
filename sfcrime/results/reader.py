"""The reading side of the results: every query the report, the dashboard, /metrics and /healthz ask.

A reader sees one snapshot (Database.begin_snapshot): a batch the job commits meanwhile shows whole or not
at all. Values come back as plain ints, floats and strings whatever the backend.
"""

from __future__ import annotations

import json

from ..stream.watermarks import PartitionClock
from .database import Database
from .store import read_clocks, read_meta, watermark_of, window_counts

PIPELINE_COLUMNS = ("batch_id", "at", "input_rows", "input_rps", "processed_rps", "duration_ms", "backlog", "late",
                    "malformed", "latency_mean_s", "latency_max_s")


class ResultsReader:
    """Read-only questions to the results, in one snapshot for as long as the reader is open."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.where = database.where
        database.begin_snapshot()
        self._meta: dict[str, str] | None = None

    def __enter__(self) -> "ResultsReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.database.rollback()
        except self.database.errors():
            pass
        self.database.close()

    def _one(self, sql: str, *params):
        return self.database.execute(sql, params).fetchone()[0]

    def _all(self, sql: str, *params) -> list[tuple]:
        return [tuple(row) for row in self.database.execute(sql, params).fetchall()]

    # ------------------------------------------------------------------ the job and its state
    def meta(self) -> dict[str, str]:
        if self._meta is None:
            self._meta = read_meta(self.database)
        return self._meta

    def watermark(self) -> float | None:
        return watermark_of(self.meta())

    def clocks(self) -> dict[int, PartitionClock]:
        return read_clocks(self.database)

    def job_pid(self) -> int | None:
        return self.database.job_pid(self.meta())

    def version(self) -> tuple:
        return self.database.version()

    def batches(self) -> int:
        return self._one("SELECT COUNT(*) FROM batches")

    def last_written(self) -> float | None:
        """When the last batch's results were committed (epoch seconds)."""
        return self._one("SELECT MAX(written_at) FROM batches")

    def last_progress(self) -> tuple[int | None, int, float | None] | None:
        """(duration_ms, input_rows, results_write_ms) of the last batch Spark reported; the write's time is
        None for a batch not written by this job (a re-run, or results from before it was kept)."""
        rows = self._all("SELECT duration_ms, input_rows, durations FROM progress ORDER BY batch_id DESC LIMIT 1")
        if not rows:
            return None
        duration_ms, input_rows, durations = rows[0]
        try:
            write_ms = json.loads(durations).get("resultsWrite") if durations else None
        except (ValueError, AttributeError):
            write_ms = None
        return duration_ms, input_rows, write_ms

    def recent_batches(self, limit: int) -> list[dict]:
        """The job's health per micro-batch, newest last (PIPELINE_COLUMNS)."""
        rows = self._all(
            "SELECT p.batch_id, p.at, p.input_rows, p.input_rps, p.processed_rps, p.duration_ms, p.backlog, "
            "(SELECT COALESCE(SUM(r.calls), 0) FROM revisions r WHERE r.batch_id = p.batch_id), b.malformed, "
            "b.written_at - b.kafka_ts_mean, b.written_at - b.kafka_ts_min "
            "FROM progress p LEFT JOIN batches b ON b.batch_id = p.batch_id ORDER BY p.batch_id DESC LIMIT ?", limit)
        return [dict(zip(PIPELINE_COLUMNS, row)) for row in reversed(rows)]

    def data_loss(self) -> list[tuple[int, int, int, int]]:
        """(partition, from offset, to offset, messages) Kafka deleted before the job read them."""
        if not self.database.has_table("data_loss"):  # results from before losses were recorded: none was
            return []
        return self._all("SELECT partition, from_offset, to_offset, messages FROM data_loss "
                         "ORDER BY partition, from_offset")

    # ------------------------------------------------------------------ the answers
    def total_calls(self) -> int:
        return self._one("SELECT COALESCE(SUM(count), 0) FROM locations")

    def malformed(self) -> int:
        return self._one("SELECT COUNT(*) FROM dead_letters")

    def malformed_reasons(self) -> dict[str, int]:
        return dict(self._all("SELECT reason, COUNT(*) FROM dead_letters GROUP BY reason ORDER BY reason"))

    def late_calls(self) -> int:
        """Calls counted into a window that was already final."""
        return self._one("SELECT COALESCE(SUM(calls), 0) FROM revisions")

    def duplicates(self) -> int:
        return self._one("SELECT COALESCE(SUM(duplicates), 0) FROM progress")

    def revised_windows(self) -> int:
        """Windows that were final when a late call was counted into them."""
        meta = self.meta()
        window_s, pane_s = int(meta.get("window_seconds", 3600)), int(meta.get("pane_seconds", 3600))
        revised = set()
        for pane, watermark in self._all("SELECT pane_start, watermark FROM revisions"):
            for j in range(max(1, window_s // pane_s)):
                start = pane - j * pane_s
                if start + window_s <= watermark:
                    revised.add(start)
        return len(revised)

    def window_counts(self, since: int | None = None) -> list[tuple[int, int, str, int]]:
        return window_counts(self.database, self.meta(), since)

    def top_crime_types(self, limit: int) -> list[tuple[str, int]]:
        return self._all("SELECT crime_type, SUM(count) AS n FROM crime_type_panes GROUP BY crime_type "
                         "ORDER BY n DESC, crime_type LIMIT ?", limit)

    def top_locations(self, limit: int) -> list[tuple[str, int]]:
        return self._all("SELECT address, count FROM locations ORDER BY count DESC, address LIMIT ?", limit)

    def dispositions(self) -> list[tuple[str, str | None, int]]:
        return self._all("SELECT disposition, description, count FROM dispositions ORDER BY count DESC, disposition")

    def pane_totals(self) -> list[tuple[int, int]]:
        """(pane start, calls in it) over every crime type."""
        return self._all("SELECT pane_start, SUM(count) FROM crime_type_panes GROUP BY pane_start")

    def pane_range(self) -> tuple[int | None, int | None]:
        return tuple(self._all("SELECT MIN(pane_start), MAX(pane_start) FROM crime_type_panes")[0])

    def by_hour(self, names: list[str]) -> list[tuple[int, str, int]]:
        if not names:
            return []
        return self._all(f"SELECT hour, crime_type, count FROM hourly WHERE crime_type IN ({','.join('?' * len(names))})",
                         *names)

    def by_day(self, names: list[str]) -> list[tuple[str, str, int]]:
        if not names:
            return []
        return self._all(f"SELECT day, crime_type, count FROM daily WHERE crime_type IN ({','.join('?' * len(names))}) "
                         "ORDER BY day", *names)
