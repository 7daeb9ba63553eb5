"""The results' tables, written once for every backend: each column's kind maps to the backend's own type.

"offset" is a reserved word in PostgreSQL, so the SQL quotes it everywhere.
"""

from __future__ import annotations

# table -> ([(column, kind)], primary key); kinds: int, real, text, bytes
TABLES: dict[str, tuple[list[tuple[str, str]], tuple[str, ...]]] = {
    "meta": ([("key", "text"), ("value", "text")], ("key",)),
    "batches": ([("batch_id", "int"), ("written_at", "real"), ("rows", "int"), ("calls", "int"), ("malformed", "int"),
                 ("kafka_ts_min", "real"), ("kafka_ts_max", "real"), ("kafka_ts_mean", "real")], ("batch_id",)),
    "progress": ([("batch_id", "int"), ("at", "text"), ("input_rows", "int"), ("input_rps", "real"),
                  ("processed_rps", "real"), ("duration_ms", "int"), ("watermark", "real"),
                  ("state_rows", "int"), ("backlog", "int"), ("duplicates", "int"), ("durations", "text")],
                 ("batch_id",)),
    "revisions": ([("batch_id", "int"), ("pane_start", "int"), ("watermark", "real"), ("calls", "int")],
                  ("batch_id", "pane_start")),
    "repeated_hour_calls": ([("crime_id", "text"), ("first_time", "int"), ("crime_type", "text"),
                             ("counted_time", "int")], ("crime_id",)),
    "crime_type_panes": ([("pane_start", "int"), ("crime_type", "text"), ("count", "int")],
                         ("pane_start", "crime_type")),
    "locations": ([("address", "text"), ("count", "int")], ("address",)),
    "dispositions": ([("disposition", "text"), ("description", "text"), ("count", "int")], ("disposition",)),
    "hourly": ([("hour", "int"), ("crime_type", "text"), ("count", "int")], ("hour", "crime_type")),
    "daily": ([("day", "text"), ("crime_type", "text"), ("count", "int")], ("day", "crime_type")),
    "partitions": ([("partition", "int"), ("event_time", "real"), ("read_to", "int"), ("end_offset", "int"),
                    ("grew_at", "real"), ("idle", "int")], ("partition",)),
    "data_loss": ([("partition", "int"), ("from_offset", "int"), ("to_offset", "int"), ("messages", "int"),
                   ("noticed_at", "real")], ("partition", "from_offset")),
    "dead_letters": ([("partition", "int"), ('"offset"', "int"), ("kafka_timestamp", "real"), ("reason", "text"),
                      ("value", "bytes"), ("batch_id", "int"), ("key", "bytes")], ("partition", '"offset"')),
}


def ddl(types: dict[str, str], key: str = "PRIMARY KEY") -> list[str]:
    """CREATE TABLE IF NOT EXISTS for every table, with `types` mapping each kind to the backend's type.

    `key` declares each table's key. The job never writes a null key (a call without an address or a crime
    type is counted under "(none)"), and must not: SQLite's PRIMARY KEY takes each null as a key of its own,
    so an upsert would add a row instead of adding to one. PostgreSQL's PRIMARY KEY refuses nulls; it
    declares "UNIQUE NULLS NOT DISTINCT", under which a null key would be one key."""
    return [f"CREATE TABLE IF NOT EXISTS {table} ("
            + ", ".join(f"{name} {types[kind]}" for name, kind in columns)
            + f", {key} ({', '.join(names)}))"
            for table, (columns, names) in TABLES.items()]


def upsert(table: str, columns: tuple[str, ...], key: tuple[str, ...]) -> str:
    """INSERT that replaces the row with the same key (SQLite's INSERT OR REPLACE, in SQL both speak)."""
    rest = [c for c in columns if c not in key]
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in rest))


def add_to_count(table: str, columns: tuple[str, ...], key: tuple[str, ...]) -> str:
    """INSERT of `columns` and a count that adds the count to the row with the same key, if there is one."""
    return (f"INSERT INTO {table} ({', '.join(columns)}, count) VALUES ({', '.join('?' * (len(columns) + 1))}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET count = {table}.count + excluded.count")


META_UPSERT = upsert("meta", ("key", "value"), ("key",))
