"""A whole night replayed through the engine produces one sleep.report with the right numbers."""

from __future__ import annotations

from hub.rules.observations import WatchObservation

from .sim import Sim, belt, empty, reading, wall

M, H = 60.0, 3600.0


def night_steps():
    steps = belt(0, 4 * H, lambda: reading(hr=60, rr=14), 30)            # 22:00-02:00
    steps += belt(4 * H, 4 * H + 10 * M, empty, 30)                      # a 10-min toilet visit
    steps += belt(4 * H + 10 * M, 9 * H, lambda: reading(hr=64, rr=15), 30)  # to 07:00
    steps += belt(9 * H, 10 * H + 30 * M, empty, 30)                     # up for the day
    # two large movements 40 s apart (one turn-over), one more an hour later
    for t in (1 * H + 5, 1 * H + 45, 2 * H + 5):
        steps.append((t, reading(hr=60, rr=14, motion="active", movement=80)))
    return steps


def test_a_night_gives_one_report_when_the_session_ends():
    sim = Sim(wall(22), tick_s=30).run(night_steps(), 10 * H + 30 * M)
    reports = sim.of("sleep.report")
    assert len(reports) == 1
    t, ev = reports[0]
    assert ev.priority == 3
    assert 10 * H <= t <= 10 * H + 60                   # 60 min after the final exit
    d = ev.data
    assert d["session_start"].startswith("2026-11-23T22:00")
    assert d["session_end"].startswith("2026-11-24T07:00")
    assert 528 <= d["time_in_bed_min"] <= 532           # 9 h minus the 10-min exit
    assert d["bed_exits"] == {"count": 1, "minutes": 10.0,
                              "periods": [{"at": d["bed_exits"]["periods"][0]["at"],
                                           "minutes": 10.0}]}
    assert d["turnovers"] == 2 and d["turnovers_source"] == "movement"
    assert d["heart_rate_bpm"]["min"] == 60 and d["heart_rate_bpm"]["max"] == 64
    assert 60 < d["heart_rate_bpm"]["avg"] < 64
    assert d["resp_rate_per_min"]["min"] == 14
    assert d["data_coverage"]["pct"] == 100.0
    assert 500 <= d["sleep_min"] <= 532 and d["sleep_latency_min"] == 0


def test_a_short_evening_nap_is_not_a_night():
    steps = belt(0, 15 * M, reading, 30) + belt(15 * M, 3 * H, empty, 30)
    sim = Sim(wall(19), tick_s=30).run(steps, 3 * H)
    assert sim.of("sleep.report") == []


def test_a_night_still_in_bed_at_noon_ends_at_noon_with_a_gap_counted():
    steps = belt(0, 3 * H, reading, 30) + belt(5 * H, 15 * H, reading, 30)   # a 2 h belt gap
    sim = Sim(wall(22), tick_s=60,
              params={"stuck_in_bed": {"enabled": False}, "not_up": {"enabled": False}}).run(
        steps + [(0, WatchObservation(worn=True, moving=True))], 15 * H)
    [(t, ev)] = sim.of("sleep.report")
    assert t == 14 * H                                   # 12:00 next day
    assert ev.data["end_reason"] == "latest end"
    assert 115 <= ev.data["data_coverage"]["no_data_minutes"] <= 121
    assert ev.data["data_coverage"]["pct"] == 100.0


def test_flapping_alert_resolves_once_with_its_count():
    sim = Sim(wall(9), params={"belt_offline": {"enabled": False}}).run(
        [(i * 2 * M, WatchObservation(worn=True, moving=True, battery_pct=9 if i % 2 == 0 else 30))
         for i in range(8)], 60 * M)
    last = sim.of("alert.resolved", "watch_battery_low")[-1][1]
    assert last.data["count"] == 4 and "stable" in last.data["reason"]
    third = sim.of("alert.raised", "watch_battery_low")[-1][1]
    assert third.data["details"]["flap_count"] == 3
