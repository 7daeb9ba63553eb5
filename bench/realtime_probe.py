"""Does Spark's Real-Time Mode (trigger(realTime=...)) accept our query on the pinned PySpark? Each form of
the query is started with a real-time trigger on a small topic (51 messages: 45 distinct calls, 5 repeats,
one malformed) and the error Spark gives, if any, is written down.

Usage: python bench/realtime_probe.py BOOTSTRAP OUT.json
Expected output (PySpark 4.2.0): the job's plan is refused whatever the sink. foreachBatch is not in the sink
allowlist; with foreach, dropDuplicates (StreamingDeduplicateExec and its ShuffleExchangeExec) and the strict
JSON pandas UDF (ArrowEvalPythonExec) are not in the operator allowlist; only a plan with neither starts.
"""

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from confluent_kafka import Producer  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from sfcrime.clients import ensure_topic  # noqa: E402
from sfcrime.config import DEFAULT_RADIO_CODES
from sfcrime.kafka_settings import KafkaSettings
from sfcrime.dataset import load_radio_codes  # noqa: E402
from sfcrime.local.jars import connector_jar_paths  # noqa: E402
from sfcrime.stream import transforms as T  # noqa: E402
from sfcrime.stream.job import build_stream  # noqa: E402


class NoopWriter:
    """A ForeachWriter: open(partition, epoch) is where an exactly-once sink would check the epoch."""

    def open(self, partition_id, epoch_id):
        return True

    def process(self, row):
        pass

    def close(self, error):
        pass


def attempt(name, frame, sink, workdir: Path, run_s: float = 20.0) -> dict:
    writer = frame.writeStream.option("checkpointLocation", str(workdir / name)).outputMode("update")
    writer = {"foreachBatch": lambda w: w.foreachBatch(lambda batch, batch_id: batch.count()),
              "foreach": lambda w: w.foreach(NoopWriter()),
              "console": lambda w: w.format("console")}[sink](writer)
    try:
        query = writer.trigger(realTime="5 seconds").start()
        time.sleep(run_s)
        error = query.exception()
        query.stop()
        return {"query": name, "sink": sink, "started": True,
                "error": None if error is None else str(error).strip().splitlines()[0][:500]}
    except Exception as error:  # noqa: BLE001 - what Spark says is the result
        return {"query": name, "sink": sink, "started": False,
                "error": f"{type(error).__name__}: {str(error).strip().splitlines()[0][:500]}"}


def main() -> None:
    bootstrap, out = sys.argv[1:3]
    topic = f"realtime-probe-{int(time.time())}"
    ensure_topic(KafkaSettings(bootstrap_servers=bootstrap, topic=topic), 3)
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(50):
        call = {"crime_id": str(i % 45), "original_crime_type_name": "Probe",
                "call_date_time": f"2018-10-02T00:0{i % 10}:00.000"}
        producer.produce(topic, json.dumps(call).encode(), str(i % 45).encode())
    producer.produce(topic, b"not json", b"bad")
    producer.flush(30)
    spark = (SparkSession.builder.master("local[2]").config("spark.jars", ",".join(connector_jar_paths()))
             .config("spark.sql.shuffle.partitions", "2").config("spark.sql.session.timeZone", "America/Los_Angeles")
             .config("spark.ui.enabled", "false").getOrCreate())
    spark.sparkContext.setLogLevel("OFF")
    raw = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", bootstrap).option("subscribe", topic)
           .option("startingOffsets", "earliest").load())
    codes = load_radio_codes(DEFAULT_RADIO_CODES)
    plain = raw.select(F.from_json(F.col("value").cast("string"), T.CALL_SCHEMA)["crime_id"].alias("crime_id"))
    queries = [("the job's plan", build_stream(raw, codes, 3600), "foreachBatch"),
               ("the job's plan", build_stream(raw, codes, 3600), "foreach"),
               ("without dropDuplicates", T.with_descriptions(T.parse_calls(raw), codes), "foreach"),
               ("without the strict JSON UDF", plain.dropDuplicates(["crime_id"]), "foreach"),
               ("without either (from_json only)", plain, "foreach")]
    workdir = Path(tempfile.mkdtemp(prefix="realtime-probe-"))
    results = []
    for name, frame, sink in queries:
        results.append(attempt(name, frame, sink, workdir))
        print(json.dumps(results[-1]), flush=True)
    Path(out).write_text(json.dumps({"pyspark": spark.version, "trigger": "realTime='5 seconds'",
                                     "results": results}, indent=2))
    spark.stop()


if __name__ == "__main__":
    main()
