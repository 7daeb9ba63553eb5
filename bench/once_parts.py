"""For `bench once-parts`: the full replay read once (availableNow) with Spark's connector, with parts of the
job's plan taken away, to see which part costs what against the batch job (issue 8's --once target).

  kafka-batch  the read below as a batch query (spark.read: no stream, no checkpoint): what the
               connector's read costs before any streaming
  read     the Kafka read and the counting, with Spark's lenient from_json only: the batch job's work
  check    + the strict JSON check in the JVM
  dedupe   + the dedupe of every crime_id in the RocksDB state store
  plan     the job's whole plan (build_stream); the real job adds its checks, the results store and
           its progress listener

Each run is a new process (JVM start included), as in `bench stream`, and prints the seconds and rows.
Usage: python bench/once_parts.py PART BOOTSTRAP TOPIC
"""

import json
import sys
import tempfile
import time

started = time.monotonic()

from pyspark.sql import functions as F  # noqa: E402

from sfcrime.config import DEFAULT_RADIO_CODES
from sfcrime.dataset import load_radio_codes  # noqa: E402
from sfcrime.local.jars import connector_jar_paths, json_check_jar_paths  # noqa: E402
from sfcrime.stream import transforms as T  # noqa: E402
from sfcrime.stream.job import SPARK_DEFAULTS, build_stream  # noqa: E402
from sfcrime.stream.session import build_session  # noqa: E402

PARTS = ("kafka-batch", "read", "check", "dedupe", "plan")


def part_of_plan(raw, part: str, descriptions):
    if part == "plan":
        return build_stream(raw, descriptions, 3600, True)
    if part in ("read", "kafka-batch"):
        rows = raw.select("value", "partition", "offset", F.col("timestamp").alias("kafka_timestamp"),
                          F.lit(None).cast("string").alias("json_reason"),
                          F.from_json(F.col("value").cast("string"), T.PARSE_SCHEMA).alias("call"))
        calls = T.validate_calls(rows)
    else:
        calls = T.parse_calls(raw, True)
        if part == "dedupe":
            calls = T.dedupe_calls(calls)
    return T.count_columns(T.with_descriptions(calls, descriptions), 3600)


def main(part: str, bootstrap: str, topic: str) -> int:
    spark = build_session("sfcrime-once-parts", "local[*]", SPARK_DEFAULTS,
                          jars=connector_jar_paths() + json_check_jar_paths())
    reader = spark.read if part == "kafka-batch" else spark.readStream
    raw = (reader.format("kafka").option("kafka.bootstrap.servers", bootstrap)
           .option("subscribe", topic).option("startingOffsets", "earliest").load())
    counts = part_of_plan(raw, part, load_radio_codes(DEFAULT_RADIO_CODES))
    rows = []
    if part == "kafka-batch":
        rows.append(T.count_table(counts.toArrow()))
    else:
        with tempfile.TemporaryDirectory(prefix="sfcrime-once-parts-") as checkpoint:
            query = (counts.writeStream.foreachBatch(lambda batch, _: rows.append(T.count_table(batch.toArrow())))
                     .option("checkpointLocation", checkpoint).trigger(availableNow=True).start())
            query.awaitTermination()
    spark.stop()
    print(json.dumps({"part": part, "rows": sum(c["total"][0]["count"] for c in rows if c["total"]),
                      "seconds": round(time.monotonic() - started, 2)}))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in PARTS:
        sys.exit(f"usage: python bench/once_parts.py {{{','.join(PARTS)}}} BOOTSTRAP TOPIC")
    sys.exit(main(*sys.argv[1:]))
