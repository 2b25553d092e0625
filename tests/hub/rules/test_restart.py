"""Serialise the state mid-alert and mid-pending, restore, continue: nothing lost, nothing twice."""

from __future__ import annotations

import json
from datetime import timedelta

from hypothesis import given, settings, strategies as st

from hub.rules.engine import AlertEngine, evaluate, initial_state
from hub.rules.observations import ButtonPress, Now, StaffAck, Tick

from .sim import Sim, absent, belt, empty, reading, wall

M = 60.0


def restart(sim: Sim, down_s: float, mono0: float = 5.0) -> Sim:
    """Persist as JSON, 'reboot' (monotonic restarts near 0), restore after ``down_s``."""
    saved = json.loads(json.dumps(sim.engine.state))
    new = Sim(sim.start, params=sim.params, tick_s=sim.tick_s,
              engine=AlertEngine(sim.params, state=saved))
    new.t = sim.t + down_s
    new.mono0 = mono0 - new.t            # monotonic = 5 s after boot at the restart
    new.events, new.panels = sim.events, sim.panels
    return new


def raised(sim, rule):
    return [t for t, e in sim.of("alert.raised", rule)]


def test_pending_bed_exit_still_fires_after_restart():
    sim = Sim(wall(22), tick_s=5).run(belt(0, 20 * M, reading, 5) + belt(20 * M, 40 * M, empty, 5),
                                      40 * M)
    assert raised(sim, "night_bed_exit") == []
    sim = restart(sim, down_s=5 * M)                      # down 40..45 min
    sim.run(belt(45 * M, 70 * M, empty, 5), 70 * M)
    assert raised(sim, "night_bed_exit") == [50 * M]      # 30 min after the exit, downtime counted


def test_condition_true_before_restart_fires_on_the_first_step():
    sim = Sim(wall(22), tick_s=5).run(belt(0, 20 * M, reading, 5) + belt(20 * M, 45 * M, empty, 5),
                                      45 * M)
    sim = restart(sim, down_s=15 * M)                     # back at 60 min: 40 min out of bed
    sim.run(belt(60 * M, 61 * M, empty, 5), 61 * M)
    assert raised(sim, "night_bed_exit") == [60 * M]


def test_active_alert_is_not_raised_twice_and_ack_still_works():
    sim = Sim(wall(14)).run([(10, ButtonPress("sos"))], 60)
    alert_id = sim.of("alert.raised", "sos")[0][1].data["alert_id"]
    sim = restart(sim, down_s=30)
    first = sim.engine.handle(Tick(), sim.now())
    assert any(getattr(a, "led", None) == "alert" for a in first), "panel shown again"
    sim.run([(100, ButtonPress("sos")), (120, StaffAck(alert_id, "nurse"))], 200)
    assert raised(sim, "sos") == [10]
    assert sim.of("alert.renotified", "sos")[0][1].data["alert_id"] == alert_id
    assert sim.of("alert.acknowledged", "sos")[0][1].data["alert_id"] == alert_id


def test_new_alert_ids_after_restart_do_not_collide():
    sim = Sim(wall(14)).run([(10, ButtonPress("sos"))], 20)
    first = sim.of("alert.raised", "sos")[0][1].data["alert_id"]
    sim.run([(30, StaffAck(first, "n"))], 40)
    sim = restart(sim, 10)
    sim.run([(60 * 61 + 100, ButtonPress("sos"))], 60 * 61 + 120)
    ids = [e.data["alert_id"] for _, e in sim.of("alert.raised", "sos")]
    assert len(ids) == 2 and len(set(ids)) == 2


def test_readings_stopping_across_a_restart_are_not_vitals_absent():
    sim = Sim(wall(2)).run(belt(0, 60, reading) + belt(60, 100, absent), 100)
    sim = restart(sim, down_s=5 * M)
    sim.run(belt(100 + 5 * M, 100 + 5 * M + 30, absent), 100 + 5 * M + 30)
    assert raised(sim, "vitals_absent") == []             # the run restarts after the gap
    assert [e.type for _, e in sim.of("alert.prealert", "vitals_absent")] == []


def test_wall_clock_going_back_across_a_restart_counts_nothing():
    sim = Sim(wall(22), tick_s=5).run(belt(0, 20 * M, reading, 5) + belt(20 * M, 30 * M, empty, 5),
                                      30 * M)
    saved = json.loads(json.dumps(sim.engine.state))
    eng = AlertEngine(None, state=saved)
    t_before = eng.state["t"]
    eng.handle(Tick(), Now(3.0, wall(21)))                # an unsynced clock, an hour behind
    assert eng.state["t"] == t_before


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0.5, 120), st.sampled_from(
    ["in", "out", "absent", "sos", "ok", "tick"])), max_size=40), st.integers(0, 39))
def test_evaluate_is_pure_and_restart_is_invisible(steps, cut):
    """Same observations, with or without a save/restore in between (no downtime): same events."""
    make = {"in": reading, "out": empty, "absent": absent, "sos": lambda: ButtonPress("sos"),
            "ok": lambda: ButtonPress("ok"), "tick": Tick}
    params = {}

    def run(cut_at):
        state, out, t = initial_state("p"), [], 0.0
        for i, (dt, kind) in enumerate(steps):
            t += dt
            if i == cut_at:
                state = AlertEngine(params, state=json.loads(json.dumps(state))).state
            before = json.dumps(state)
            new, actions = evaluate(state, make[kind](), Now(t, wall(22) + timedelta(seconds=t)),
                                    params)
            assert json.dumps(state) == before, "evaluate changed its input"
            state = new
            out += [(i, a.type, a.data.get("rule")) for a in actions if hasattr(a, "type")]
        return out

    assert run(None) == run(cut)


def test_a_state_saved_by_the_version_1_engine_is_migrated_and_keeps_its_pending_exit():
    """data/state_v1.json: saved by the single-module engine 20 min into a night exit."""
    from pathlib import Path

    saved = json.loads((Path(__file__).parent / "data" / "state_v1.json").read_text())
    assert saved["v"] == 1
    sim = Sim(wall(22), tick_s=5, engine=AlertEngine(None, state=saved))
    sim.t, sim.mono0 = 45 * M, 5.0 - 45 * M             # back 5 min later
    sim.run(belt(45 * M, 70 * M, empty, 5), 70 * M)
    assert raised(sim, "night_bed_exit") == [50 * M]      # 30 min after the true exit
    assert sim.engine.state["v"] == 2 and sim.engine.state["resident"]["in_bed"] is False
    ids = [e.data["alert_id"] for _, e in sim.of("alert.raised")]
    assert ids == ["sim-000001"]


def test_an_unreadable_saved_state_is_refused_with_a_clear_error():
    import pytest

    with pytest.raises(ValueError, match="version"):
        AlertEngine(None, state={"v": 99})
