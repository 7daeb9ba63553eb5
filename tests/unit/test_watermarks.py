"""A watermark per Kafka partition, the job's the smallest of them; idle partitions stop holding it back.

The rules (stream/watermarks.py) without Spark or a broker, and the results store keeping them with each
batch, so that a restart resumes them.
"""

import sqlite3

from sfcrime.results import ResultStore
from sfcrime.stream.watermarks import Observation, PartitionClock, holding_back, job_watermark, observe

HOUR = 3600
T0 = 1_541_404_800  # 2018-11-05 00:00 PST
IDLE = 60.0


def test_the_job_watermark_is_the_slowest_partitions_event_time_and_never_goes_back():
    clocks = observe({}, now=0, idle_timeout_s=IDLE, event_times={0: T0 + 5 * HOUR, 1: T0 + 2 * HOUR, 2: T0 + 9 * HOUR},
                     read_to={0: 10, 1: 10, 2: 10}, end_offsets={0: 20, 1: 20, 2: 20})
    assert job_watermark(clocks, None, HOUR) == T0 + HOUR  # partition 1 is hours behind the others
    assert holding_back(clocks) == 1
    # partition 1 catches up; partition 0 is now the slowest
    clocks = observe(clocks, now=1, idle_timeout_s=IDLE, event_times={1: T0 + 8 * HOUR}, read_to={1: 20},
                     end_offsets={0: 20, 1: 20, 2: 20})
    assert job_watermark(clocks, T0 + HOUR, HOUR) == T0 + 4 * HOUR and holding_back(clocks) == 0
    assert job_watermark(clocks, T0 + 6 * HOUR, HOUR) == T0 + 6 * HOUR  # never back


def test_a_partition_with_unread_messages_is_never_idle_however_long_it_waits():
    clocks = observe({}, now=0, idle_timeout_s=IDLE, event_times={0: T0, 1: T0 + 5 * HOUR},
                     read_to={0: 5, 1: 50}, end_offsets={0: 50, 1: 50})
    for now in (100, 1_000, 100_000):  # partition 0 is read slowly: 45 messages wait
        clocks = observe(clocks, now=now, idle_timeout_s=IDLE, end_offsets={0: 50, 1: 50})
        assert not clocks[0].idle and clocks[0].unread == 45
        assert job_watermark(clocks, None, HOUR) == T0 - HOUR  # it holds the watermark
    assert clocks[1].idle  # caught up and quiet


def test_an_empty_partition_holds_the_watermark_until_the_idle_timeout_and_no_sooner():
    clocks = observe({}, now=1000, idle_timeout_s=IDLE, event_times={0: T0 + 3 * HOUR, 1: T0 + 3 * HOUR},
                     read_to={0: 10, 1: 10}, end_offsets={0: 10, 1: 10, 2: 0})
    assert job_watermark(clocks, None, HOUR) is None and holding_back(clocks) == 2  # no event time from 2 yet
    clocks = observe(clocks, now=1000 + IDLE - 1, idle_timeout_s=IDLE, end_offsets={0: 10, 1: 10, 2: 0})
    assert job_watermark(clocks, None, HOUR) is None
    clocks = observe(clocks, now=1000 + IDLE, idle_timeout_s=IDLE, end_offsets={0: 10, 1: 10, 2: 0})
    # every partition is quiet now: the smallest event time of those that have one counts
    assert clocks[2].idle and job_watermark(clocks, None, HOUR) == T0 + 2 * HOUR


def test_an_idle_partition_stops_holding_the_watermark_while_others_move_and_rejoins_with_its_own_time():
    clocks = observe({}, now=0, idle_timeout_s=IDLE, event_times={0: T0, 1: T0}, read_to={0: 5, 1: 5},
                     end_offsets={0: 5, 1: 5})
    clocks = observe(clocks, now=30, idle_timeout_s=IDLE, event_times={1: T0 + 4 * HOUR}, read_to={1: 9},
                     end_offsets={0: 5, 1: 9})
    assert job_watermark(clocks, None, HOUR) == T0 - HOUR  # partition 0 is quiet, not yet idle
    clocks = observe(clocks, now=61, idle_timeout_s=IDLE, event_times={1: T0 + 5 * HOUR}, read_to={1: 12},
                     end_offsets={0: 5, 1: 12})
    assert clocks[0].idle and not clocks[1].idle
    assert job_watermark(clocks, T0 - HOUR, HOUR) == T0 + 4 * HOUR and holding_back(clocks) == 1
    # partition 0 gets a message: active at once (unread), with its own older event time; the watermark stays
    clocks = observe(clocks, now=62, idle_timeout_s=IDLE, end_offsets={0: 6, 1: 12})
    assert not clocks[0].idle and job_watermark(clocks, T0 + 4 * HOUR, HOUR) == T0 + 4 * HOUR
    assert holding_back(clocks) == 0


def test_without_kafkas_end_offsets_no_partition_is_taken_for_idle():
    clocks = observe({}, now=0, idle_timeout_s=IDLE, event_times={0: T0}, read_to={0: 5}, end_offsets={0: 5, 1: 0})
    clocks = observe(clocks, now=10_000, idle_timeout_s=IDLE, end_offsets=None)  # the broker did not answer
    assert not any(c.idle for c in clocks.values()) and job_watermark(clocks, None, HOUR) is None


def test_a_partition_added_later_joins_from_its_first_message():
    clocks = observe({}, now=0, idle_timeout_s=IDLE, event_times={0: T0 + 5 * HOUR}, read_to={0: 5},
                     end_offsets={0: 5})
    assert job_watermark(clocks, None, HOUR) == T0 + 4 * HOUR
    clocks = observe(clocks, now=1, idle_timeout_s=IDLE, end_offsets={0: 5, 1: 3})  # new partition, 3 unread
    assert holding_back(clocks) == 1 and job_watermark(clocks, T0 + 4 * HOUR, HOUR) == T0 + 4 * HOUR
    clocks = observe(clocks, now=2, idle_timeout_s=IDLE, event_times={0: T0 + 9 * HOUR, 1: T0 + 6 * HOUR},
                     read_to={0: 9, 1: 3}, end_offsets={0: 9, 1: 3})
    assert job_watermark(clocks, T0 + 4 * HOUR, HOUR) == T0 + 5 * HOUR


def test_the_store_keeps_each_partitions_clock_with_its_batch_and_a_restart_resumes_them(tmp_path):
    def batch(events: dict[int, int]):
        return {"crime_type_windows": [{"window_start": t - t % HOUR, "crime_type": "Theft", "count": 1}
                                       for t in events.values()],
                "partition_event_times": [{"partition": p, "event_s_max": t} for p, t in events.items()],
                "total": [{"count": len(events), "kafka_us_min": 1e15, "kafka_us_max": 1e15, "kafka_us_avg": 1e15,
                           "event_s_max": max(events.values())}]}

    store = ResultStore(tmp_path)
    store.check_settings({"window_seconds": str(HOUR), "pane_seconds": str(HOUR), "watermark_seconds": str(HOUR)})
    seen = Observation(now=0, idle_timeout_s=IDLE, read_to={0: 10, 1: 1}, end_offsets={0: 10, 1: 10})
    assert store.write_batch(0, batch({0: T0 + 9 * HOUR, 1: T0 + 2 * HOUR}), observation=seen)
    assert store.watermark() == T0 + HOUR
    # partition 1's next call, 7 hours behind partition 0: with one watermark for all it was late
    seen = Observation(now=1, idle_timeout_s=IDLE, read_to={0: 10, 1: 10}, end_offsets={0: 10, 1: 10})
    assert store.write_batch(1, batch({1: T0 + 2 * HOUR + 30 * 60}), observation=seen)
    store.close()

    store = ResultStore(tmp_path)  # a restart
    assert store.watermark() == T0 + HOUR + 30 * 60
    assert {p: c.event_time for p, c in store.partition_clocks().items()} == {0: T0 + 9 * HOUR, 1: T0 + 2.5 * HOUR}
    assert not store.write_batch(1, batch({1: T0 + 8 * HOUR}))  # the re-run of batch 1 moves nothing
    assert store.watermark() == T0 + HOUR + 30 * 60
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM revisions").fetchone() == (0,)
    # both caught up; partition 1 stays quiet, partition 0 gets new messages
    before, after = store.observe_partitions(Observation(now=30, idle_timeout_s=IDLE, end_offsets={0: 12, 1: 10}))
    assert before == after == T0 + HOUR + 30 * 60  # not idle yet
    before, after = store.observe_partitions(Observation(now=IDLE, idle_timeout_s=IDLE, end_offsets={0: 12, 1: 10}))
    assert store.partition_clocks()[1].idle and not store.partition_clocks()[0].idle
    assert after == T0 + 8 * HOUR  # partition 0 alone holds it now
    store.close()


def test_clocks_read_back_as_they_were_written():
    clock = PartitionClock(3, T0, 7, 9, 12.5, True)
    assert clock.unread == 2 and PartitionClock(0).unread is None


def test_no_window_is_final_while_a_partition_has_given_no_event_time_though_the_others_have(tmp_path):
    """The stream's front alone (the newest event time of any partition) was the watermark before: with an
    empty partition still counting, a reader must see no watermark and no final window."""
    from sfcrime.answers import answers

    store = ResultStore(tmp_path)
    store.check_settings({"window_seconds": str(HOUR), "pane_seconds": str(HOUR), "watermark_seconds": str(HOUR),
                          "window": "1 hour", "slide": "1 hour"})
    batch = {"crime_type_windows": [{"window_start": T0, "crime_type": "Theft", "count": 1},
                                    {"window_start": T0 + 5 * HOUR, "crime_type": "Theft", "count": 1}],
             "locations": [{"address": "A St", "count": 2}],
             "partition_event_times": [{"partition": 0, "event_s_max": T0 + 5 * HOUR}],
             "total": [{"count": 2, "kafka_us_min": 1e15, "kafka_us_max": 1e15, "kafka_us_avg": 1e15,
                        "event_s_max": T0 + 5 * HOUR}]}
    store.write_batch(0, batch, observation=Observation(now=0, idle_timeout_s=IDLE, read_to={0: 2},
                                                        end_offsets={0: 2, 1: 0}))
    assert store.watermark() is None
    store.close()
    result = answers(tmp_path)
    assert result["watermark"] is None and result["windows"]["final"] == 0 and result["windows"]["open"] == 2
    assert result["pipeline"]["watermark_held_by"] == 1 and result["pipeline"]["idle_partitions"] == []
