"""The interface every Kafka client here implements, and what is built on it alone.

Callers see only these classes: a producer that sends, polls for acks and flushes; a consumer that reads a
topic by assignment (or in the group it was opened with); an admin that asks about topics, offsets and groups
without reading a message. All are context managers that close the client. Implementation names one
library's three, for clients.implementation(), the one place a library is chosen.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Callable, Iterator, NamedTuple

from ..errors import UserError
from ..kafka_settings import KafkaSettings


class Columns(NamedTuple):
    partitions: list[int]
    offsets: list[int]
    keys: list[bytes | None]
    values: list[bytes | None]
    timestamps_ms: list[int]


class Record(NamedTuple):
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


class DeliveryReport:
    """Counts what the broker acknowledged and what it refused; keeps the keys of the first failures."""

    def __init__(self) -> None:
        self.delivered = 0
        self.failed = 0
        self.errors: dict[str, int] = {}
        self.failed_keys: list[bytes] = []

    def ok(self) -> None:
        self.delivered += 1

    def fail(self, key: bytes | None, reason: str) -> None:
        self.failed += 1
        self.errors[reason] = self.errors.get(reason, 0) + 1
        if len(self.failed_keys) < 20:
            self.failed_keys.append(key or b"")


class Producer(ABC):
    """send() hands a message to the client; poll() serves acks; flush() waits for them and returns how many
    are unacknowledged. Leaving a `with` block closes the client: flush() first to account for what is in flight."""

    def __init__(self, settings: KafkaSettings, report: DeliveryReport) -> None:
        self.settings = settings
        self.report = report

    @abstractmethod
    def send(self, key: bytes, value: bytes) -> None: ...

    @abstractmethod
    def poll(self) -> None:
        """Serve delivery callbacks that are ready, without waiting."""

    @abstractmethod
    def flush(self, timeout_s: float) -> int: ...

    def close(self) -> None:
        pass

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class Consumer(ABC):
    """Reads by partition assignment (no group), or with subscribe() in the group it was opened with."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings

    @abstractmethod
    def partitions(self) -> list[int]:
        """The topic's partitions; TopicMissing when there is no such topic."""

    @abstractmethod
    def end_offsets(self, partitions: list[int]) -> dict[int, int]:
        """The offset after the last message of each partition."""

    @abstractmethod
    def beginning_offsets(self, partitions: list[int]) -> dict[int, int]: ...

    @abstractmethod
    def assign(self, offsets: dict[int, int]) -> None:
        """Read these partitions from these offsets, outside any group."""

    @abstractmethod
    def subscribe(self) -> None:
        """Read the topic in the consumer group given to open_consumer, from its committed offsets."""

    @abstractmethod
    def poll(self, max_records: int, timeout_s: float) -> list[Record]: ...

    @abstractmethod
    def commit_offsets(self, offsets: dict[int, int], metadata: str = "") -> None:
        """Commit these offsets (the next to read, per partition) to the consumer group the consumer was opened
        with, waiting for the broker's answer; a refusal raises UserError. The consumer need not read."""

    @abstractmethod
    def committed_offsets(self, partitions: list[int]) -> dict[int, tuple[int | None, str]]:
        """The group's committed offset (None if none) and its metadata, per partition."""

    def poll_columns(self, max_records: int, timeout_s: float, keys_and_times: bool = True) -> Columns:
        """Like poll, as column lists: no object per record, for the Spark source's hot loop.

        keys_and_times=False may leave the keys and timestamps empty, for readers that need neither."""
        records = self.poll(max_records, timeout_s)
        return Columns([r.partition for r in records], [r.offset for r in records], [r.key for r in records],
                       [r.value for r in records], [r.timestamp_ms for r in records])

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def read_columns(consumer: Consumer, start: dict[int, int], end: dict[int, int], batch: int = 20000,
                 stall_timeout_s: float = 30.0, on_batch: Callable[[int], None] | None = None,
                 keys_and_times: bool = True) -> Iterator[Columns]:
    """Yield Columns covering offsets [start, end) of each partition (in order within each), nothing else.

    Columns rather than a record at a time: this is the hot loop of the Spark source and of --verify.
    keys_and_times=False: keys and timestamps may come empty (--verify needs neither).
    """
    position = {p: s for p, s in start.items() if end.get(p, s) > s}
    if not position:
        return
    consumer.assign(dict(position))
    last_progress = time.monotonic()
    while position:
        # never ask for more than is left: consume(n) would wait out its timeout for the missing rest
        remaining = sum(end[p] - o for p, o in position.items())
        columns = consumer.poll_columns(min(batch, remaining), 0.1, keys_and_times)  # short: return what has come
        if not columns.offsets:
            if time.monotonic() - last_progress > stall_timeout_s:
                missing = ", ".join(f"partition {p} offsets {o}..{end[p]}" for p, o in sorted(position.items()))
                raise UserError(f"no data for {stall_timeout_s:g}s while reading {missing}: "
                                "the broker lost or withholds it")
            continue
        last_progress = time.monotonic()
        last = dict(zip(columns.partitions, columns.offsets))  # each partition's last offset in this batch
        if all(o < end[p] for p, o in last.items()):
            keep = columns  # the usual case: every record is wanted (offsets only grow within a partition)
        else:
            wanted = [i for i, (p, o) in enumerate(zip(columns.partitions, columns.offsets))
                      if position.get(p, -1) <= o < end[p]]
            keep = Columns(*([column[i] for i in wanted] if column else column for column in columns))
            last = dict(zip(keep.partitions, keep.offsets))
        for p, o in last.items():
            position[p] = o + 1
        for p in [p for p, o in position.items() if o >= end[p]]:
            del position[p]
        if keep.offsets:
            if on_batch:
                on_batch(len(keep.offsets))
            yield keep


class Admin(ABC):
    """The admin half, for settings.topic: topics and their partitions, creating and deleting, the cluster's
    and the topic's ids, offsets, and a consumer group's committed offsets (what Kafka's tools show as lag).

    Both libraries answer alike: listing, creating and deleting topics and reading a group's offsets fail in
    one UserError (no broker answers, or it refuses); a topic already there (create) or not there (delete) is
    no error; broker_count is 0 while no broker answers."""

    # Offsets are a consumer's question (librdkafka retries a partition without a leader there): one of the
    # library's own consumers, that joins no group, opened on first use and kept until close.
    offsets_reader: type[Consumer]

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._reader: Consumer | None = None

    def _offsets_reader(self) -> Consumer:
        if self._reader is None:
            self._reader = self.offsets_reader(self.settings)
        return self._reader

    @abstractmethod
    def topics(self) -> dict[str, int]:
        """{topic: partition count}; one clear line (UserError) when no broker answers."""

    @abstractmethod
    def create_topic(self, partitions: int) -> None:
        """Create settings.topic with the broker's default replication; one already there is left as it is.
        Returns once the topic is listed (_await_listed)."""

    def _await_listed(self) -> None:
        """The controller says yes before the broker's metadata lists the new topic: a listing right after
        missed it (CI, once, with kafka-python). Wait until it is listed, at most the settings' timeout."""
        deadline = time.monotonic() + self.settings.timeout_s
        while self.settings.topic not in self.topics() and time.monotonic() < deadline:
            time.sleep(0.05)

    @abstractmethod
    def delete_topic(self) -> None:
        """Delete settings.topic (in the background, as Kafka does); one not there is no error."""

    @abstractmethod
    def cluster_id(self) -> str | None: ...

    @abstractmethod
    def topic_id(self) -> str | None:
        """The topic's id (KIP-516) in Kafka's own base64 text, or None where the broker has none."""

    @abstractmethod
    def broker_count(self) -> int:
        """Brokers the metadata lists now; 0 while none answers (never waits long: a starting node is asked
        this in a loop)."""

    def end_offsets(self) -> dict[int, int]:
        """Each partition's end offset (the next to be written); TopicMissing when there is no such topic."""
        reader = self._offsets_reader()
        return reader.end_offsets(reader.partitions())

    def beginning_offsets(self) -> dict[int, int]:
        """Each partition's first offset still held (retention moves it on); TopicMissing as end_offsets."""
        reader = self._offsets_reader()
        return reader.beginning_offsets(reader.partitions())

    @abstractmethod
    def group_offsets(self, group_id: str) -> dict[int, int]:
        """The group's committed offsets on settings.topic, by partition (partitions it never committed left out)."""

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> "Admin":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class Implementation(NamedTuple):
    """One client library's three halves."""

    producer: type[Producer]
    consumer: type[Consumer]
    admin: type[Admin]
