"""The latency benchmark's producer: the calls at a fixed rate for a fixed time, as long as it takes.

A live test must run longer than the file lasts at 10,000 calls/s (20 s), so after the last call it starts
over with every call made new: its crime_id gets a suffix (~1, ~2, ...) and its event time moves on by 13
weeks a pass (the file covers 90 days; whole weeks keep the weekdays), so each pass carries on in event
time where the one before ended. Event-time order, acks=all, idempotent, as kafka_server.py sends. Each
message's Kafka timestamp is its send time (CreateTime, set by librdkafka at produce()), which the job
keeps per batch, so latency is measured from the send.

At the end it writes a JSON summary to OUT: sent, seconds, and the independent answer (distinct calls,
calls per crime type) that the job's results must equal.

Messages are made before the clock starts (at 10,000 calls/s re-encoding would compete with the job for
CPU); with --lazy, as they are sent, so that a soak of any length holds one pass in memory, not all.
With --from=N the calls begin where an earlier run of N calls ended, in event time and in passes, so a
measured run carries on after its warm-up rather than going back in event time (its calls would be late).
Usage: python bench/paced_producer.py FILE BOOTSTRAP TOPIC RATE SECONDS OUT [TAG] [--lazy] [--from=N]
"""

import json
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from confluent_kafka import Producer  # noqa: E402

from sfcrime.dataset import load_calls  # noqa: E402

PASS_SHIFT = timedelta(weeks=13)
TICK_S = 0.005


def renewed(value: bytes, n: int, tag: str = "") -> tuple[bytes, dict]:
    """The call of pass `n`: a crime_id of its own, its event time `n` passes later. A tag (the warm-up's)
    gives every crime_id a suffix of its own, even in the first pass."""
    record = json.loads(value)
    if n or tag:
        record["crime_id"] = f"{record['crime_id']}~{tag}{n}"
        when = record.get("call_date_time")
        if when:
            record["call_date_time"] = (datetime.fromisoformat(when) + n * PASS_SHIFT).isoformat(timespec="milliseconds")
    return json.dumps(record, separators=(",", ":")).encode(), record


def main() -> None:
    lazy = "--lazy" in sys.argv
    first = int(next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--from=")), 0))
    args = [a for a in sys.argv[1:] if a != "--lazy" and not a.startswith("--from=")]
    path, bootstrap, topic, rate, seconds, out = args[:6]
    tag = args[6] if len(args) > 6 else ""
    rate, seconds = int(rate), float(seconds)
    calls = load_calls(path)
    values = [value for _, value, _ in calls]
    total = int(rate * seconds)
    failed = []
    types: Counter = Counter()
    seen: set = set()

    def made(sent: int) -> tuple[bytes, bytes]:
        value, record = renewed(values[sent % len(values)], sent // len(values), tag)
        crime_id = str(record.get("crime_id")).strip()
        if crime_id not in seen:
            seen.add(crime_id)
            types[record.get("original_crime_type_name") or "(none)"] += 1
        return crime_id.encode(), value

    numbers = range(first, first + total)
    messages = map(made, numbers) if lazy else [made(n) for n in numbers]
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "enable.idempotence": True,
                         "queue.buffering.max.kbytes": 65536})

    def on_delivery(error, _message) -> None:
        if error is not None:
            failed.append(str(error))

    # Paced in ticks: a message not yet due waits at least TICK_S, and those due meanwhile go out together.
    # Waiting for each message (0.5 ms apart at 2,000/s) spun: librdkafka's poll() takes whole milliseconds,
    # so poll(0.0005) returned at once, and the producer took half of a 2-core machine from the job it measures.
    # A message's Kafka timestamp is its produce() time, so latency is still measured from its own send.
    started, started_at = time.monotonic(), time.time()
    for sent, (key, value) in enumerate(messages):
        due = started + sent / rate
        now = time.monotonic()
        if now < due:
            producer.poll(0)
            time.sleep(max(due - now, TICK_S))
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.01)
    left = producer.flush(60)
    elapsed = time.monotonic() - started
    Path(out).write_text(json.dumps({"sent": total, "started_at": started_at, "seconds": round(elapsed, 2),
                                     "failed": len(failed) + left,
                                     "distinct_calls": len(seen), "crime_types": types}))
    if failed or left:
        sys.exit(f"{len(failed)} failed, {left} unacknowledged: {failed[:3]}")


if __name__ == "__main__":
    main()
