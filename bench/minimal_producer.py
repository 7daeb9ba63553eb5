"""The baseline for the producer benchmark: the least a librdkafka producer of this file must do.

Read, parse, re-serialize, send, flush; no ordering, pacing, progress or accounting.
Usage: python bench/minimal_producer.py FILE BOOTSTRAP TOPIC
"""

import gzip
import json
import sys

from confluent_kafka import Producer

path, bootstrap, topic = sys.argv[1:4]
with gzip.open(path, "rt", encoding="utf-8") as f:
    records = json.load(f)
producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20, "batch.size": 1_000_000})
for record in records:
    value = json.dumps(record, separators=(",", ":")).encode()
    while True:
        try:
            producer.produce(topic, value, record["crime_id"].encode())
            break
        except BufferError:
            producer.poll(0.05)
assert producer.flush(60) == 0
