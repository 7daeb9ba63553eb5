"""PostgreSQL as the results store (--results postgresql://user@host:port/db), through psycopg 3.

For results that outlive one machine: a driver on a cluster's worker, several readers at once. The tables
and their meaning are SQLite's (schema.py). One job writes a database at a time: it holds a session
advisory lock for its life, which goes with its connection. Readers read one snapshot (REPEATABLE READ,
READ ONLY) and never block the writer. The password comes from PGPASSWORD, ~/.pgpass (libpq reads both) or
a --results-config-file; no output ever shows it.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import socket
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit


from ..errors import UserError
from .database import Database
from .schema import TABLES, ddl

log = logging.getLogger(__name__)
# Text compares byte by byte, as in SQLite: ties in the answers come in the same order, and the indexes
# compare faster than under a locale.
TYPES = {"int": "BIGINT", "real": "DOUBLE PRECISION", "text": "TEXT COLLATE \"C\"", "bytes": "BYTEA"}
LOCK_KEY = 0x5FC81E5  # the advisory lock one writing job holds per database
CONNECT_TIMEOUT_S = 5
OUTAGE_S = 120.0  # a writer rides out a server away this long, then the job stops in one line
_SEPARATOR = "\x1f"  # joins a text column's values for escaping in one pass, unless one of them holds it
NUL_STAND_IN = "\ufffd"  # for NUL in text, which PostgreSQL's text cannot hold
_VALUES = re.compile(r"^INSERT INTO (\w+) (?:\(([^)]*)\) )?VALUES \((?:\?, )*\?\)(.*)$", re.S)
# Every batch adds to the same counts: each is an UPDATE, a new row version. Pages kept half empty let
# PostgreSQL put it beside the old one without touching the index (a HOT update).
COUNTS_STORAGE = {table: " WITH (fillfactor = 50)" for table in
                  ("crime_type_panes", "locations", "dispositions", "hourly", "daily", "partitions", "meta")}
# Each batch looks up about as many addresses as it has calls, among tens of thousands: a hash index finds one
# in two page reads where the key's B-tree takes three and a dozen text comparisons. add_counts' MERGE into
# locations takes it (its plan says so); the unique B-tree stays, for the key. docs/benchmarks.md has the times.
EXTRA_INDEXES = ("CREATE INDEX IF NOT EXISTS locations_address_hash ON locations USING hash (address)",)
# The tables a batch adds counts to (Database.add_counts): whether each is still empty, asked once in a
# transaction, until each has been seen with rows.
COUNT_TABLES = tuple(table for table, (columns, _) in TABLES.items() if ("count", "int") in columns)
EMPTY_SQL = "SELECT " + ", ".join(f"NOT EXISTS (SELECT 1 FROM {table})" for table in COUNT_TABLES)
VERSION_SQL = ("SELECT (SELECT MAX(batch_id) FROM batches), (SELECT MAX(batch_id) FROM progress), "
               "(SELECT COUNT(*) FROM progress), (SELECT MAX(value) FROM meta WHERE key = 'job_watermark'), "
               "(SELECT MAX(value) FROM meta WHERE key = 'broker_lost_since'), "
               "(SELECT SUM(read_to) + SUM(COALESCE(end_offset, 0)) + SUM(idle) FROM partitions)")


def redacted_url(url: str) -> str:
    """The URL without a password, for every line a person reads."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "(a URL that does not parse)"


def password_from(config_file: str | None) -> str | None:
    """--results-config-file: a line password=... (other lines are left for libpq's own settings)."""
    if not config_file:
        return None
    try:
        lines = Path(config_file).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise UserError(f"cannot read --results-config-file {config_file}: {error.strerror or error}") from None
    for line in lines:
        key, _, value = line.partition("=")
        if key.strip() == "password":
            return value.strip()
    raise UserError(f"--results-config-file {config_file} has no line password=...")


def check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise UserError(f"--results {redacted_url(url)!r} is not a PostgreSQL URL: "
                        "expected postgresql://USER@HOST:PORT/DATABASE")
    try:
        parts.port
    except ValueError:
        raise UserError(f"--results {redacted_url(url)!r} has a port that is not a number") from None
    if not parts.path.strip("/"):
        raise UserError(f"--results {redacted_url(url)!r} names no database: postgresql://USER@HOST:PORT/DATABASE")


def _number_loader():
    """SUM() of BIGINTs is NUMERIC, which psycopg gives as Decimal: as int (or float), as SQLite gives."""
    from decimal import Decimal

    from psycopg.types.numeric import NumericLoader

    class NumberLoader(NumericLoader):
        def load(self, data):
            value: Decimal = super().load(data)
            return int(value) if value == value.to_integral_value() else float(value)

    return NumberLoader


class PostgresDatabase(Database):
    """One connection to the database at `url`; a writer also holds the database's advisory lock."""

    def __init__(self, url: str, readonly: bool = False, config_file: str | None = None) -> None:
        check_url(url)
        self.url, self.readonly = url, readonly
        self.where = redacted_url(url)
        self.instead = "use another database (--results)"
        self._password = password_from(config_file)
        self._pipeline = None
        self._empty: set[str] | None = None  # COUNT_TABLES without a row, as this transaction found them
        self._filled: set[str] = set()  # COUNT_TABLES seen with rows: MERGE, right whatever they hold, asks no more
        self._db = self._connect()
        if not readonly:
            try:
                self._prepare()
            except BaseException:
                self._db.close()
                raise

    def _connect(self):
        import psycopg

        extra = {"password": self._password} if self._password else {}
        try:
            connection = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                         application_name=f"sfcrime {'reader' if self.readonly else 'job'} "
                                                          f"pid {os.getpid()} on {socket.gethostname()}"[:63], **extra)
        except psycopg.Error as error:
            raise UserError(f"cannot reach the results store at {self.where}: {one_line(error)}") from None
        connection.adapters.register_loader("numeric", _number_loader())
        return connection

    def _prepare(self) -> None:
        """The tables, then the lock: one job writes a database at a time."""
        import psycopg

        try:
            for statement in ddl(TYPES, key="UNIQUE NULLS NOT DISTINCT"):
                self._db.execute(statement + COUNTS_STORAGE.get(statement.split()[5], ""))
            for statement in EXTRA_INDEXES:
                self._db.execute(statement)
        except psycopg.Error as error:
            raise UserError(f"cannot use the results store at {self.where}: {one_line(error)}") from None
        # add_counts' MERGE looks each row up by the table's key: an index probe a row. The planner takes the
        # source (unnest) for 100 rows whatever it holds, and from a few thousand rows in the table on it chose
        # a hash join over a scan of the whole table, whose cost grows with it (8 ms at 32,000 panes). The
        # writer's session runs no other join. Its statements are the same every batch: psycopg prepares them,
        # and the server plans each once (a small batch's MERGE was planned again each time: 0.17 ms a batch).
        self._db.execute("SET enable_hashjoin = off")
        self._db.execute("SET enable_mergejoin = off")
        self._db.execute("SET plan_cache_mode = force_generic_plan")
        taken, = self._db.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
        if not taken:
            holder = self._db.execute(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.objid = %s AND l.granted", (LOCK_KEY,)).fetchone()
            raise UserError(f"the results store at {self.where} is in use by a running job"
                            + (f" ({holder[0]})" if holder and holder[0] else "")
                            + ": stop it first, or use another database (--results)")

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("?", "%s")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._db.execute(self._sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """An INSERT of many rows as one statement reading one array a column (unnest): a batch's thousand
        locations in one round trip. The arrays go as text literals made here, which the server parses in C:
        11% less time a batch than one JSON document read by json_to_recordset, which hashes every row's keys
        (docs/benchmarks.md has the other ways tried)."""
        rows = [tuple(row) for row in rows]
        if not rows:
            return
        bulk = _bulk_insert(sql)
        if bulk is None:
            with self._db.cursor() as cursor:
                cursor.executemany(self._sql(sql), rows)
            return
        statement, kinds = bulk
        self._db.execute(statement, [array_literal(column, kind) for column, kind in zip(zip(*rows), kinds)])

    def add_counts(self, table: str, columns: Sequence[str], keys: Sequence[str], counted: Sequence[Mapping[str, Any]],
                   fields: Sequence[str]) -> None:
        """A batch's counts by MERGE, reading one array a column (as executemany does): it updates the rows
        there and inserts the others plainly. INSERT ... ON CONFLICT DO UPDATE inserts speculatively (a probe,
        the insert, a confirmation in the WAL) and locks each row before it updates it (a WAL record more).
        Into a table still empty (a fresh store's first batch, such as a whole replay --once) COPY writes, a
        page of rows to a WAL record. The columns are taken straight from the counts: no rows are made.
        docs/benchmarks.md has the times."""
        by_column = [[row[field] for row in counted] for field in (*fields, "count")]
        if any(None in by_column[columns.index(key)] for key in keys):
            super().add_counts(table, columns, keys, counted, fields)  # `=` never matches a null: ON CONFLICT does
            return
        statement, kinds = _merge(table, tuple(columns), tuple(keys))
        if table not in self._filled:
            if self._empty is None:  # one round trip, in a fresh store's first batches only
                self._empty = {t for t, empty in zip(COUNT_TABLES, self._db.execute(EMPTY_SQL).fetchone()) if empty}
            self._filled.add(table)
            if table in self._empty:
                self._copy(table, (*columns, "count"), by_column, kinds)
                return
        self._db.execute(statement, [array_literal(column, kind) for column, kind in zip(by_column, kinds)])

    def _copy(self, table: str, names: Sequence[str], by_column: list[list], kinds: Sequence[str]) -> None:
        """COPY into the writer's transaction. libpq has no COPY in pipeline mode: the pipeline ends (its
        statements' errors are raised here) and a new one begins after; the transaction goes on. On an error
        none begins, and rollback() ends the transaction."""
        self._end_pipeline()
        by_column = [list(map(_nul_free, column)) if kind == "text" and "\x00" in "".join(filter(None, column))
                     else column for column, kind in zip(by_column, kinds)]
        with self._db.cursor() as cursor, cursor.copy(f"COPY {table} ({', '.join(names)}) FROM STDIN") as copy:
            for row in zip(*by_column):
                copy.write_row(row)
        self._begin_pipeline()

    def begin_write(self) -> None:
        """The transaction in pipeline mode: its writes go without waiting for each other's answers, and the
        client makes the next while the server runs the last; a read (or COMMIT) waits for all before it."""
        self._empty = None
        self._begin_pipeline()
        self._db.execute("BEGIN")

    def _begin_pipeline(self) -> None:
        self._pipeline = self._db.pipeline()
        self._pipeline.__enter__()

    def commit(self) -> None:
        """An error of any statement in the pipeline may come here: it is the one raised, not the pipeline's
        "aborted" after it."""
        try:
            self._db.execute("COMMIT")
        except BaseException:
            self._end_pipeline(quietly=True)
            raise
        self._end_pipeline()

    def _end_pipeline(self, quietly: bool = False) -> None:
        """`quietly`: after an error, which the caller holds; the pipeline would say only that it was aborted (or
        that the connection is gone)."""
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            try:
                pipeline.__exit__(None, None, None)
            except Exception:  # noqa: BLE001 - see the docstring
                if not quietly:
                    raise

    def begin_snapshot(self) -> None:
        self._db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def rollback(self) -> None:
        """The pipeline ends first: after an error it ignores what is sent until its end, a ROLLBACK too."""
        self._end_pipeline(quietly=True)
        if not self._db.closed:
            self._db.execute("ROLLBACK")

    def has_table(self, name: str) -> bool:
        return self._db.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]

    def version(self) -> tuple:
        return tuple(self._db.execute(VERSION_SQL).fetchone())

    def batch_counted(self, error: BaseException) -> bool:
        """In a pipeline the refusal comes at the next read or the COMMIT, and none of the statements after it ran."""
        diagnosis = getattr(error, "diag", None)
        return getattr(error, "sqlstate", None) == "23505" and getattr(diagnosis, "table_name", None) == "batches"

    def disk_full(self, error: BaseException) -> bool:
        return getattr(error, "sqlstate", None) == "53100"

    def errors(self) -> tuple[type[BaseException], ...]:
        import psycopg

        return (psycopg.Error,)

    def reconnect(self, error: BaseException) -> bool:
        """A writer whose server went away (a restart, a network blip) connects again and takes its lock back,
        for up to OUTAGE_S, a line a minute: True when it may run the transaction again. The transaction that
        failed was not committed, or was and its batch id says so: running it again counts nothing twice."""
        import psycopg

        if self.readonly or not isinstance(error, psycopg.OperationalError) or not (self._db.closed or self._db.broken):
            return False
        started = said = time.monotonic()
        log.warning("lost the results store at %s (%s): connecting again", self.where, one_line(error))
        while time.monotonic() - started < OUTAGE_S:
            try:
                self._db = self._connect()
                self._prepare()
                log.warning("the results store at %s answers again after %.0f s", self.where,
                            time.monotonic() - started)
                return True
            except UserError as again:
                if "in use by a running job" in str(again):
                    raise
                if time.monotonic() - said >= 60:
                    said = time.monotonic()
                    log.warning("the results store at %s has not answered for %.0f s: %s", self.where,
                                said - started, again)
                time.sleep(2)
        raise UserError(f"lost the results store at {self.where} for {OUTAGE_S:.0f} s: every finished batch is "
                        "kept; start the job again once it answers, with the same --output and --results")

    def job_pid(self, meta: dict[str, str]) -> int | None:
        pid = meta.get("job_pid", "")
        return int(pid) if pid.isdigit() and meta.get("job_host") == socket.gethostname() else None

    def close(self) -> None:
        self._db.close()  # the advisory lock goes with the session


@functools.lru_cache(maxsize=64)
def _bulk_insert(sql: str) -> tuple[str, tuple[str, ...]] | None:
    """`INSERT INTO t (a, b) VALUES (?, ?) tail` as `INSERT INTO t (a, b) SELECT a, b FROM unnest(%s::A[],
    %s::B[]) AS r(a, b) tail`, with each column's kind; None for any other statement, or a table with bytes
    (the dead letters, a few a batch at most, go a row at a time)."""
    match = _VALUES.match(sql)
    if match is None:
        return None
    table, named, tail = match.groups()
    columns = dict(TABLES[table][0])
    names = [n.strip() for n in named.split(",")] if named else list(columns)
    if any(columns[name] == "bytes" for name in names):
        return None
    listed = ", ".join(names)
    arrays = ", ".join(f"%s::{TYPES[columns[name]].split(' COLLATE')[0]}[]" for name in names)
    return (f"INSERT INTO {table} ({listed}) SELECT {listed} FROM unnest({arrays}) AS r({listed}){tail}",
            tuple(columns[name] for name in names))


@functools.lru_cache(maxsize=32)
def _merge(table: str, columns: tuple[str, ...], keys: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """add_counts' MERGE over one array a column (`columns`, then count), with each column's kind."""
    kinds = dict(TABLES[table][0])
    names = (*columns, "count")
    arrays = ", ".join(f"%s::{TYPES[kinds[n]].split(' COLLATE')[0]}[]" for n in names)
    statement = (f"MERGE INTO {table} t USING unnest({arrays}) AS s({', '.join(names)}) "
                 f"ON {' AND '.join(f't.{k} = s.{k}' for k in keys)} "
                 "WHEN MATCHED THEN UPDATE SET count = t.count + s.count "
                 f"WHEN NOT MATCHED THEN INSERT ({', '.join(names)}) VALUES ({', '.join(f's.{n}' for n in names)})")
    return statement, tuple(kinds[n] for n in names)


def array_literal(values: Sequence[Any], kind: str) -> str:
    """One column as PostgreSQL's array text: `{"a b","c\\"d",NULL}` for text, `{1,2.5,NULL}` for numbers."""
    # The usual column, made in a few passes over one string (up to 1 ms a batch less); a null among the values
    # shows in it (an int's digits hold no "N"; a text join refuses None), so no pass looks for one first.
    if kind == "int":
        joined = ",".join(map(str, values))
        if "N" not in joined:
            return "{" + joined + "}"
    elif kind == "text":
        try:
            joined = _SEPARATOR.join(values)
        except TypeError:
            joined = ""
        if joined and joined.count(_SEPARATOR) == len(values) - 1 and "\x00" not in joined:
            return '{"' + _escaped(joined).replace(_SEPARATOR, '","') + '"}'
    element = _ELEMENTS[kind]
    return "{" + ",".join("NULL" if v is None else element(v) for v in values) + "}"


def _quoted(value: str) -> str:
    return '"' + _escaped(_nul_free(value)) + '"'


def _nul_free(value: Any) -> Any:
    """PostgreSQL's text cannot hold NUL, which valid JSON can ("\\u0000"): such a call is counted all the same,
    under its text with U+FFFD in the NUL's place (SQLite keeps it as it is), and the log says so."""
    if isinstance(value, str) and "\x00" in value:
        log.warning("PostgreSQL's text cannot hold NUL: %r is kept with U+FFFD in its place", value[:80])
        value = value.replace("\x00", NUL_STAND_IN)
    return value


def _escaped(text: str) -> str:
    """Inside an array's double quotes, a backslash or a double quote takes a backslash before it."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _integer(value: Any) -> str:
    return str(int(value))


def _real(value: Any) -> str:
    value = float(value)
    if math.isfinite(value):
        return repr(value)
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


_ELEMENTS = {"text": _quoted, "int": _integer, "real": _real}  # a column's kind (schema.TABLES): its elements


def one_line(error: BaseException) -> str:
    """psycopg's message, first line, without libpq's repeated prefixes."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text.removeprefix("connection failed: ")[:300]
