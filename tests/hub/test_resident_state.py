"""Issue 10's three defects, end to end: real MicRadar byte strings through the pipeline (and a
real pty for the start-up query), each of which failed on the single-frame engine."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime
from zoneinfo import ZoneInfo

from drivers.belt import micradar as m
from hub import config
from hub.app import Hub
from hub.clock import ManualClock
from hub.events import EventFactory
from hub.pipeline import Pipeline
from hub.replay import PrintSink
from tests.conftest import MINIMAL
from tests.hub.test_end_to_end import Pty, run_async, wait_until

TZ = ZoneInfo("Asia/Shanghai")
NIGHT = datetime(2026, 11, 23, 23, 0, tzinfo=TZ)


def load(write_config, rules: str = "", belt: str = "") -> dict:
    return config.load(write_config(MINIMAL + f'\n[belt]\nport = "/dev/null"\nprotocol = "micradar"\n'
                                    + belt + "\n" + rules))


def play(cfg: dict, frames: list[tuple[float, bytes]], until: float, tick_s: float = 1.0):
    """Frames at their instants, ticks in between: [(t, type, rule, priority, data)]."""
    async def go():
        clock = ManualClock(NIGHT)
        sink = PrintSink(out=None)
        pipeline = Pipeline(cfg, clock, EventFactory("h", "r", clock), sink, seed="x")
        out, seen = [], 0
        steps = sorted([(t, 1, f) for t, f in frames]
                       + [(i * tick_s, 0, None) for i in range(int(until / tick_s) + 1)],
                       key=lambda s: (s[0], s[1]))
        for t, _, frame in steps:
            clock.advance(t - clock.monotonic())
            if frame is None:
                await pipeline.tick()
            else:
                await pipeline.belt_bytes(frame)
            for e in sink.events[seen:]:
                out.append((t, e.type, e.data.get("rule"), e.priority, e.data))
            seen = len(sink.events)
        return out
    return asyncio.run(go())


def every(t0: float, t1: float, period: float, frame) -> list[tuple[float, bytes]]:
    n = int((t1 - t0) / period)
    return [(t0 + i * period, frame(i) if callable(frame) else frame) for i in range(n)]


def alerts(events):
    return [(t, typ, rule, prio) for t, typ, rule, prio, _ in events if typ.startswith("alert.")]


def test_alert_after_shorter_than_the_enter_debounce_raises_nothing_on_bed_entry(write_config):
    """Defect 1: one field per frame. The frames that speak of presence and the bed carry no
    heart rate, and the heart-rate frames (every second) say nothing of the bed: a rule that
    judged frames started its timer on the former and never reset it on the latter."""
    cfg = load(write_config, '[rules.vitals_absent]\nprealert_after = "10s"\nalert_after = "20s"\n')
    frames = every(60, 900, 5.0, lambda i: m.presence(True))    # a radar repeating presence
    frames += [(60, m.motion(2)), (90, m.in_bed(1)), (95, m.motion(1))]
    frames += every(60.5, 900, 1.0, lambda i: m.heart_rate(62 + i % 6))
    events = play(cfg, frames, 900)
    assert [e for e in events if e[1] == "bed.entered"], "the resident went to bed"
    assert alerts(events) == []


def test_a_real_absence_with_a_short_alert_after_fires_on_time(write_config):
    cfg = load(write_config, '[rules.vitals_absent]\nprealert_after = "10s"\nalert_after = "20s"\n')
    frames = [(0.5, m.presence(True)), (0.5, m.in_bed(1))]
    frames += every(1, 300, 1.0, lambda i: m.heart_rate(64))
    frames += every(300, 400, 1.0, lambda i: m.movement(0))       # heart and breath stop at 300
    got = alerts(play(cfg, frames, 400))
    assert [(typ, rule, prio) for _, typ, rule, prio in got] == [
        ("alert.prealert", "vitals_absent", 2), ("alert.raised", "vitals_absent", 1)]
    assert 310 <= got[0][0] <= 311 and 320 <= got[1][0] <= 321      # one reading period


def test_max_out_of_bed_counts_from_the_true_exit(write_config):
    """Defect 2: 60 s out of bed means 60 s after leaving, not after the exit debounce."""
    cfg = load(write_config, '[rules.night_bed_exit]\nmax_out_of_bed = "60s"\nmin_in_bed = "0s"\n'
               'escalate_after = "60m"\n', belt='exit_debounce = "60s"\n')
    frames = [(0.5, m.presence(True)), (0.5, m.in_bed(1))]
    frames += every(1, 1200, 3.0, lambda i: m.heart_rate(60))
    exit_t = 1200.0
    frames += [(exit_t, m.in_bed(0)), (exit_t + 40, m.presence(False))]
    frames += every(exit_t, exit_t + 600, 5.0, lambda i: m.movement(0))
    events = play(cfg, frames, exit_t + 600)
    [exited] = [e for e in events if e[1] == "bed.exited"]
    assert exited[4]["detected_at"].startswith("2026-11-23T23:20:00")   # the true exit
    raised = [t for t, typ, rule, _ in alerts(events) if typ == "alert.raised"
              and rule == "night_bed_exit"]
    assert raised and exit_t + 60 <= raised[0] <= exit_t + 61, raised


def test_a_hub_started_beside_a_resident_lying_still_knows_within_the_debounce(write_config):
    """Defect 3 (acceptance): frames as captured mid-session from an MR60BHA1: heart rate 89
    every 3 s at 107 cm, no presence or in-bed frame, for 30 minutes."""
    cfg = load(write_config, belt='enter_debounce = "30s"\n')
    frames = every(0, 1800, 3.0, lambda i: m.heart_rate(89))
    frames += every(1, 1800, 2.0, lambda i: m.distance(107))
    frames += every(1.5, 1800, 3.0, lambda i: m.resp_rate(15))
    events = play(cfg, frames, 1800)
    entered = [t for t, typ, *_ in events if typ == "bed.entered"]
    assert entered and entered[0] <= 30 + 3, entered
    minutes = [d for _, typ, _, _, d in events if typ == "vitals.minute"]
    assert len(minutes) >= 28
    assert all(d["in_bed_s"] == 60.0 for d in minutes[1:]), [d["in_bed_s"] for d in minutes]


class FakeRadar:
    """The far end of the pty: a radar that reports nothing by itself except its minute
    heartbeat, and answers the in-bed query with the current state."""

    def __init__(self, pty: Pty):
        self.pty, self.in_bed, self.queries = pty, 1, 0
        self.buffer = bytearray()

    async def run(self):
        while True:
            try:
                data = os.read(self.pty.master, 4096)
            except BlockingIOError:
                data = b""
            except OSError:            # unplugged
                await asyncio.sleep(0.05)
                continue
            self.buffer += data
            query = m.query(0x84, 0x01)       # 53 59 84 81 00 01 0F C1 54 43
            while query in self.buffer:
                del self.buffer[:self.buffer.index(query) + len(query)]
                self.queries += 1
                os.write(self.pty.master, m.encode(0x84, 0x81, bytes((self.in_bed,))))
            try:
                os.write(self.pty.master, m.heartbeat())
            except OSError:
                pass
            await asyncio.sleep(0.05)


@run_async
async def test_the_hub_asks_the_radar_for_the_bed_at_start_and_after_a_reconnect(write_config,
                                                                                   tmp_path):
    pty = Pty(tmp_path / "belt")
    os.set_blocking(pty.master, False)
    cfg = config.load(write_config(MINIMAL + f'\n[belt]\nport = "{pty.link}"\nprotocol = "micradar"\n'
                                   'enter_debounce = "0s"\nexit_debounce = "0s"\n'
                                   'stale_timeout = "1s"\nreconnect_max = "1s"\n'
                                   '[store]\nbatch_interval = "0.2s"\n'))
    hub = Hub(cfg)
    seen: list[str] = []
    await hub.start()
    hub.store.subscribe(lambda e: seen.append(e.type))
    radar = FakeRadar(pty)
    task = asyncio.create_task(radar.run())
    try:
        await wait_until(lambda: "bed.entered" in seen)
        assert radar.queries >= 1
        pty.unplug()
        await wait_until(lambda: hub.runner.pipeline.devices.get("belt", {}).get("state")
                         == "disconnected")
        radar.in_bed = 0                   # she got up while the cable was out
        before = radar.queries
        pty.open()
        os.set_blocking(pty.master, False)
        await wait_until(lambda: "bed.exited" in seen)
        assert radar.queries > before
    finally:
        task.cancel()
        await hub.stop()
        pty.close()
