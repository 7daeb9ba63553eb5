"""The two files the Spark side reads with Spark: radio_code.json (the job and the batch baseline) and the
calls file itself (the batch baseline), in the shapes transforms.py expects."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from .transforms import CORRUPT, PARSE_SCHEMA, validate_calls

RADIO_CODE_SCHEMA = "disposition_code string, description string"


def read_radio_codes(spark, path: str) -> DataFrame:
    """radio_code.json is a pretty-printed array: it needs multiLine, or every row is corrupt."""
    return spark.read.schema(RADIO_CODE_SCHEMA).option("multiLine", True).json(path)


def calls_from_file(spark, path: str) -> DataFrame:
    """The calls file read as a batch, in parse_calls' shape (no Kafka coordinates): for the batch job."""
    records = spark.read.schema(PARSE_SCHEMA).option("multiLine", True).option(
        "columnNameOfCorruptRecord", CORRUPT).json(path)
    return validate_calls(records.select(
        F.lit(None).cast("binary").alias("value"), F.lit(None).cast("int").alias("partition"),
        F.lit(None).cast("long").alias("offset"), F.lit(None).cast("timestamp").alias("kafka_timestamp"),
        F.lit(None).cast("string").alias("json_reason"),
        F.struct(*[F.col(f.name) for f in PARSE_SCHEMA.fields]).alias("call")))
