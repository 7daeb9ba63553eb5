"""The rows the job hands the results store, named and typed: the contract between the writer and the store.

A batch's counts come from transforms.count_table as lists of dicts (pyarrow's to_pylist); BatchCounts
names each list and the keys of its rows, so the job, the store and the tests agree on one spelling.
"""

from __future__ import annotations

from typing import NamedTuple, TypedDict


class WindowCount(TypedDict):
    window_start: int  # the pane's start, epoch seconds
    crime_type: str | None
    count: int


class LocationCount(TypedDict):
    address: str | None
    count: int


class DispositionCount(TypedDict):
    disposition: str | None
    description: str | None
    count: int


class HourCount(TypedDict):
    hour: int
    crime_type: str | None
    count: int


class DayCount(TypedDict):
    day: str
    crime_type: str | None
    count: int


class RepeatedHourCall(TypedDict):
    """A call in an hour a fall-back change repeats: placed in the right occurrence by the store."""
    rh_crime_id: str
    rh_time: int
    rh_type: str | None


class DeadLetter(TypedDict):
    dl_partition: int
    dl_offset: int
    dl_timestamp: int  # Kafka's timestamp, microseconds
    reason: str
    key: bytes | None
    value: bytes | None


class PartitionEventTime(TypedDict):
    partition: int
    event_s_max: float | None


class BatchTotal(TypedDict):
    count: int
    kafka_us_min: int | None
    kafka_us_max: int | None
    kafka_us_avg: float | None
    event_s_max: float | None


class BatchCounts(TypedDict, total=False):
    """Every count of one micro-batch. A missing list is an empty one; "total" is empty for an empty batch."""
    crime_type_windows: list[WindowCount]
    locations: list[LocationCount]
    dispositions: list[DispositionCount]
    hourly: list[HourCount]
    daily: list[DayCount]
    repeated_hour: list[RepeatedHourCall]
    dead_letters: list[DeadLetter]
    partition_event_times: list[PartitionEventTime]
    total: list[BatchTotal]


class ProgressRow(NamedTuple):
    """One StreamingQueryProgress, as the results' progress table keeps it."""
    batch_id: int
    at: str  # Spark's ISO timestamp of the batch's start
    input_rows: int
    input_rps: float | None
    processed_rps: float | None
    duration_ms: int | None
    watermark: float | None  # the job's event-time watermark after the batch, epoch seconds
    state_rows: int  # keys in the dedupe's state
    backlog: int | None  # messages in the topic not yet read
    duplicates: int  # messages the dedupe dropped
    durations: str | None  # Spark's durationMs and the results store's write (resultsWrite), JSON


class Loss(NamedTuple):
    """Messages Kafka deleted before the job read them: offsets [from_offset, to_offset) of a partition."""
    partition: int
    from_offset: int
    to_offset: int
