"""Read the calls file (a JSON array, plain, .gz or .bz2) and put it in event-time order.

The file is 112 MB of pretty-printed JSON, newest call first. Loading it with `json.load` costs about
390 MB of Python objects, so records are parsed one at a time and kept as compact UTF-8 bytes.
A live stream arrives oldest-first and Spark's watermark depends on that, hence `replay_order`.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import zlib
from array import array
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator

import orjson
from dateutil import parser as date_parser
from dateutil import tz

from .errors import UserError
from .sf_time import ZONE

EVENT_TIME_FIELD = "call_date_time"
KEY_FIELD = "crime_id"
_CHUNK_CHARS = 1 << 20
_WHITESPACE = " \t\r\n"


def open_text(path: str | Path) -> io.TextIOBase:
    """Open plain, gzip or bzip2 text by its magic bytes, not its name."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"input file not found: {path}")
    if path.is_dir():
        raise UserError(f"input is a directory, not a file: {path}")
    with open(path, "rb") as probe:
        magic = probe.read(3)
    if magic[:2] == b"\x1f\x8b":
        raw = gzip.open(path, "rb")
    elif magic == b"BZh":
        raw = bz2.open(path, "rb")
    else:
        raw = open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8", errors="strict")


def iter_records(path: str | Path) -> Iterator[dict]:
    """Yield each object of the top-level JSON array, holding at most one chunk in memory."""
    for record, _ in records_and_kinds(path):
        yield record


def records_and_kinds(path: str | Path) -> Iterator[tuple[dict, bool]]:
    """Each record, and whether every value of it is text (encode_record need not look again)."""
    try:
        with open_text(path) as text:
            reader = _ArrayReader(text, path)
            for record in reader.records():
                yield record, reader.text_only
    except (EOFError, zlib.error, OSError) as error:
        raise UserError(f"{path}: cannot read compressed data ({error.__class__.__name__}: {error})") from None
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


class _ArrayReader:
    """The objects of a JSON array in a text stream, read a chunk at a time: `buffer[pos:]` is unread."""

    def __init__(self, text: io.TextIOBase, path: str | Path) -> None:
        self.text, self.path = text, path
        self.buffer, self.pos, self.eof = "", 0, False
        self.fast = True  # whole_records may try the chunk
        self.text_only = False  # the record last yielded came from whole_records: its values are all text
        self.decoder = json.JSONDecoder()

    def records(self) -> Iterator[dict]:
        first = self.next_char()
        if first == "":
            raise UserError(f"{self.path}: file is empty")
        if first != "[":
            raise UserError(f"{self.path}: expected a JSON array of call records, found {first!r} at the start")
        self.pos += 1
        index = 0
        while True:
            ch = self.next_char()
            if ch == "]":
                self.pos += 1
                break
            if index and ch == ",":
                self.pos += 1
                ch = self.next_char()
            elif index:
                raise UserError(f"{self.path}: not valid JSON after record {index} (expected ',' or ']')")
            if ch == "":
                raise UserError(f"{self.path}: file is truncated after {index} records")
            whole = self.whole_records() if ch == "{" else None
            self.text_only = bool(whole)
            if whole:
                index += len(whole)
                yield from whole
                continue
            index += 1
            yield self.record(index)
        if self.next_char() != "":
            raise UserError(f"{self.path}: unexpected data after the closing ']'")

    def fill(self) -> bool:
        """Read the next chunk onto what is unread; False at the end of the file."""
        if self.eof:
            return False
        chunk = self.text.read(_CHUNK_CHARS)
        if not chunk:
            self.eof = True
            return False
        self.buffer, self.pos, self.fast = self.buffer[self.pos:] + chunk, 0, True
        return True

    def whole_records(self) -> list[dict] | None:
        """Every record up to the last `}` in the buffer, parsed at once by orjson: None unless all of them are
        objects of text values, which orjson reads exactly as `json` does. Anything else (a `}` inside a
        string, a number, a NaN, an error) is left to `record`, one at a time, with its own message, and
        the rest of this chunk with it."""
        if not self.fast:
            return None
        cut = self.buffer.rfind("}", self.pos)
        try:
            records = orjson.loads("[" + self.buffer[self.pos:cut + 1] + "]") if cut > self.pos else None
        except orjson.JSONDecodeError:
            records = None
        if not records or not all(type(r) is dict and all(type(v) is str for v in r.values()) for r in records):
            self.fast = False
            return None
        self.pos = cut + 1
        return records

    def next_char(self) -> str:
        """The next character that is not whitespace, without consuming it; "" at the end of the file."""
        while True:
            while self.pos < len(self.buffer) and self.buffer[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(self.buffer):
                return self.buffer[self.pos]
            if not self.fill():
                return ""

    def record(self, number: int) -> dict:
        """Decode the value at `pos` (the array's record `number`, from 1), reading on while it is cut off."""
        while True:
            try:
                record, end = self.decoder.raw_decode(self.buffer, self.pos)
                if end == len(self.buffer) and not self.eof and self.fill():
                    continue  # a number or literal may go on in the next chunk
                break
            except json.JSONDecodeError as error:
                if not self.fill():
                    where = "truncated" if error.pos >= len(self.buffer) - 1 else f"not valid JSON ({error.msg})"
                    raise UserError(f"{self.path}: {where} at record {number}") from None
        self.pos = end
        if not isinstance(record, dict):
            raise UserError(f"{self.path}: record {number} is a {type(record).__name__}, expected a JSON object")
        return record


def parse_event_time(text: object) -> datetime | None:
    """`call_date_time` as a San Francisco local datetime; None when it is missing or unparseable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text)  # the fast path: every record in the dataset is ISO 8601
    except ValueError:
        try:
            moment = date_parser.parse(text)
        except (ValueError, OverflowError):
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=ZONE)


_NAIVE_EPOCH = datetime(1970, 1, 1)
REPEATED_HOUR_JUMP_S = 30 * 60


def _crime_id_order(crime_id: str) -> tuple:
    return (len(crime_id), crime_id) if crime_id.isdigit() else (float("inf"), crime_id)


def second_occurrence(calls) -> set[str]:
    """The calls of an hour that a fall-back change repeats which happened in its second occurrence.

    `calls` are (crime_id, epoch seconds read as the first occurrence) for one such hour. call_date_time
    has no offset, so the time alone can't tell; the crime_ids can. They are numbered in the order calls
    come in (YYDDD + a daily sequence), so, in crime_id order, the clock goes back from about :59 to
    about :00 where the second occurrence starts (2018-11-04: 183080262 at 01:56, then 183080266 at 01:01).
    The rule: walking in crime_id order, the first call more than 30 minutes earlier than the latest time
    so far starts the second occurrence; it and every later crime_id belong to it. Without such a jump,
    every call is taken as the first occurrence (what Spark and java.time do).
    """
    ordered = sorted(calls, key=lambda c: _crime_id_order(str(c[0])))
    latest = None
    for i, (crime_id, seconds) in enumerate(ordered):
        if latest is not None and seconds < latest - REPEATED_HOUR_JUMP_S:
            return {str(c[0]) for c in ordered[i:]}
        latest = seconds if latest is None else max(latest, seconds)
    return set()


class EventClock:
    """Epoch seconds of SF local times, fast: the zone's offset is looked up once per local hour."""

    def __init__(self) -> None:
        self._offsets: dict[tuple, float] = {}
        self._repeated: dict[tuple, bool] = {}
        self.repeated_hour: tuple | None = None  # the local hour of the last time read, if a fall-back repeats it

    def epoch_seconds(self, text: object) -> float | None:
        if not isinstance(text, str):
            return None
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            moment = parse_event_time(text)
            if moment is None:
                return None
        self.repeated_hour = None
        if moment.tzinfo is not None:  # an explicit zone in the string
            return moment.timestamp()
        hour = (moment.year, moment.month, moment.day, moment.hour)
        offset = self._offsets.get(hour)
        if offset is None:
            local = moment.replace(tzinfo=ZONE)  # fold 0: the first occurrence of a repeated hour
            offset = self._offsets[hour] = local.utcoffset().total_seconds()
            self._repeated[hour] = tz.datetime_ambiguous(local)
        if self._repeated[hour]:
            self.repeated_hour = hour
        return (moment - _NAIVE_EPOCH).total_seconds() - offset


class EventTimes:
    """Epoch seconds of calls added one at a time, NaN where there is no time; `missing` counts those.

    The producer's event clock, which `--verify` checks order against too: a fall-back night's repeated
    hour is split by second_occurrence, the rule the job applies. Only the calls of such an hour are
    remembered until `finish`: holding every (crime_id, call_date_time) pair cost the producer 37 MB.
    """

    def __init__(self) -> None:
        self.clock = EventClock()
        self.times = array("d")
        self.missing = 0
        self._repeated: dict[tuple, list[tuple[str, float, int]]] = {}

    def add(self, key: object, text: object) -> None:
        seconds = self.clock.epoch_seconds(text)
        if seconds is None:
            self.missing += 1
            self.times.append(float("nan"))
            return
        if self.clock.repeated_hour is not None and key is not None:
            self._repeated.setdefault(self.clock.repeated_hour, []).append((str(key).strip(), seconds,
                                                                            len(self.times)))
        self.times.append(seconds)

    def finish(self) -> tuple[array, int]:
        times = self.times
        for calls in self._repeated.values():
            second = second_occurrence((crime_id, seconds) for crime_id, seconds, _ in calls)
            for crime_id, seconds, index in calls:
                if crime_id in second:
                    times[index] = seconds + 3600
        return times, self.missing


def event_times(stamps) -> tuple[array, int]:
    """Epoch seconds of each (crime_id, call_date_time), NaN where there is no time, and how many have none."""
    builder = EventTimes()
    for key, text in stamps:
        builder.add(key, text)
    return builder.finish()


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def encode_record(record: dict, text_only: bool = False) -> bytes:
    """The record as compact UTF-8 JSON with its fields unchanged. orjson writes text values byte for byte
    as `json` does, and faster; other values (floats, big integers) are left to `json`. `text_only`: the
    caller knows every value is text."""
    if text_only or all(type(v) is str for v in record.values()):
        try:  # copied: orjson's own bytes keep a far larger allocation, 1.5 GB over the file's 200,000 values
            return bytes(memoryview(orjson.dumps(record)))
        except TypeError:  # a lone surrogate, which UTF-8 cannot hold: json's error below says so
            pass
    return _encode(record).encode("utf-8")


@dataclass
class Calls:
    """Calls ready to send: Kafka key and value bytes, event time (epoch seconds, NaN if unknown)."""

    keys: list[bytes]
    values: list[bytes]
    event_times: array
    order: list[int]
    without_event_time: int = 0
    spent: bool = False  # sent by a replay, which lets go of each call (drain)

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[tuple[bytes, bytes, float]]:
        if self.spent:
            raise RuntimeError("these calls were sent and let go of (Calls.drain); load them again")
        keys, values, times = self.keys, self.values, self.event_times
        for i in self.order:
            yield keys[i], values[i], times[i]

    def drain(self) -> Iterator[tuple[bytes, bytes, float]]:
        """Each call in order, let go of once yielded: the producer's queue holds its own copy.

        Sending from `__iter__` holds every value twice at the peak, here and in librdkafka's queue: 250 MB
        for the full file. Let go of in replay order, the newest-first file frees its memory from the end.
        """
        self.spent = True
        keys, values, times = self.keys, self.values, self.event_times
        for i in self.order:
            key, value = keys[i], values[i]
            keys[i] = values[i] = None
            yield key, value, times[i]


def load_calls(path: str | Path, order: str = "event-time", limit: int | None = None, skip: int = 0) -> Calls:
    """Read every record, then order them; `skip` and `limit` apply after ordering (to resume a replay)."""
    keys: list[bytes] = []
    values: list[bytes] = []
    clock = EventTimes()
    first_fields: list[str] = []
    calls_seen = False
    for record, text_only in records_and_kinds(path):
        key = record.get(KEY_FIELD)
        keys.append(str(key).encode("utf-8") if key is not None else b"")
        values.append(encode_record(record, text_only))
        clock.add(key, record.get(EVENT_TIME_FIELD))
        calls_seen = calls_seen or KEY_FIELD in record or EVENT_TIME_FIELD in record
        first_fields = first_fields or sorted(record)
    times, missing_time = clock.finish()
    if not values:
        raise UserError(f"{path}: the array holds no call records")
    if not calls_seen:  # another JSON array (radio_code.json): its records would go out as junk calls
        raise UserError(f"{path}: not a calls file: none of its {len(values)} records has a {KEY_FIELD} or a "
                        f"{EVENT_TIME_FIELD} (the first has: {', '.join(first_fields) or 'no fields'})")
    indices = list(range(len(values)))
    if order == "event-time":
        indices.reverse()  # newest-first file: reversed it is already (almost) sorted, which timsort loves
        indices.sort(key=_sort_key(times))
    elif order != "file":
        raise UserError(f"unknown order {order!r} (event-time or file)")
    indices = indices[skip:]
    if limit is not None:
        indices = indices[:limit]
    return Calls(keys, values, times, indices, missing_time)


def _sort_key(times: array):
    """Records without an event time keep the place of the record before them (in the file)."""
    filled = array("d", times)
    previous = float("-inf")
    for i in range(len(filled) - 1, -1, -1):  # the file is newest-first: "before" means later index
        if filled[i] != filled[i]:
            filled[i] = previous
        else:
            previous = filled[i]
    return filled.__getitem__


def load_radio_codes(path: str | Path) -> dict[str, str]:
    """Disposition code to description, from the pretty-printed radio_code.json array."""
    try:
        with open_text(path) as text:
            rows = json.load(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON ({error.msg})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "disposition_code" in r for r in rows):
        raise UserError(f"{path}: expected a JSON array of {{disposition_code, description}} objects")
    return {str(r["disposition_code"]): r.get("description") for r in rows}
