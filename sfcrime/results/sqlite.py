"""SQLite, the default results store: one file in the job's --output folder, in the standard library.

WAL mode lets readers read while the job writes. The folder's lock (OutputLock) keeps one job to a folder,
and names the job's pid for readers on this machine.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import UserError
from .database import Database
from .schema import ddl

log = logging.getLogger(__name__)
FILE_NAME = "results.sqlite"
BUSY_TIMEOUT_S = 30  # SQLite waits this long for another program's lock before saying "locked"
LOCK_NAME = ".lock"
TYPES = {"int": "INTEGER", "real": "REAL", "text": "TEXT", "bytes": "BLOB"}


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
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, isolation_level=None,
                               check_same_thread=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        for statement in ddl(TYPES):
            connection.execute(statement)
        _migrate(connection)
    except sqlite3.DatabaseError as error:  # not SQLite ("file is not a database"), or damaged
        connection.close()
        raise UserError(f"cannot use the results in {path}: {error} (use another --output)") from None
    return connection


def _migrate(connection: sqlite3.Connection) -> None:
    """Columns added since older versions wrote their results."""
    columns = {row[1] for row in connection.execute("PRAGMA table_info(progress)")}
    if "duplicates" not in columns:  # results written before duplicates were counted
        connection.execute("ALTER TABLE progress ADD COLUMN duplicates INTEGER")
    if "durations" not in columns:  # results written before Spark's durationMs was kept
        connection.execute("ALTER TABLE progress ADD COLUMN durations TEXT")
    if "key" not in {row[1] for row in connection.execute("PRAGMA table_info(dead_letters)")}:
        connection.execute("ALTER TABLE dead_letters ADD COLUMN key BLOB")  # before dead letters kept keys


class SqliteDatabase(Database):
    """OUTPUT/results.sqlite. A writer holds the folder's lock (OutputLock) until closed."""

    instead = "use another --output"

    def __init__(self, output: str | Path, readonly: bool = False) -> None:
        self.output, self.path = Path(output), path_in(output)
        self.where = str(self.output)
        self._lock = None if readonly else OutputLock(output).acquire()
        try:
            self._db = connect(self.path, readonly)
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._db.executemany(sql, rows)

    def begin_write(self) -> None:
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

    def begin_snapshot(self) -> None:
        self._db.execute("BEGIN")

    def has_table(self, name: str) -> bool:
        return self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                (name,)).fetchone() is not None

    def version(self) -> tuple:
        """SQLite in WAL mode touches results.sqlite-wal on every commit: the two files' sizes and times."""
        stats = []
        for path in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                stat = path.stat()
                stats.append((stat.st_mtime_ns, stat.st_size))
            except FileNotFoundError:
                stats.append(None)
        return tuple(stats)

    def batch_counted(self, error: BaseException) -> bool:
        return isinstance(error, sqlite3.IntegrityError) and "batches.batch_id" in str(error)

    def disk_full(self, error: BaseException) -> bool:
        return isinstance(error, sqlite3.OperationalError) and "full" in str(error)

    def errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.Error,)

    def job_pid(self, meta: dict[str, str]) -> int | None:
        return lock_holder(self.output)

    def close(self) -> None:
        self._db.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None


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
                held = OutputLock._held[key] = [self._take(key), 0]
            held[1] += 1
        self._key = key
        return self

    def _take(self, key: Path):
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
        return handle

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
