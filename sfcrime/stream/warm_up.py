"""Before a live query reads its topic: the same plan, run on a few batches of generated calls and thrown away.

A live job's first minute was its slowest (issue 31): the JVM compiled Spark's hot code while the first real
calls waited. Here that happens first. Generated calls, one file a batch, go through the job's own plan
(strict JSON check, dedupe in RocksDB, descriptions, panes) and its sink's Spark job (Arrow to the driver,
count_table), with a checkpoint of their own, in a folder deleted after. Nothing reaches the results or
Kafka; the job's listener is not yet added, so no progress line or metric counts these batches. The query
is stopped only once it has run every file and waits for more: stopped mid-batch, Spark logs errors.
"""

from __future__ import annotations

import logging
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

from . import transforms as T
from .spark_errors import first_line

log = logging.getLogger(__name__)
QUERY_NAME = "sfcrime_warm_up"
ROWS_PER_BATCH = 2000  # a second of calls at the rate the latency targets are set for (README, "How fast")
TIMEOUT_S = 120.0  # a warm-up that has not finished by then is stopped where it is


def generated_calls(batches: int, folder: Path, dispositions: list[str]) -> None:
    """`batches` files of ROWS_PER_BATCH calls, a JSON object a line: every field the plan reads, a day of
    event times, a hundred crime types, the disposition codes the descriptions know."""
    codes = dispositions or ["ADV"]
    for b in range(batches):
        lines = []
        for i in range(b * ROWS_PER_BATCH, (b + 1) * ROWS_PER_BATCH):
            minute = i * 7 % 1440
            lines.append(f'{{"crime_id":"w{i}","original_crime_type_name":"Warm-up type {i % 100}",'
                         f'"call_date_time":"2018-10-02T{minute // 60:02d}:{minute % 60:02d}:00.000",'
                         f'"disposition":"{codes[i % len(codes)]}","address":"{i % 997} Block of Warm-up St",'
                         '"city":"San Francisco","state":"CA","agency_id":"1","address_type":"Premise Address"}')
        (folder / f"{b:04d}.json").write_text("\n".join(lines) + "\n")


def warm_up(spark, plan, batches: int, workdir: Path, dispositions: list[str], topic: str) -> int:
    """Run `plan` (rows shaped as the Kafka source's -> the job's stream) on `batches` batches of generated
    calls; how many ran. Ctrl-C stops it and raises KeyboardInterrupt."""
    if batches <= 0:
        return 0
    done = 0
    interrupted = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())  # pyspark's own would cancel mid-call

    def count(batch, _batch_id: int) -> None:
        nonlocal done
        if not interrupted.is_set():
            T.count_table(batch.toArrow())
        done += 1

    started = time.monotonic()
    folder = query = None
    try:
        folder = Path(tempfile.mkdtemp(prefix="warm-up-", dir=workdir))
        (folder / "calls").mkdir()
        generated_calls(batches, folder / "calls", dispositions)
        log.info("warming up on %d batches of generated calls before reading %s (--warm-up 0: none)", batches, topic)
        raw = T.rows_from_lines(spark.readStream.option("maxFilesPerTrigger", 1).text(str(folder / "calls")))
        query = (plan(raw).writeStream.queryName(QUERY_NAME).foreachBatch(count)
                 .option("checkpointLocation", str(folder / "checkpoint")).start())
        while done < batches and not interrupted.is_set() and time.monotonic() - started < TIMEOUT_S:
            if query.awaitTermination(0.05):
                break
        # foreachBatch has returned; the batch commits its state and offsets, then the query looks for files
        while query.isActive and (query.lastProgress or {}).get("batchId", -1) < done - 1 \
                and time.monotonic() - started < TIMEOUT_S:
            time.sleep(0.02)
    except Exception as error:  # only a head start: the job runs as well without it
        log.warning("the warm-up on generated calls failed, going on without it: %s", first_line(error))
    finally:
        if query is not None:
            try:
                query.stop()
            except Exception as error:  # noqa: BLE001 - a stop that fails leaves nothing to count
                log.debug("stopping the warm-up: %s", first_line(error))
        signal.signal(signal.SIGINT, previous)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    if interrupted.is_set():
        raise KeyboardInterrupt
    log.info("warmed up on %d batches of generated calls in %.1f s", done, time.monotonic() - started)
    return done
