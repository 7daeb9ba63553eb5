"""The Kafka side: the broker's start, the producer (kafka_server.py) and the consumer (consumer_server.py
--verify), each beside a minimal librdkafka loop."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from .processes import PY, create_topic, environment, peak_rss_mb, side_by_side, timed


def bench_producer(bootstrap: str, input_path: str) -> dict:
    topic = lambda kind, i: f"bench-{kind}-{i}-{int(time.time() * 1000)}"  # noqa: E731
    kafka_env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap}

    def baseline(i):
        t = topic("minprod", i)
        create_topic(bootstrap, t)
        return timed([PY, "bench/minimal_producer.py", input_path, bootstrap, t])[0]

    def ours(i):  # as the loop: into a topic made beforehand, the whole command timed as a process
        t = topic("ours", i)
        create_topic(bootstrap, t)
        return timed([PY, "kafka_server.py", "--append", "--quiet", "--input", input_path, "--topic", t],
                     env=kafka_env)[0]

    result = {"librdkafka": side_by_side("producer", baseline, ours, target=1.1)}
    seconds, rss = peak_rss_mb([PY, "kafka_server.py", "--max-speed", "--quiet", "--input", input_path,
                                "--bootstrap-servers", bootstrap, "--topic", topic("mem", 0)])
    result["memory"] = {"peak_rss_mb": round(rss, 1), "seconds": round(seconds, 2), "target_mb": 200,
                        "met": rss <= 200}
    print(f"memory: full replay peaks at {rss:.0f} MB RSS (target <= 200 MB) {'MET' if rss <= 200 else 'NOT MET'}")
    seconds = timed([PY, "kafka_server.py", "--max-speed", "--quiet", "--client", "kafka-python", "--input",
                     input_path, "--topic", topic("kp", 0)], env=kafka_env)[0]
    result["kafka_python_s"] = round(seconds, 2)
    print(f"producer with --client kafka-python: {seconds:.2f} s "
          f"({seconds / result['librdkafka']['ours_median_s']:.1f}x the librdkafka default)")
    return result


def filled_topic(bootstrap: str, input_path: str) -> str:
    topic = f"bench-full-{int(time.time() * 1000)}"
    timed([PY, "kafka_server.py", "--max-speed", "--quiet", "--input", input_path, "--bootstrap-servers", bootstrap,
           "--topic", topic])
    return topic


def bench_consumer(bootstrap: str, input_path: str, topic: str) -> dict:
    def baseline(i):
        output = timed([PY, "bench/minimal_consumer.py", bootstrap, topic, "3", "199999"])[1]
        return float(output.split(" in ")[1].split(" s")[0])

    read_times: list[float] = []

    def ours(i):
        seconds, output = timed([PY, "consumer_server.py", "--verify", "--quiet", "--input", input_path,
                                    "--bootstrap-servers", bootstrap, "--topic", topic])
        read_times.append(float(output.split("topic read in ")[1].split(" s")[0]))
        return read_times[-1]

    result = side_by_side("consumer (topic read)", baseline, ours, rounds=5)  # short rounds, noisy: take more
    result["note"] = ("both sides time their read loop (consumer creation to last message); process start "
                      "and, for --verify, loading the source file are excluded")
    return result


def bench_broker(workdir: Path, rounds: int = 3) -> dict:
    """How long `python -m sfcrime broker`'s Kafka takes to answer metadata: first start (formats the
    storage) and restarts on the same data; alternately on Kafka's class archive (kafka_archive.py) and
    without it (SFCRIME_CLASS_ARCHIVE=off)."""
    from sfcrime.local.kafka import KafkaNode

    times: dict[str, dict[str, list[float]]] = {"archive": {"first": [], "restart": []},
                                                 "no_archive": {"first": [], "restart": []}}
    for i in range(rounds):
        for kind, measured in times.items():
            with environment(SFCRIME_CLASS_ARCHIVE="on" if kind == "archive" else "off"):
                data = workdir / f"broker-{kind}-{i}"
                for attempt in ("first", "restart"):
                    started = time.monotonic()
                    node = KafkaNode(data).start()
                    measured[attempt].append(round(time.monotonic() - started, 2))
                    node.stop()
        print(f"  broker round {i + 1}: first start {times['archive']['first'][-1]:.1f} s, restart "
              f"{times['archive']['restart'][-1]:.1f} s; without the class archive "
              f"{times['no_archive']['first'][-1]:.1f} s and {times['no_archive']['restart'][-1]:.1f} s", flush=True)

    def summary(measured: dict[str, list[float]]) -> dict:
        return {"first_start_s": measured["first"], "restart_s": measured["restart"],
                "first_start_median_s": statistics.median(measured["first"]),
                "restart_median_s": statistics.median(measured["restart"])}

    first, restarts = times["archive"]["first"], times["archive"]["restart"]
    result = {**summary(times["archive"]), "target_s": 20.0, "without_archive": summary(times["no_archive"])}
    result["met"] = max(first + restarts) <= 20.0
    print(f"broker ready: first start {result['first_start_median_s']:.1f} s, restart {result['restart_median_s']:.1f} s "
          f"(target <= 20 s) {'MET' if result['met'] else 'NOT MET'}; without the class archive "
          f"{result['without_archive']['first_start_median_s']:.1f} s and "
          f"{result['without_archive']['restart_median_s']:.1f} s", flush=True)
    return result
