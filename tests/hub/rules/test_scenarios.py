"""The scenario table: every rule fires at the right moment with the right priority, and its
near miss stays silent. Each scenario is replayed through the engine on a simulated clock.

Exact timing: each duration runs from the true start of its condition (the moment the resident
left, not the debounced exit), so an alert comes within one reading period of the configured
time, and a near miss one reading period short raises nothing. The in-bed debounce (30 s in,
60 s out) is the engine's own, as in the daemon.

``expect`` lists (event type, rule, priority, earliest s, latest s); every alert.raised,
alert.prealert and alert.escalated the replay produces must be expected (nothing extra fires).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from hub.rules.observations import ButtonPress, StaffAck, StaffClose, WatchObservation

from .sim import Restart, Sim, absent, belt, empty, one_field_per_frame, reading, wall

M, H = 60.0, 3600.0
P = 5.0                 # the reading period of the exact-timing rows
SHORT_VITALS = {"vitals_absent": {"prealert_after": 10.0, "alert_after": 20.0}}
STRICT = ("alert.raised", "alert.prealert", "alert.escalated")


@dataclass
class Scenario:
    name: str
    start: object
    steps: list
    until: float
    expect: list = field(default_factory=list)
    tick_s: float = 1.0
    params: dict | None = None


def vitals_then(t_switch, t_end, value, every=5.0, key="hr"):
    """Quiet in bed with normal vitals until t_switch, then ``key`` at ``value`` until t_end."""
    base = belt(0, t_switch, lambda: reading(), every)
    return base + belt(t_switch, t_end, lambda: reading(**{key: value}), every)


def night(in_bed_s, out_s, back=True, every=5.0):
    steps = belt(0, in_bed_s, lambda: reading(), every)
    steps += belt(in_bed_s, in_bed_s + out_s, empty, every)
    if back:
        steps += belt(in_bed_s + out_s, in_bed_s + out_s + 10 * M, lambda: reading(), every)
    return steps


def watch_still(t0, t1, every=60.0, **kw):
    return belt(t0, t1, lambda: WatchObservation(worn=True, moving=False, **kw), every)


SCENARIOS = [
    # --- sos
    Scenario("sos panel press raises P1 at once", wall(14), [(10, ButtonPress("sos"))], 30,
             [("alert.raised", "sos", 1, 10, 10)]),
    Scenario("sos second press never cancels", wall(14),
             [(10, ButtonPress("sos")), (20, ButtonPress("sos"))], 60,
             [("alert.raised", "sos", 1, 10, 10), ("alert.renotified", "sos", 1, 20, 20)]),
    Scenario("sos then OK is reported, not closed", wall(14),
             [(10, ButtonPress("sos")), (20, ButtonPress("ok"))], 60,
             [("alert.raised", "sos", 1, 10, 10), ("alert.resident_ok", "sos", 2, 20, 20)]),
    Scenario("sos from the watch", wall(14), [(5, WatchObservation(sos=True, worn=True))], 30,
             [("alert.raised", "sos", 1, 5, 5)]),
    Scenario("sos re-notified every 5 min until acknowledged", wall(14),
             [(0, ButtonPress("sos")), (11 * M, StaffAck("sim-000001", "nurse"))], 20 * M,
             [("alert.raised", "sos", 1, 0, 0), ("alert.renotified", "sos", 1, 300, 300),
              ("alert.renotified", "sos", 1, 600, 600),
              ("alert.acknowledged", "sos", 2, 660, 660)], tick_s=5),
    Scenario("sos acknowledged then closed by staff", wall(14),
             [(0, ButtonPress("sos")), (60, StaffAck("sim-000001", "nurse")),
              (120, StaffClose("sim-000001", "nurse"))], 200,
             [("alert.raised", "sos", 1, 0, 0), ("alert.acknowledged", "sos", 2, 60, 60),
              ("alert.resolved", "sos", 1, 120, 120)]),
    # --- fall
    Scenario("fall pre-alert then P1 after 45 s", wall(14),
             [(10, WatchObservation(fall=True, worn=True))], 90,
             [("alert.prealert", "fall", 2, 10, 10), ("alert.raised", "fall", 1, 55, 55)]),
    Scenario("near miss: fall cancelled by OK inside the window", wall(14),
             [(10, WatchObservation(fall=True, worn=True)), (40, ButtonPress("ok"))], 120,
             [("alert.prealert", "fall", 2, 10, 10), ("alert.cancelled", "fall", 2, 40, 40)]),
    Scenario("near miss: fall flag from a watch not worn", wall(14),
             [(10, WatchObservation(fall=True, worn=False))], 120, []),
    # --- night bed exit
    Scenario("night exit: P2 at 30 min, P1 at 60 min, resolved back in bed", wall(22),
             night(20 * M, 70 * M), 100 * M,
             [("alert.raised", "night_bed_exit", 2, 50 * M, 50 * M + 1),
              ("alert.escalated", "night_bed_exit", 1, 80 * M, 80 * M + 1),
              ("alert.resolved", "night_bed_exit", 1, 90 * M + 30, 90 * M + 31)]),  # enter debounce
    Scenario("near miss: 29 min out of bed against 30", wall(22), night(20 * M, 29 * M),
             70 * M, []),
    Scenario("near miss: in bed only 5 min before the exit", wall(22), night(5 * M, 45 * M),
             70 * M, []),
    Scenario("near miss: exit outside the night window", wall(15), night(20 * M, 45 * M),
             80 * M, []),
    # --- vitals absent
    Scenario("vitals absent: pre-alert at 60 s, P1 at 120 s", wall(2),
             belt(0, 60, reading) + belt(60, 300, absent), 300,
             [("alert.prealert", "vitals_absent", 2, 120, 120),
              ("alert.raised", "vitals_absent", 1, 180, 180)]),
    Scenario("near miss: 50 s without vitals against 60", wall(2),
             belt(0, 60, reading) + belt(60, 110, absent) + belt(110, 300, reading), 300, []),
    Scenario("vitals absent: breathing resumes in the pre-alert", wall(2),
             belt(0, 60, reading) + belt(60, 140, absent) + belt(140, 300, reading), 300,
             [("alert.prealert", "vitals_absent", 2, 120, 120),
              ("alert.cancelled", "vitals_absent", 2, 140, 140)]),
    Scenario("vitals absent: OK press in the pre-alert cancels", wall(2),
             belt(0, 60, reading) + belt(60, 170, absent) + [(150, ButtonPress("ok"))]
             + belt(170, 300, reading), 300,
             [("alert.prealert", "vitals_absent", 2, 120, 120),
              ("alert.cancelled", "vitals_absent", 2, 150, 150)]),
    Scenario("readings that stop are belt_offline, never vitals_absent", wall(2),
             belt(0, 60, absent), 40 * M,
             [("alert.raised", "belt_offline", 3, 59 + 30 * M, 60 + 30 * M)], tick_s=1),
    Scenario("near miss: a 29 min belt gap", wall(2),
             belt(0, 60, reading) + belt(60 + 29 * M, 40 * M, reading), 40 * M, []),
    # --- heart and breathing rate
    Scenario("hr_high: 125 bpm for 10 min raises P2", wall(1), vitals_then(5 * M, 20 * M, 125),
             20 * M, [("alert.raised", "hr_high", 2, 15 * M, 16 * M)]),
    Scenario("near miss: 125 bpm for 9 min against 10", wall(1),
             vitals_then(5 * M + 30, 14 * M + 30, 125) + belt(14 * M + 30, 30 * M, reading),
             30 * M, []),
    Scenario("hr_high urgent: 135 bpm for 10 min raises P1", wall(1),
             vitals_then(5 * M, 20 * M, 135), 20 * M,
             [("alert.raised", "hr_high", 1, 15 * M, 16 * M)]),
    Scenario("hr_high clears below 110 for 5 min", wall(1),
             vitals_then(5 * M, 16 * M, 125) + belt(16 * M, 30 * M, reading), 30 * M,
             [("alert.raised", "hr_high", 2, 15 * M, 16 * M),
              ("alert.resolved", "hr_high", 2, 21 * M, 22 * M)]),
    Scenario("near miss: 125 bpm while moving is never judged", wall(1),
             vitals_then(5 * M, 25 * M, 125)
             + [(t, reading(hr=125, motion="active", movement=80)) for t in range(300, 1500, 90)],
             25 * M, []),
    Scenario("near miss: 125 bpm out of bed is not judged", wall(1),
             belt(0, 25 * M, lambda: reading(in_bed=False, hr=125), 5), 25 * M, []),
    Scenario("hr_low: 38 bpm for 10 min raises P2", wall(1), vitals_then(5 * M, 20 * M, 38),
             20 * M, [("alert.raised", "hr_low", 2, 15 * M, 16 * M)]),
    Scenario("rr_high: 27 /min for 15 min raises P2", wall(1),
             vitals_then(5 * M, 25 * M, 27, key="rr"), 25 * M,
             [("alert.raised", "rr_high", 2, 20 * M, 21 * M)]),
    Scenario("rr_low: 7 /min for 5 min raises P1", wall(1),
             vitals_then(5 * M, 15 * M, 7, key="rr"), 15 * M,
             [("alert.raised", "rr_low", 1, 10 * M, 11 * M)]),
    Scenario("near miss: 7 /min for 4 min", wall(1),
             vitals_then(5 * M, 9 * M, 7, key="rr") + belt(9 * M, 20 * M, reading), 20 * M, []),
    # --- morning, day
    Scenario("not_up: still in bed at 09:00", wall(6), belt(0, 4 * H, reading, 30), 4 * H,
             [("alert.raised", "not_up", 2, 3 * H, 3 * H + 30)], tick_s=30),
    Scenario("near miss: up at 07:00 for 40 min, back to bed for a nap", wall(6),
             belt(0, 1 * H, reading, 30) + belt(1 * H, 1 * H + 40 * M, empty, 30)
             + belt(1 * H + 40 * M, 4 * H, reading, 30), 4 * H, [], tick_s=30),
    Scenario("stuck_in_bed: 16 h without a break", wall(10), belt(0, 17 * H, reading, 60),
             17 * H, [("alert.raised", "stuck_in_bed", 2, 16 * H, 16 * H + 60)], tick_s=60,
             params={"not_up": {"enabled": False}}),
    Scenario("near miss: 15 h in bed then up", wall(5),
             belt(0, 15 * H, reading, 60) + belt(15 * H, 17 * H, empty, 60), 17 * H, [],
             tick_s=60, params={"not_up": {"enabled": False}}),
    Scenario("daytime_stillness: 2 h still, 10 min prompt, P2", wall(9),
             belt(0, 3 * H, empty, 60) + watch_still(0, 3 * H), 3 * H,
             [("alert.prealert", "daytime_stillness", 2, 2 * H, 2 * H + 60),
              ("alert.raised", "daytime_stillness", 2, 2 * H + 10 * M, 2 * H + 11 * M)],
             tick_s=30),
    Scenario("near miss: daytime stillness answered with OK", wall(9),
             belt(0, 3 * H, empty, 60) + watch_still(0, 3 * H)
             + [(2 * H + 5 * M, ButtonPress("ok", "watch"))], 3 * H,
             [("alert.prealert", "daytime_stillness", 2, 2 * H, 2 * H + 60),
              ("alert.cancelled", "daytime_stillness", 2, 2 * H + 5 * M, 2 * H + 5 * M)],
             tick_s=30),
    Scenario("no_sign_of_life: empty bed, no watch, 12 h", wall(8), belt(0, 13 * H, empty, 60),
             13 * H, [("alert.raised", "no_sign_of_life", 1, 12 * H, 12 * H + 60)], tick_s=60),
    Scenario("near miss: 11 h then back in bed", wall(8),
             belt(0, 11 * H, empty, 60) + belt(11 * H, 13 * H, reading, 60), 13 * H, [],
             tick_s=60, params={"stuck_in_bed": {"enabled": False}}),
    # --- watch technical
    Scenario("watch_offline: not seen for 2 h in the day", wall(9),
             belt(0, 3 * H, empty, 60) + [(0, WatchObservation(worn=True, moving=True))], 3 * H,
             [("alert.raised", "watch_offline", 3, 2 * H, 2 * H + 30)], tick_s=30),
    Scenario("watch_battery_low under 10%", wall(9),
             [(10, WatchObservation(worn=True, moving=True, battery_pct=9))], 60,
             [("alert.raised", "watch_battery_low", 3, 10, 10)]),
    Scenario("near miss: watch battery at 11%", wall(9),
             [(10, WatchObservation(worn=True, moving=True, battery_pct=11))], 60, []),
    # --- exact timing from the true start (readings every P s)
    Scenario("night exit: P2 30 min after the true exit, not after the 60 s debounce", wall(22),
             night(20 * M, 40 * M, every=P), 65 * M,
             [("alert.raised", "night_bed_exit", 2, 50 * M, 50 * M + P)], tick_s=P),
    Scenario("near miss: back in bed one reading period before 30 min", wall(22),
             night(20 * M, 30 * M - P, every=P), 65 * M, [], tick_s=P),
    Scenario("night exit: P1 60 min after the true exit", wall(22),
             night(20 * M, 70 * M, every=P), 95 * M,
             [("alert.raised", "night_bed_exit", 2, 50 * M, 50 * M + P),
              ("alert.escalated", "night_bed_exit", 1, 80 * M, 80 * M + P)], tick_s=P),
    Scenario("near miss: back one reading period before the escalation", wall(22),
             night(20 * M, 60 * M - P, every=P), 95 * M,
             [("alert.raised", "night_bed_exit", 2, 50 * M, 50 * M + P)], tick_s=P),
    Scenario("vitals absent: pre-alert and P1 on time with readings every 5 s", wall(2),
             belt(0, 2 * M, reading, P) + belt(2 * M, 5 * M, absent, P), 5 * M,
             [("alert.prealert", "vitals_absent", 2, 3 * M, 3 * M + P),
              ("alert.raised", "vitals_absent", 1, 4 * M, 4 * M + P)], tick_s=1),
    Scenario("near miss: vitals absent one reading period short of the pre-alert", wall(2),
             belt(0, 2 * M, reading, P) + belt(2 * M, 3 * M - P, absent, P)
             + belt(3 * M - P, 5 * M, reading, P), 5 * M, [], tick_s=1),
    Scenario("alert_after shorter than the enter debounce: getting into bed raises nothing",
             wall(23), belt(0, M, empty, P) + one_field_per_frame(M, 10 * M), 10 * M, [],
             params=SHORT_VITALS),
    Scenario("alert_after shorter than the enter debounce: a real absence alerts on time",
             wall(23), one_field_per_frame(0, 2 * M) + belt(2 * M, 3 * M, absent, 1.0), 3 * M,
             [("alert.prealert", "vitals_absent", 2, 2 * M + 10, 2 * M + 11),
              ("alert.raised", "vitals_absent", 1, 2 * M + 20, 2 * M + 21)],
             params=SHORT_VITALS),
    Scenario("a hub restart mid-night: the pending exit fires 30 min after the true exit",
             wall(22), night(20 * M, 40 * M, every=P, back=False)[:-int(15 * M / P)]
             + [(45 * M, Restart(5 * M))] + belt(50 * M, 70 * M, empty, P), 70 * M,
             [("alert.raised", "night_bed_exit", 2, 50 * M, 50 * M + P)], tick_s=P),
    Scenario("a hub restart mid-night beside a sleeping resident raises nothing", wall(2),
             belt(0, 20 * M, reading, P) + [(20 * M, Restart(2 * M))]
             + one_field_per_frame(22 * M, 40 * M), 40 * M, [], tick_s=P,
             params=SHORT_VITALS),
    Scenario("stuck_in_bed: 16 h from the true entry", wall(10),
             belt(0, M, empty, 30) + belt(M, 17 * H + M, reading, 30), 17 * H + M,
             [("alert.raised", "stuck_in_bed", 2, 16 * H + M, 16 * H + M + 30)], tick_s=30,
             params={"not_up": {"enabled": False}}),
    # --- flapping
    Scenario("flapping battery becomes one alert with a count", wall(9),
             [(i * 2 * M, WatchObservation(worn=True, moving=True,
                                           battery_pct=9 if i % 2 == 0 else 30))
              for i in range(8)], 60 * M,
             [("alert.raised", "watch_battery_low", 3, 0, 0),
              ("alert.raised", "watch_battery_low", 3, 4 * M, 4 * M),
              ("alert.raised", "watch_battery_low", 3, 8 * M, 8 * M),
              ("alert.resolved", "watch_battery_low", 3, 2 * M, 2 * M),
              ("alert.resolved", "watch_battery_low", 3, 6 * M, 6 * M),
              ("alert.resolved", "watch_battery_low", 3, 44 * M, 44 * M)],
             params={"belt_offline": {"enabled": False}}),
]


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(sc: Scenario):
    sim = Sim(sc.start, params=sc.params, tick_s=sc.tick_s).run(sc.steps, sc.until)
    got = [(t, e) for t, e in sim.events]
    for type_, rule, prio, lo, hi in sc.expect:
        hits = [(t, e) for t, e in got if e.type == type_ and e.data.get("rule") == rule
                and e.priority == prio and lo <= t <= hi]
        assert hits, (f"expected {type_} {rule} P{prio} in [{lo}, {hi}] s; got "
                      f"{[(t, e.type, e.data.get('rule'), e.priority) for t, e in got]}")
    strict = [(t, e.type, e.data["rule"], e.priority) for t, e in got if e.type in STRICT]
    wanted = [x for x in sc.expect if x[0] in STRICT]
    assert len(strict) == len(wanted), f"unexpected alerts: {strict}"


def test_the_table_is_big_enough():
    assert len(SCENARIOS) >= 30
    rules = {r for s in SCENARIOS for _, r, *_ in s.expect}
    assert rules >= {"sos", "fall", "night_bed_exit", "vitals_absent", "hr_high", "hr_low",
                     "rr_high", "rr_low", "not_up", "stuck_in_bed", "daytime_stillness",
                     "no_sign_of_life", "belt_offline", "watch_offline", "watch_battery_low"}


def test_every_rule_belongs_to_exactly_one_family():
    from hub.rules import activity, buttons, night, params, vitals, watch
    families = [vitals.RULES, night.RULES, activity.RULES, buttons.RULES, watch.RULES]
    owned = [rule for family in families for rule in family]
    assert sorted(owned) == sorted(params.RULES_SCHEMA) and len(set(owned)) == len(owned)


def test_no_module_in_the_rules_package_is_over_300_lines():
    from pathlib import Path

    import hub.rules
    for path in Path(hub.rules.__file__).parent.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 300, path.name
