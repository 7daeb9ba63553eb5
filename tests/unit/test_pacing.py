"""Pacing: the producer sleeps only to keep a rate or an event-time speedup, never at max speed."""

from sfcrime.producer import Pacer, Pacing


class FakeClock:
    def __init__(self):
        self.now = 100.0
        self.slept = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(round(seconds, 6))
        self.now += seconds


def run(pacing, event_times, work_s=0.0):
    fake = FakeClock()
    pacer = Pacer(pacing, sleep=fake.sleep, clock=fake.clock)
    sent_at = []
    for i, t in enumerate(event_times):
        pacer.wait(i, t)
        sent_at.append(fake.now - 100.0)
        fake.now += work_s
    return sent_at, fake.slept


def test_max_speed_never_sleeps():
    sent_at, slept = run(Pacing(), [0, 3600, 7200])
    assert slept == [] and sent_at == [0, 0, 0]


def test_rate_spaces_messages_evenly():
    sent_at, _ = run(Pacing(rate=4), [0] * 5)
    assert sent_at == [0, 0.25, 0.5, 0.75, 1.0]


def test_rate_does_not_sleep_when_behind_schedule():
    sent_at, slept = run(Pacing(rate=10), [0] * 3, work_s=0.5)
    assert slept == [] and sent_at == [0, 0.5, 1.0]


def test_speedup_replays_event_time_faster():
    # calls at 0, 60 and 3600 s of event time, replayed 60x faster: 0, 1 and 60 s of wall time
    sent_at, _ = run(Pacing(speedup=60), [1000.0, 1060.0, 4600.0])
    assert sent_at == [0, 1.0, 60.0]


def test_speedup_sends_records_without_event_time_at_once():
    sent_at, _ = run(Pacing(speedup=60), [1000.0, float("nan"), 1060.0])
    assert sent_at == [0, 0, 1.0]


def test_a_paced_replay_says_how_long_it_takes_and_where_it_is_in_event_time():
    from array import array

    from sfcrime.dataset import Calls
    from sfcrime.producer import replay_note, replay_plan

    start = 1538496660.0  # 2018-10-02 09:11 PDT, the file's first call
    end = start + 90 * 86400
    calls = Calls(keys=[b"1", b"2", b"3"], values=[b"{}"] * 3, event_times=array("d", [start, float("nan"), end]),
                  order=[0, 1, 2])
    assert replay_plan(calls, Pacing(speedup=3600)) == "replaying 90 days of calls at 3600x event time: about 36 minutes"
    assert replay_plan(calls, Pacing(rate=2)) == "replaying 3 calls at 2 a second: about 2 s"
    assert replay_plan(calls, Pacing()) is None
    halfway = start + 45 * 86400
    assert replay_note(halfway, end, Pacing(speedup=3600)) == "at 2018-11-16 08:11 PST, 18 minutes left"
    assert replay_note(halfway, None, Pacing()) is None
