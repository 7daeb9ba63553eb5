"""The job's results: written exactly once per micro-batch (store.py), read by the report, the dashboard,
/metrics and /healthz (reader.py), kept in SQLite in the job's --output folder (sqlite.py) or in a
PostgreSQL database given by --results URL (postgres.py). Backends differ only behind database.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .database import Database
from .reader import ResultsReader, window_counts
from .rows import BatchCounts, Loss, ProgressRow
from .sqlite import FILE_NAME, OutputLock, SqliteDatabase, lock_holder, path_in
from .store import ResultsStore, identity_clash, read_clocks, watermark_of

__all__ = ["BatchCounts", "Database", "FILE_NAME", "Loss", "OutputLock", "ProgressRow", "ResultStore",
           "ResultsPlace", "ResultsReader", "ResultsStore", "as_place", "identity_clash", "lock_holder", "path_in",
           "read_clocks", "watermark_of", "window_counts"]


@dataclass(frozen=True)
class ResultsPlace:
    """Where the results live: SQLite in the job's output folder, or the PostgreSQL database at `url`."""

    output: Path
    url: str | None = None
    config_file: str | None = None  # a file holding the password (--results-config-file)

    def database(self, readonly: bool) -> Database:
        if self.url:
            from .postgres import PostgresDatabase

            return PostgresDatabase(self.url, readonly=readonly, config_file=self.config_file)
        return SqliteDatabase(self.output, readonly=readonly)

    def open_store(self) -> ResultsStore:
        """The writer: one job at a time (the backend's exclusive hold lasts until it is closed)."""
        return ResultsStore(self.database(readonly=False))

    def open_reader(self) -> ResultsReader:
        return ResultsReader(self.database(readonly=True))

    def discard(self) -> bool:
        """--start-over: the results go (the tables emptied on a server, the file deleted here). True if
        there were any."""
        if self.url:
            store = self.open_store()
            try:
                return store.discard()
            finally:
                store.close()
        removed = False
        for suffix in ("", "-wal", "-shm"):
            path = Path(f"{path_in(self.output)}{suffix}")
            removed |= path.exists()
            path.unlink(missing_ok=True)
        return removed

    def describe(self) -> str:
        if self.url:
            from .postgres import redacted_url

            return redacted_url(self.url)
        return str(path_in(self.output))


def ResultStore(output: str | Path) -> ResultsStore:  # noqa: N802 - the SQLite store, as tests and tools open it
    """The SQLite store in `output` (a folder)."""
    return ResultsPlace(Path(output)).open_store()


def as_place(where: "ResultsPlace | str | Path") -> ResultsPlace:
    """A ResultsPlace, or the job's output folder (its SQLite results)."""
    return where if isinstance(where, ResultsPlace) else ResultsPlace(Path(where))
