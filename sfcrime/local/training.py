"""The class-data archive's training run (local/class_archive.py, `make setup`): what the job does, on a few
calls, in a JVM that writes the classes it loaded to the archive when it exits.

Usage: python -m sfcrime.local.training ARCHIVE
"""

from __future__ import annotations

import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..config import DEFAULT_INPUT, DEFAULT_RADIO_CODES
from ..dataset import encode_record, iter_records, load_radio_codes
from .jars import connector_jar_paths, json_check_jar_paths
from ..stream import transforms as T
from ..baseline.batch import batch_counts
from ..stream.job import SPARK_DEFAULTS, build_stream
from ..stream.session import build_session


def exercise(spark, workdir: Path, calls: int = 3000) -> None:
    """What the job does, on a few calls: the batch job's file read, and the streaming job's plan (strict JSON
    check, dedupe in RocksDB, foreachBatch to Arrow and count_table), so the archive holds their classes."""
    sample = []
    for record in iter_records(DEFAULT_INPUT):
        sample.append(encode_record(record))
        if len(sample) >= calls:
            break
    (workdir / "calls.json").write_bytes(b"[" + b",\n".join(sample) + b"]")
    (workdir / "lines").mkdir()
    (workdir / "lines" / "calls.txt").write_bytes(b"\n".join(sample + [b"not json"]) + b"\n")
    # The batch job beside the streaming queries, in a thread of its own: both are mostly the JVM's first
    # class loading and code generation, on one core each (the run's part here: 17-20 s instead of 23-27 s).
    with ThreadPoolExecutor(1) as pool:
        batch = pool.submit(batch_counts, spark, str(workdir / "calls.json"), str(DEFAULT_RADIO_CODES))
        exercise_streams(spark, workdir)
        batch.result()


def exercise_streams(spark, workdir: Path) -> None:
    """The streaming plan over a folder of lines, once with each JSON check."""
    raw = T.rows_from_lines(spark.readStream.text(str(workdir / "lines")))
    descriptions = load_radio_codes(DEFAULT_RADIO_CODES)
    for jvm_check in (True, False):  # the JVM's JSON check and the Python workers' one
        if jvm_check and not T.jvm_json_check(spark):
            continue
        stream = build_stream(raw, descriptions, 3600, jvm_check)
        query = (stream.writeStream.foreachBatch(lambda batch, _: T.count_table(batch.toArrow()))
                 .option("checkpointLocation", str(workdir / f"checkpoint-{jvm_check}"))
                 .trigger(availableNow=True).start())
        query.awaitTermination()


def main(staging: Path) -> int:
    """The training run: a session whose JVM writes the archive to `staging` when it exits; wait for that,
    failed or not, so no JVM goes on writing after we have gone."""
    spark = build_session("sfcrime-class-archive", "local[*]", SPARK_DEFAULTS,
                          jars=connector_jar_paths() + json_check_jar_paths() or None, make_class_archive=staging)
    jvm = spark.sparkContext._gateway.proc  # it exits when its stdin closes, and writes the archive then
    try:
        with tempfile.TemporaryDirectory(prefix="sfcrime-training-") as workdir:
            exercise(spark, Path(workdir))
    finally:
        spark.stop()
        jvm.stdin.close()
        jvm.wait(timeout=600)
    return 0 if staging.is_file() else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
