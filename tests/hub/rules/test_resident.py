"""The resident's fused state in the engine, driven by a ManualClock: the in-bed debounce with
true change times, vitals.minute, None never counted as 0."""

from datetime import datetime, timezone

import pytest

from drivers.belt.reading import Reading
from hub.clock import ManualClock
from hub.rules.actions import Emit
from hub.rules.engine import AlertEngine
from hub.rules.observations import BeltReading, Now, Tick

START = datetime(2026, 11, 23, 22, 0, tzinfo=timezone.utc)
OWN = ("bed.entered", "bed.exited", "vitals.minute")


def tracker(enter_debounce_s=30.0, exit_debounce_s=60.0, bed_max_distance_m=None):
    return AlertEngine({"bed": {"enter_debounce": enter_debounce_s,
                                "exit_debounce": exit_debounce_s,
                                "bed_max_distance_m": bed_max_distance_m}}, seed="t")


class Driver:
    def __init__(self, engine):
        self.engine = engine
        self.clock = ManualClock(START, mono=1000.0)
        self.events = []

    @property
    def res(self):
        return self.engine.state["resident"]

    def _step(self, obs):
        actions = self.engine.handle(obs, Now(self.clock.monotonic(), self.clock.now()))
        self.events += [(a.type, dict(a.data)) for a in actions
                        if isinstance(a, Emit) and a.type in OWN]

    def feed(self, **fields):
        self._step(BeltReading(Reading(fields.pop("protocol", "micradar"), **fields)))

    def tick(self):
        self._step(Tick())

    def run(self, seconds, step=1.0, **fields):
        """Advance in steps, feeding the same reading each step (or only ticking)."""
        elapsed = 0.0
        while elapsed < seconds:
            self.clock.advance(step)
            elapsed += step
            if fields:
                self.feed(**dict(fields))
            else:
                self.tick()

    def types(self):
        return [e for e, _ in self.events]


def test_enter_and_exit_are_debounced():
    d = Driver(tracker(enter_debounce_s=30, exit_debounce_s=60))
    d.feed(in_bed=True)
    d.run(29)
    assert "bed.entered" not in d.types() and d.res['in_bed'] is None
    d.run(1)
    assert d.types().count("bed.entered") == 1 and d.res['in_bed'] is True
    # a short absence (shorter than exit debounce) is no exit
    d.feed(in_bed=False)
    d.run(59)
    d.feed(in_bed=True)
    d.run(120)
    assert "bed.exited" not in d.types()
    d.feed(in_bed=False)
    d.run(60)
    exits = [data for e, data in d.events if e == "bed.exited"]
    assert len(exits) == 1 and d.res['in_bed'] is False
    assert exits[0]["in_bed_s"] == pytest.approx(30 + 59 + 121, abs=1)
    assert exits[0]["detected_at"].startswith("2026-11-23T22:03:29")


def test_first_knowledge_of_an_empty_bed_is_not_an_exit():
    d = Driver(tracker(enter_debounce_s=10, exit_debounce_s=10))
    d.feed(in_bed=False)
    d.run(30)
    assert "bed.exited" not in d.types() and d.res['in_bed'] is False


def test_in_bed_derived_from_presence_and_distance_without_native_report():
    d = Driver(tracker(enter_debounce_s=10, exit_debounce_s=10, bed_max_distance_m=1.5))
    d.feed(protocol="tinyframe", distance_m=3.0)
    d.run(20, presence=True, protocol="tinyframe")
    assert d.res['in_bed'] is False and d.events == []   # present, but across the room
    d.feed(protocol="tinyframe", distance_m=0.9)
    d.run(9, presence=True, protocol="tinyframe")
    assert d.events == []
    d.run(2, presence=True, protocol="tinyframe")
    assert d.types() == ["bed.entered"]
    d.run(11, presence=False, protocol="tinyframe")
    assert d.types()[-1] == "bed.exited"


def test_native_in_bed_wins_over_presence():
    d = Driver(tracker(enter_debounce_s=5, exit_debounce_s=5))
    d.feed(in_bed=True)
    d.run(10, presence=False)      # radar loses presence but still says in bed
    assert d.res['in_bed'] is True and "bed.exited" not in d.types()


def test_vitals_minute_contents_and_none_is_never_zero():
    d = Driver(tracker(enter_debounce_s=0, exit_debounce_s=0))
    d.feed(in_bed=True)
    hrs = [60, 62, None, 70]
    for i in range(20):           # 60 s: HR every 3 s, one in four missing
        d.feed(heart_rate_bpm=hrs[i % 4] and float(hrs[i % 4]),
               resp_rate_per_min=None if i >= 10 else 14.0,
               movement_index=None if i % 2 else 10.0)
        d.clock.advance(3)
    d.run(1)
    [minute] = [data for e, data in d.events if e == "vitals.minute"]
    assert minute["hr_min_bpm"] == 60.0 and minute["hr_max_bpm"] == 70.0
    assert minute["hr_avg_bpm"] == pytest.approx(64.0, abs=0.1)      # zero would pull it to 48
    assert minute["rr_min_per_min"] == 14.0 and minute["rr_avg_per_min"] == 14.0
    assert minute["movement_avg"] == 10.0 and minute["movement_max"] == 10.0
    assert minute["in_bed_s"] == pytest.approx(60.0, abs=0.1)
    # each valid rate holds 10 s: the 6-s gaps (no HR and no RR) lose nothing
    assert minute["valid_s"] == pytest.approx(60.0, abs=0.1)
    assert minute["window_s"] == 60.0 and minute["start"].startswith("2026-11-23T22:00:00")


def test_minute_with_no_valid_rates_reports_none_and_counts_validity():
    d = Driver(tracker(enter_debounce_s=0, exit_debounce_s=0))
    d.feed(in_bed=True, heart_rate_bpm=60.0)
    d.run(60, presence=True)            # readings flow, but no rates after the first
    d.run(60, presence=True)
    minutes = [data for e, data in d.events if e == "vitals.minute"]
    assert len(minutes) == 2
    assert minutes[0]["valid_s"] == pytest.approx(10.0, abs=0.1)
    second = minutes[1]
    assert second["hr_avg_bpm"] is None and second["hr_min_bpm"] is None
    assert second["rr_avg_per_min"] is None and second["valid_s"] == 0.0
    assert second["in_bed_s"] == pytest.approx(60.0, abs=0.1)


def test_no_minutes_while_no_data_flows():
    d = Driver(tracker())
    d.feed(heart_rate_bpm=60.0)
    d.run(600)                         # ticks only: the belt went silent
    assert d.types().count("vitals.minute") == 1
    d.feed(heart_rate_bpm=61.0)
    d.clock.advance(61)
    d.tick()
    assert d.types().count("vitals.minute") == 2


def test_the_fused_state_holds_what_separate_frames_said():
    d = Driver(tracker(enter_debounce_s=0))
    d.feed(in_bed=True, heart_rate_bpm=58.0, resp_state="normal")
    d.clock.advance(3)
    d.feed(resp_rate_per_min=13.0, heart_rate_bpm=None)
    r = d.res
    assert r["in_bed"] is True and r["hr_bpm"] == 58.0 and r["rr_per_min"] == 13.0
    assert r["hr_t"] < r["rr_t"] and r["resp_state"] == "normal"


def test_vital_signs_are_evidence_of_in_bed_until_the_sensor_reports_the_bed():
    d = Driver(tracker(enter_debounce_s=30))
    d.feed(heart_rate_bpm=66.0)                 # no presence, no in-bed frame: a hub restarted
    d.run(29, heart_rate_bpm=66.0)
    assert d.res["in_bed"] is None
    d.run(1, heart_rate_bpm=66.0)
    assert d.res["in_bed"] is True and d.types() == ["bed.entered"]
    assert d.events[0][1]["detected_at"].startswith("2026-11-23T22:00:00")   # the true start
    d.feed(in_bed=False)                        # the sensor's own report wins from now on
    d.run(70, heart_rate_bpm=66.0)
    assert d.res["in_bed"] is False and d.types()[-1] == "bed.exited"


def test_exit_keeps_its_true_time():
    d = Driver(tracker(enter_debounce_s=0, exit_debounce_s=60))
    d.feed(in_bed=True)
    d.run(600, step=5.0, heart_rate_bpm=60.0)
    exit_mono = d.clock.monotonic()
    d.feed(in_bed=False)
    d.run(60, step=5.0, presence=False)
    assert d.res["in_bed"] is False
    assert d.engine.state["t"] - d.res["in_bed_since"] == pytest.approx(
        d.clock.monotonic() - exit_mono)
