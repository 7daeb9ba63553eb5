"""Read the topic back: print it like kafka-console-consumer, or verify it against the source file.

Verification reads every partition by assignment (no consumer group, so it cannot miss a partition to
a rebalance) up to the end offsets taken at start, and compares the topic with the file as a multiset:
each source record must arrive exactly as often as it stands in the file (the file repeats 4 calls).
"""

from __future__ import annotations

import gc
import json
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import repeat
from typing import TYPE_CHECKING

from .clients import open_consumer, read_columns
from .errors import TopicMissing
from .kafka_settings import KafkaSettings
from .terminal import discard_stdout
from .dataset import EVENT_TIME_FIELD, KEY_FIELD, encode_record, event_times, records_and_kinds
from .progress import Progress

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)


def format_message(record, pretty: bool) -> str:
    value = record.value.decode("utf-8", errors="replace") if record.value is not None else "null"
    if not pretty:
        return value
    try:
        body = json.dumps(json.loads(value), indent=2, ensure_ascii=False)
    except ValueError:
        body = value
    key = record.key.decode("utf-8", errors="replace") if record.key is not None else "null"
    return f"# partition {record.partition} offset {record.offset} key {key}\n{body}"


WAITING_NOTICE_S = 5.0


def print_messages(settings: KafkaSettings, from_beginning: bool, max_messages: int | None,
                   group_id: str | None, pretty: bool, idle_timeout_s: float | None, out=sys.stdout,
                   quiet: bool = False) -> int:
    """Print messages until max_messages, an idle timeout or Ctrl-C; return how many were printed.

    Like kafka-console-consumer it starts at the end unless from_beginning; unlike it, a wait with nothing
    printed says so (once, on stderr) rather than look like a hang."""
    printed, interrupted, waiting_told = 0, False, quiet
    with open_consumer(settings, group_id, from_beginning) as consumer:
        try:
            partitions = consumer.partitions()  # a missing topic is one line, also for a group
            if group_id:
                consumer.subscribe()
            else:
                consumer.assign(consumer.beginning_offsets(partitions) if from_beginning
                                else consumer.end_offsets(partitions))
            last = time.monotonic()
            while max_messages is None or printed < max_messages:
                records = consumer.poll(500 if max_messages is None else min(500, max_messages - printed), 0.5)
                if records:
                    last = time.monotonic()
                elif idle_timeout_s is not None and time.monotonic() - last > idle_timeout_s:
                    break
                elif not waiting_told and not printed and time.monotonic() - last > WAITING_NOTICE_S:
                    waiting_told = True
                    where = ("" if from_beginning or group_id else
                             " (this reads only what arrives from now on; --from-beginning reads what it holds)")
                    print(f"waiting for messages on topic {settings.topic!r}{where}; Ctrl-C stops",
                          file=sys.stderr, flush=True)
                for record in records:
                    out.write(format_message(record, pretty) + "\n")
                    printed += 1
                    if max_messages is not None and printed >= max_messages:
                        break
                out.flush()
        except KeyboardInterrupt:
            interrupted = True
        except BrokenPipeError:  # `| head` closed the pipe: a normal way to stop reading
            discard_stdout()
    print(f"Processed a total of {printed} messages", file=sys.stderr)
    if interrupted:
        raise KeyboardInterrupt  # exit 130, as kafka-console-consumer does
    return printed


@dataclass
class Verification:
    expected: int = 0
    received: int = 0
    missing: int = 0
    duplicated: int = 0
    unexpected: int = 0
    corrupt: int = 0
    out_of_order: int = 0
    seconds: float = 0.0
    read_seconds: float = 0.0
    per_partition: dict[int, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return self.received == self.expected and not (
            self.missing or self.duplicated or self.unexpected or self.corrupt or self.out_of_order)

    def lines(self) -> list[str]:
        verdict = "EXACT" if self.exact else "NOT EXACT"
        parts = ", ".join(f"p{p}={n:,}" for p, n in sorted(self.per_partition.items()) if n) or "the topic is empty"
        out = [
            f"verify: {verdict}: expected {self.expected:,}, received {self.received:,} ({parts}) in {self.seconds:.2f} s "
            f"(topic read in {self.read_seconds:.2f} s)",
            f"  missing {self.missing:,}, duplicated {self.duplicated:,}, unexpected {self.unexpected:,}, "
            f"corrupt {self.corrupt:,}, out of event-time order {self.out_of_order:,}",
        ]
        out += [f"  {example}" for example in self.examples]
        return out

    def note(self, text: str) -> None:
        if len(self.examples) < 10:
            self.examples.append(text)


@dataclass
class SourceIndex:
    """The source file, indexed for matching: each distinct record (its compact JSON) has a slot."""

    slot_of: dict[bytes, int]  # source value -> its slot in the arrays below
    expected: "np.ndarray"  # how often each slot's record stands in the file
    ranks: "np.ndarray"  # each slot's event time as a dense rank (equal times, equal rank); -1: no time
    ordered: list[str]  # each rank's call_date_time as written
    by_id: dict[str, bytes]  # crime_id -> its record's value, to tell a changed record from a foreign one


def index_source(input_path: str) -> SourceIndex:
    """Event time as the producer's clock reads it (the fall-back night's repeated hour included)."""
    import numpy as np

    slot_of: dict[bytes, int] = {}
    expected: list[int] = []
    stamps: list[tuple[object, object]] = []  # (crime_id, call_date_time) of each distinct record
    by_id: dict[str, bytes] = {}
    for record, text_only in records_and_kinds(input_path):
        value = encode_record(record, text_only)
        slot = slot_of.get(value)
        if slot is None:
            slot = slot_of[value] = len(expected)
            expected.append(0)
            stamps.append((record.get(KEY_FIELD), record.get(EVENT_TIME_FIELD)))
        expected[slot] += 1
        by_id[str(record.get(KEY_FIELD))] = value
    seconds, _ = event_times(stamps)
    label_of = {}
    for moment, (_, text) in zip(seconds, stamps):
        if moment == moment:  # not NaN
            label_of.setdefault(moment, text)
    rank_of = {moment: i for i, moment in enumerate(sorted(label_of))}
    return SourceIndex(slot_of, np.array(expected, dtype=np.int64),
                       np.array([rank_of.get(moment, -1) for moment in seconds], dtype=np.int64),
                       [label_of[moment] for moment in sorted(label_of)], by_id)


def verify(settings: KafkaSettings, input_path: str, progress: bool = True) -> Verification:
    """Compare the whole topic with the source file; see the module docstring for the rules.

    The per-message work is vectorised (numpy) so that reading and checking keeps up with librdkafka.
    """
    started = time.monotonic()
    source = index_source(input_path)
    result = Verification(expected=int(source.expected.sum()))
    gc.freeze()  # the source index is ours for good: full collections during the read need not walk it
    read_started = time.monotonic()
    received, per_partition = _read_topic(settings, source, result, progress)
    result.read_seconds = time.monotonic() - read_started
    result.per_partition = dict(per_partition)
    result.received = sum(per_partition.values())
    for value, slot in source.slot_of.items():
        want, got = int(source.expected[slot]), int(received[slot])
        if got < want:
            result.missing += want - got
            result.note(f"missing: crime_id {_field(value, KEY_FIELD)}")
        elif got > want:
            result.duplicated += got - want
            result.note(f"duplicated {got - want}x: crime_id {_field(value, KEY_FIELD)}")
    result.seconds = time.monotonic() - started
    return result


def _read_topic(settings: KafkaSettings, source: SourceIndex, result: Verification,
                progress: bool) -> tuple["np.ndarray", Counter[int]]:
    """Read every partition by assignment up to its end offset now: how often each source slot came, and
    how many messages each partition held. Corrupt, unexpected and out-of-order records go to `result`."""
    import numpy as np

    received = np.zeros(len(source.expected), dtype=np.int64)
    per_partition: Counter[int] = Counter()
    with open_consumer(settings) as consumer:
        try:
            partitions = consumer.partitions()
        except TopicMissing as error:
            partitions = []
            result.note(f"{error}: every record is missing (an in-memory broker loses its topics on restart)")
        start = consumer.beginning_offsets(partitions)
        end = consumer.end_offsets(partitions)
        total = sum(end[p] - start[p] for p in partitions)
        last_rank: dict[int, int] = {}
        lookup = source.slot_of.get
        with Progress("verifying", total, enabled=progress) as bar:
            for columns in read_columns(consumer, start, end, on_batch=bar.advance, keys_and_times=False):
                n = len(columns.offsets)
                per_partition.update(columns.partitions)
                slots = np.fromiter(map(lookup, columns.values, repeat(-1, n)), dtype=np.int64, count=n)
                for i in np.flatnonzero(slots < 0):  # rare: not byte-identical to a source record
                    slot = _classify_unknown(columns.values[i] or b"", columns.partitions[i], columns.offsets[i],
                                             source.by_id, source.slot_of, result)
                    slots[i] = -1 if slot is None else slot
                known = slots >= 0
                received += np.bincount(slots[known], minlength=len(received))
                batch_ranks = np.where(known, source.ranks[np.where(known, slots, 0)], -1)
                _check_order(np.asarray(columns.partitions), np.asarray(columns.offsets), batch_ranks,
                             source.ordered, last_rank, result)
    return received, per_partition


def _check_order(parts, offsets, batch_ranks, ordered: list[str], last_rank: dict[int, int],
                 result: Verification) -> None:
    """Count calls older than the call before them in the same partition (records without a time skipped)."""
    import numpy as np

    for partition in np.unique(parts):
        mask = (parts == partition) & (batch_ranks >= 0)
        sequence = batch_ranks[mask]
        if not len(sequence):
            continue
        partition = int(partition)
        previous = last_rank.get(partition)
        if previous is not None:
            sequence = np.concatenate(([previous], sequence))
        late = np.flatnonzero(np.diff(sequence) < 0)
        if len(late):
            result.out_of_order += len(late)
            at = offsets[mask]
            shift = 1 if previous is not None else 0
            for i in late[:10]:
                result.note(f"out of order: partition {partition} offset {at[i + 1 - shift]} "
                            f"({ordered[sequence[i + 1]]} after {ordered[sequence[i]]})")
        last_rank[partition] = int(sequence[-1])


def _field(value: bytes, name: str) -> str | None:
    """A string field from a compact JSON value without parsing all of it."""
    marker = f'"{name}":"'.encode()
    at = value.find(marker)
    if at < 0:
        return None
    start = at + len(marker)
    end = value.find(b'"', start)
    return value[start:end].decode("utf-8", errors="replace") if end > 0 else None


def _classify_unknown(value: bytes, partition: int, offset: int, by_id, slot_of, result) -> int | None:
    """A value not byte-identical to a source record: the same call serialized otherwise, or corrupt."""
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        result.corrupt += 1
        result.note(f"corrupt: partition {partition} offset {offset} is not a JSON object")
        return None
    slot = slot_of.get(encode_record(parsed))
    if slot is not None:  # the same record with other spacing
        return slot
    if str(parsed.get(KEY_FIELD)) in by_id:
        result.corrupt += 1
        result.note(f"corrupt: crime_id {parsed.get(KEY_FIELD)} differs from the source "
                    f"(partition {partition} offset {offset})")
    else:
        result.unexpected += 1
        result.note(f"unexpected: crime_id {parsed.get(KEY_FIELD)} is not in the source "
                    f"(partition {partition} offset {offset})")
    return None
