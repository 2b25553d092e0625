"""The simulated night decodes into the story it tells, through a pty and a recording."""

import asyncio
import os
import select
import tty
from datetime import datetime, timezone

import pytest

from drivers.belt import simulator as sim
from drivers.belt.decoder import make_decoder
from drivers.recording import read_recording
from hub.rules.actions import Emit
from hub.rules.engine import AlertEngine
from hub.rules.observations import BeltReading, Now

pytestmark = pytest.mark.timeout(30)


def bed_events(script):
    d = make_decoder("micradar")
    engine = AlertEngine({"bed": {"enter_debounce": 30, "exit_debounce": 60}}, seed="s")
    wall = datetime(2026, 11, 23, 21, 0, tzinfo=timezone.utc)
    events = []
    for t, frame in script:
        for r in d.feed(frame):
            events += [(a.type, t, a.data) for a in engine.handle(BeltReading(r), Now(t, wall))
                       if isinstance(a, Emit)]
    return events, d


def test_a_night_tells_its_story():
    plan = sim.short_plan()
    events, d = bed_events(sim.night_script(plan))
    bed = [(e, t) for e, t, _ in events if e.startswith("bed.")]
    assert [e for e, _ in bed] == ["bed.entered", "bed.exited", "bed.entered", "bed.exited"]
    exit_t, back_t = bed[1][1], bed[2][1]
    assert back_t - exit_t == pytest.approx(plan.exit_duration_s, abs=60)
    minutes = [data for e, _, data in events if e == "vitals.minute"]
    assert 20 <= len(minutes) <= 41      # none while out of the room
    asleep = [x for x in minutes if x["in_bed_s"] == 60.0]
    with_hr = [x for x in asleep if x["hr_avg_bpm"] is not None]
    assert len(with_hr) >= len(asleep) - 4     # the debounce lags the last minutes of each stay
    assert all(40 <= x["hr_avg_bpm"] <= 90 and 8 <= x["rr_avg_per_min"] <= 25 for x in with_hr)
    assert d.firmware == plan.firmware
    c = d.counters
    assert c["unknown"] == 0 and c["bad_checksum"] == 0 and c["frames_ok"] > 1000


def test_breathing_stop_incident_removes_rr_but_keeps_hr():
    plan = sim.short_plan(incidents=(sim.Incident(sim.BREATHING_STOPS, 300, 120),))
    d = make_decoder("micradar")
    during = [r for t, f in sim.night_script(plan) if 300 <= t < 420 for r in d.feed(f)]
    assert not any(r.resp_rate_per_min for r in during)
    assert any(r.heart_rate_bpm for r in during)
    assert any(r.resp_state == "none" for r in during)


def test_play_into_a_pty_and_write_a_recording(tmp_path):
    script = [(t, f) for t, f in sim.night_script(sim.short_plan()) if t < 200]
    master, slave = os.openpty()
    tty.setraw(slave)          # as pyserial would: no line discipline between radar and hub
    got = bytearray()

    async def scenario():
        loop = asyncio.get_running_loop()
        reader = loop.run_in_executor(None, lambda: _read_n(slave, len(sim.script_bytes(script)), got))
        dropped = await sim.play_into_fd(master, script, speed=2000.0)
        await asyncio.wait_for(reader, 5)
        return dropped

    try:
        dropped = asyncio.run(scenario())
    finally:
        os.close(master)
        os.close(slave)
    assert dropped == 0 and bytes(got) == sim.script_bytes(script)
    path = tmp_path / "night.jsonl"
    start = datetime(2026, 11, 23, 21, 0, tzinfo=timezone.utc)
    assert sim.write_recording(path, script, start) == len(script)
    chunks = list(read_recording(path))
    assert (chunks[-1].t - start).total_seconds() == pytest.approx(script[-1][0], abs=0.001)


def _read_n(fd, n, into):
    while len(into) < n and select.select([fd], [], [], 5)[0]:
        into += os.read(fd, 4096)
