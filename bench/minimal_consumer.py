"""The baseline for the consumer benchmark: read N messages of a topic by assignment with librdkafka.

Prints the seconds its read loop took (from creating the consumer to the last message), so it compares
with the topic-read phase of `consumer_server.py --verify`.
Usage: python bench/minimal_consumer.py BOOTSTRAP TOPIC PARTITIONS N
"""

import sys
import time

from confluent_kafka import Consumer, TopicPartition

bootstrap, topic, partitions, expected = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
started = time.monotonic()
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench", "enable.auto.commit": False})
consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
count = 0
while count < expected:
    count += sum(1 for m in consumer.consume(min(10000, expected - count), 5.0) if m.error() is None)
consumer.close()
print(f"read {count} in {time.monotonic() - started:.3f} s")
