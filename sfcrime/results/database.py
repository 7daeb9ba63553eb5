"""The results store's one seam: a SQL database the store writes and the readers read.

Everything the results mean (tables, exactly-once batches, watermarks, the answers' queries) is written once,
in SQL both backends speak (results/store.py, results/reader.py), with `?` for parameters. A backend says only
how to connect, how a writer gets its transaction and its exclusive hold, how a reader gets one snapshot, and
what its errors mean. SQLite (results/sqlite.py) is the default; PostgreSQL (results/postgres.py) is the other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from operator import itemgetter
from typing import Any, Iterable, Mapping, Sequence

from .schema import add_to_count


class Database(ABC):
    """One connection, for a writer (the job) or a reader (report, dashboard, /metrics, /healthz)."""

    where: str  # for people: a path, or a URL without its password
    instead: str  # what to do instead when these results are not the job's: "use another --output"

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; the result iterates over rows and has fetchone() and fetchall()."""

    @abstractmethod
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    def add_counts(self, table: str, columns: Sequence[str], keys: Sequence[str], counted: Sequence[Mapping[str, Any]],
                   fields: Sequence[str]) -> None:
        """Add each of `counted`'s count (its "count") to the row of `table` with the same `keys`, or insert the
        row: a batch's counts, in the writer's transaction. `fields` name its values for `columns`, in their
        order; no two share their keys. Each backend takes the values as it sends them: rows, or columns."""
        self.executemany(add_to_count(table, tuple(columns), tuple(keys)), map(itemgetter(*fields, "count"), counted))

    @abstractmethod
    def begin_write(self) -> None:
        """Start the writer's transaction, waiting out (and saying so) whatever else holds the database."""

    @abstractmethod
    def begin_snapshot(self) -> None:
        """Start a reader's transaction that sees one state: a batch committed meanwhile whole or not at all."""

    def commit(self) -> None:
        self.execute("COMMIT")

    def rollback(self) -> None:
        self.execute("ROLLBACK")

    @abstractmethod
    def has_table(self, name: str) -> bool:
        """Results written by an older version may lack a table; a reader cannot add it."""

    @abstractmethod
    def version(self) -> tuple:
        """Changes whenever a writer commits: readers that cache answers compare it."""

    @abstractmethod
    def batch_counted(self, error: BaseException) -> bool:
        """The error is the batches table refusing a batch id it holds: a replayed batch, already counted."""

    @abstractmethod
    def disk_full(self, error: BaseException) -> bool:
        """The error says the database's disk is full (the batch was not written)."""

    @abstractmethod
    def errors(self) -> tuple[type[BaseException], ...]:
        """The driver's own error classes: a reader turns them into one line."""

    def reconnect(self, error: BaseException) -> bool:
        """After `error` broke a writer's transaction: connect again (waiting out a short outage) and say
        True if the transaction may run again. Running it again is safe: a batch already committed is
        recognised by its id."""
        return False

    def job_pid(self, meta: dict[str, str]) -> int | None:
        """The pid of the job that writes (or last wrote) these results, when it runs on this machine."""
        return None

    @abstractmethod
    def close(self) -> None: ...
