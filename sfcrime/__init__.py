"""sfcrime-stream: SF police calls for service through Kafka into Spark Structured Streaming.

The modules follow the data: dataset (read) -> producer (send) -> consumer (read back, verify)
-> stream (Spark: parse, validate, count) -> report (answers and charts).
"""

__version__ = "0.1.0"
