"""The calls file read with Spark, in the shape transforms.py expects: for the batch baseline."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ..stream.transforms import CORRUPT, PARSE_SCHEMA, validate_calls

def calls_from_file(spark, path: str) -> DataFrame:
    """The calls file read as a batch, in parse_calls' shape (no Kafka coordinates): for the batch job."""
    records = spark.read.schema(PARSE_SCHEMA).option("multiLine", True).option(
        "columnNameOfCorruptRecord", CORRUPT).json(path)
    return validate_calls(records.select(
        F.lit(None).cast("binary").alias("value"), F.lit(None).cast("int").alias("partition"),
        F.lit(None).cast("long").alias("offset"), F.lit(None).cast("timestamp").alias("kafka_timestamp"),
        F.lit(None).cast("string").alias("json_reason"),
        F.struct(*[F.col(f.name) for f in PARSE_SCHEMA.fields]).alias("call")))
