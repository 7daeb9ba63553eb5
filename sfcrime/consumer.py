"""Read the topic back: print it like kafka-console-consumer, or verify it against the source file.

Verification reads every partition by assignment (no consumer group, so it cannot miss a partition to
a rebalance) up to the end offsets taken at start, and compares the topic with the file as a multiset:
each source record must arrive exactly as often as it stands in the file (the file repeats 4 calls).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from .clients import Consumer, open_consumer, read_range
from .config import KafkaSettings
from .dataset import EVENT_TIME_FIELD, KEY_FIELD, encode_record, iter_records
from .progress import Progress

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


def print_messages(settings: KafkaSettings, from_beginning: bool, max_messages: int | None,
                   group_id: str | None, pretty: bool, idle_timeout_s: float | None, out=sys.stdout) -> int:
    """Print messages until max_messages, an idle timeout or Ctrl-C; return how many were printed."""
    consumer = open_consumer(settings, group_id, from_beginning)
    printed = 0
    try:
        partitions = consumer.partitions()
        if group_id:
            consumer.subscribe(group_id, from_beginning)
        else:
            start = consumer.beginning_offsets(partitions) if from_beginning else consumer.end_offsets(partitions)
            consumer.assign(start)
        last = time.monotonic()
        while max_messages is None or printed < max_messages:
            records = consumer.poll(500 if max_messages is None else min(500, max_messages - printed), 0.5)
            if records:
                last = time.monotonic()
            elif idle_timeout_s is not None and time.monotonic() - last > idle_timeout_s:
                break
            for record in records:
                out.write(format_message(record, pretty) + "\n")
                printed += 1
                if max_messages is not None and printed >= max_messages:
                    break
            out.flush()
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `| head` closed the pipe: a normal way to stop reading
        sys.stderr.close()
    finally:
        consumer.close()
    print(f"Processed a total of {printed} messages", file=sys.stderr)
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
    per_partition: dict[int, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return self.received == self.expected and not (
            self.missing or self.duplicated or self.unexpected or self.corrupt or self.out_of_order)

    def lines(self) -> list[str]:
        verdict = "EXACT" if self.exact else "NOT EXACT"
        parts = ", ".join(f"p{p}={n:,}" for p, n in sorted(self.per_partition.items()))
        out = [
            f"verify: {verdict}: expected {self.expected:,}, received {self.received:,} ({parts}) in {self.seconds:.2f} s",
            f"  missing {self.missing:,}, duplicated {self.duplicated:,}, unexpected {self.unexpected:,}, "
            f"corrupt {self.corrupt:,}, out of event-time order {self.out_of_order:,}",
        ]
        out += [f"  {example}" for example in self.examples]
        return out

    def note(self, text: str) -> None:
        if len(self.examples) < 10:
            self.examples.append(text)


def verify(settings: KafkaSettings, input_path: str, progress: bool = True) -> Verification:
    """Compare the whole topic with the source file; see the module docstring for the rules."""
    started = time.monotonic()
    expected: Counter[bytes] = Counter()
    by_id: dict[str, bytes] = {}
    for record in iter_records(input_path):
        value = encode_record(record)
        expected[value] += 1
        by_id[str(record.get(KEY_FIELD))] = value
    result = Verification(expected=sum(expected.values()))

    consumer: Consumer = open_consumer(settings)
    try:
        partitions = consumer.partitions()
        start = consumer.beginning_offsets(partitions)
        end = consumer.end_offsets(partitions)
        total = sum(end[p] - start[p] for p in partitions)
        received: Counter[bytes] = Counter()
        last_time: dict[int, str] = {}
        with Progress("verifying", total, enabled=progress) as bar:
            for record in read_range(consumer, start, end, on_batch=bar.advance):
                result.received += 1
                result.per_partition[record.partition] = result.per_partition.get(record.partition, 0) + 1
                value = record.value or b""
                if value in expected:
                    received[value] += 1
                    event_time = _field(value, EVENT_TIME_FIELD)
                else:
                    value, event_time = _classify_unknown(value, record, by_id, expected, received, result)
                    if value is None:
                        continue
                if event_time is not None:
                    previous = last_time.get(record.partition)
                    if previous is not None and event_time < previous:
                        result.out_of_order += 1
                        result.note(f"out of order: partition {record.partition} offset {record.offset} "
                                    f"({event_time} after {previous})")
                    last_time[record.partition] = event_time
    finally:
        consumer.close()
    for value, count in expected.items():
        got = received.get(value, 0)
        if got < count:
            result.missing += count - got
            if len(result.examples) < 10:
                result.note(f"missing: crime_id {_field(value, KEY_FIELD)}")
        elif got > count:
            result.duplicated += got - count
            result.note(f"duplicated {got - count}x: crime_id {_field(value, KEY_FIELD)}")
    result.seconds = time.monotonic() - started
    return result


def _field(value: bytes, name: str) -> str | None:
    """A string field from a compact JSON value without parsing all of it."""
    marker = f'"{name}":"'.encode()
    at = value.find(marker)
    if at < 0:
        return None
    start = at + len(marker)
    end = value.find(b'"', start)
    return value[start:end].decode("utf-8", errors="replace") if end > 0 else None


def _classify_unknown(value: bytes, record, by_id, expected, received, result):
    """A value that is not byte-identical to a source record: the same call serialized otherwise, or corrupt."""
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        result.corrupt += 1
        result.note(f"corrupt: partition {record.partition} offset {record.offset} is not a JSON object")
        return None, None
    canonical = encode_record(parsed)
    if canonical in expected:  # the same record with other spacing
        received[canonical] += 1
        return canonical, parsed.get(EVENT_TIME_FIELD)
    if str(parsed.get(KEY_FIELD)) in by_id:
        result.corrupt += 1
        result.note(f"corrupt: crime_id {parsed.get(KEY_FIELD)} differs from the source "
                    f"(partition {record.partition} offset {record.offset})")
    else:
        result.unexpected += 1
        result.note(f"unexpected: crime_id {parsed.get(KEY_FIELD)} is not in the source "
                    f"(partition {record.partition} offset {record.offset})")
    return None, None
