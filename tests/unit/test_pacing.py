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
