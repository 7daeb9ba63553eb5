"""Which query, topic and broker a job's results belong to, so that results are never added to across them.

Batch ids number a query's micro-batches from 0: results kept for one checkpoint mean nothing for another.
A topic that was deleted and created again (or a broker that lost it) starts its offsets again: what the
checkpoint says was read is not what the topic holds. Each is one clear error, unless `--start-over`.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from ..kafka_settings import KafkaSettings

if TYPE_CHECKING:
    from ..results import ResultsPlace

log = logging.getLogger(__name__)


def topic_identity(settings: KafkaSettings) -> dict[str, str]:
    """The broker's cluster id and the topic's id, where the broker says (the client seam asks)."""
    from ..clients import topic_identity as ask

    return ask(settings)


def checkpoint_query_id(checkpoint: Path) -> str | None:
    """The query id Spark wrote in the checkpoint's metadata file when the query first started."""
    try:
        return json.loads((checkpoint / "metadata").read_text().splitlines()[0]).get("id")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def checkpoint_offsets(checkpoint: Path, upto: int | None = None) -> dict[int, int] | None:
    """The end offsets of the latest batch (at most `upto`) in the checkpoint's offset log, per partition
    (either source's shape)."""
    directory = checkpoint / "offsets"
    batches = sorted((int(p.name) for p in directory.glob("[0-9]*") if p.name.isdigit()
                      and (upto is None or int(p.name) <= upto)), reverse=True) if directory.is_dir() else []
    for batch_id in batches:
        try:
            offsets = offsets_in((directory / str(batch_id)).read_text())
        except OSError:
            continue
        if offsets is not None:
            return offsets
    return None


def offsets_in(text: str) -> dict[int, int] | None:
    """An offset log file's end offsets per partition: v1, the batch's metadata, then one line per source
    ({partition: offset} from ours, {topic: {partition: offset}} from Spark's connector)."""
    try:
        offsets = json.loads(text.splitlines()[2])
    except (ValueError, IndexError):
        return None
    if isinstance(offsets, dict) and offsets and isinstance(next(iter(offsets.values())), dict):
        offsets = next(iter(offsets.values()))
    if not isinstance(offsets, dict):
        return None
    try:
        return {int(p): int(o) for p, o in offsets.items()}
    except (TypeError, ValueError):
        return None


def batch_end_offsets(checkpoint_uri: str, batch_id: int, spark=None) -> dict[int, int] | None:
    """Where batch `batch_id` reads each partition up to: Spark writes it in the offset log before the batch
    runs. A checkpoint on shared storage (hdfs://, s3a://) is read through Spark's own Hadoop file system.
    None when it can't be read: then no partition is taken for caught up."""
    if "://" not in checkpoint_uri:
        return checkpoint_offsets(Path(checkpoint_uri), upto=batch_id)
    if spark is None:
        return None
    try:
        jvm = spark._jvm
        path = jvm.org.apache.hadoop.fs.Path(f"{checkpoint_uri.rstrip('/')}/offsets/{batch_id}")
        stream = path.getFileSystem(spark._jsc.hadoopConfiguration()).open(path)
        try:
            return offsets_in(str(jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")))
        finally:
            stream.close()
    except Exception as error:  # noqa: BLE001 - only idleness waits for it
        log.debug("the offset log of batch %d was not read: %s", batch_id, error)
        return None


def checkpoint_damage(checkpoint: Path) -> str | None:
    """The first file of the checkpoint that is not as Spark wrote it, or None.

    Spark writes a Hadoop checksum beside every file of a local checkpoint (`.NAME.crc`: "crc\\0", the
    bytes per checksum, then a CRC-32 per chunk). A file truncated or changed since no longer matches it;
    a deleted one leaves its checksum behind. Resuming from either could count from a wrong place.
    Files still being written (`*.tmp`, a run killed mid-write) are Spark's to clean up.
    """
    import struct
    import zlib

    if not checkpoint.is_dir():
        return None
    for log_name in ("offsets", "commits"):  # Spark purges a log from its oldest end only: a gap is damage
        ids = sorted(int(p.name) for p in (checkpoint / log_name).glob("[0-9]*") if p.name.isdigit())
        gap = next((n for n in range(ids[0], ids[-1]) if n not in set(ids)), None) if ids else None
        if gap is not None:
            return f"{checkpoint / log_name / str(gap)} is missing (the log goes on after it)"
    for crc in sorted(checkpoint.rglob(".*.crc")):
        data = crc.with_name(crc.name[1:-len(".crc")])
        if data.name.endswith(".tmp"):
            continue
        where = data
        try:
            raw = crc.read_bytes()
            body = data.read_bytes()
        except FileNotFoundError:
            return f"{where} is missing (its checksum file is there)"
        except OSError as error:
            return f"{where} cannot be read: {error.strerror or error}"
        if raw[:4] != b"crc\0" or len(raw) < 8:
            return f"{crc.relative_to(checkpoint.parent)} is not a checksum file"
        per_chunk, = struct.unpack(">i", raw[4:8])
        expected = [struct.unpack(">I", raw[i:i + 4])[0] for i in range(8, len(raw) - 3, 4)]
        found = [zlib.crc32(body[i:i + per_chunk]) for i in range(0, len(body), max(1, per_chunk))]
        if found != expected:
            return f"{where} is truncated or changed (it no longer matches its checksum)"
    return None


def retention_losses(read_to: dict[int, int], beginning: dict[int, int]) -> list[tuple[int, int, int]]:
    """(partition, first offset lost, first offset still there) wherever the topic now begins after the
    offset the job has read to: messages deleted (retention, delete-records) before the job read them."""
    return [(p, read_to[p], beginning[p]) for p in sorted(read_to) if p in beginning and beginning[p] > read_to[p]]


def describe_losses(losses: list[tuple[int, int, int]]) -> str:
    shown = ", ".join(f"partition {p} offsets {lo:,} to {hi - 1:,} ({hi - lo:,} messages)" for p, lo, hi in losses)
    total = sum(hi - lo for _, lo, hi in losses)
    return shown + (f" ({total:,} messages in all)" if len(losses) > 1 else "")


def resume_point(checkpoint: Path) -> str | None:
    """Where a restarted query picks up: its last committed batch and the offsets read so far."""
    committed = [int(p.name) for p in (checkpoint / "commits").glob("[0-9]*") if p.name.isdigit()]
    if not committed:
        return None
    offsets = checkpoint_offsets(checkpoint, upto=max(committed)) or {}
    shown = ", ".join(f"partition {p} at {o:,}" for p, o in sorted(offsets.items()))
    return f"resuming after batch {max(committed)} (offsets read: {shown or 'unknown'})"


def offsets_gone_back(checkpoint: Path, end_offsets: dict[int, int]) -> str | None:
    """A partition that now ends before where the checkpoint says the query has read: the topic was recreated."""
    read = checkpoint_offsets(checkpoint)
    if not read:
        return None
    for partition, offset in sorted(read.items()):
        end = end_offsets.get(partition)
        if end is None:
            return f"partition {partition} is gone (the query read it to offset {offset})"
        if end < offset:
            return f"partition {partition} ends at offset {end}, but the query already read it to {offset}"
    return None


def start_over(output: Path, checkpoint: Path, place: "ResultsPlace") -> None:
    """--start-over: remove the results and the checkpoint, nothing else (and say so only if they were there)."""
    if checkpoint.is_dir() and any(checkpoint.iterdir()) and not (checkpoint / "metadata").exists():
        raise UserError(f"--start-over: {checkpoint} does not look like a Spark checkpoint (no metadata file); "
                        "not deleting it")
    removed = place.discard()
    if checkpoint.is_dir():
        removed = True
        shutil.rmtree(checkpoint)
    if removed:
        log.warning("--start-over: removed the results in %s and the checkpoint %s", place.describe(), checkpoint)
