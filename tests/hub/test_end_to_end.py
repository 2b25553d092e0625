"""The daemon end to end: frames on a real pty -> pyserial -> decoder -> rules -> the SQLite store.

The hub runs in-process on a clock that goes faster than real time (the same clock drives its
rules), so a whole simulated night takes seconds; everything else is real: the pty, pyserial,
the store's thread and file, gpiozero's mock pins.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from gpiozero.pins.mock import MockFactory

from drivers.belt import simulator
from hub import config
from hub.app import Hub
from hub.clock import ManualClock
from hub.demo import demo_plan
from drivers.recording import read_recording
from hub.replay import replay
from hub.rules.observations import ButtonPress
from offline_queue.store import Store
from tests.conftest import MINIMAL

TZ = ZoneInfo("Asia/Shanghai")
NIGHT_START = datetime(2026, 11, 23, 23, 0, tzinfo=TZ)


class Pty:
    """A pseudo-terminal whose slave is reached through a symlink, as udev's /dev/carehub-belt."""

    def __init__(self, link):
        self.link = link
        self.open()

    def open(self):
        self.master, self.slave = os.openpty()
        if self.link.is_symlink():
            self.link.unlink()
        self.link.symlink_to(os.ttyname(self.slave))

    def unplug(self):
        os.close(self.master)
        os.close(self.slave)
        self.link.unlink()

    def close(self):
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


def committed(store_path) -> list[dict]:
    store = Store(store_path)
    try:
        return sorted(store.take_batch(limit=10**6, max_bytes=10**9), key=lambda e: e["seq"])
    finally:
        store.close()


async def wait_until(predicate, timeout_s=20.0, step_s=0.02):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step_s)


def run_async(fn):
    """Run an async test body on a fresh loop (no asyncio plugin needed)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))
    return wrapper


def alerts_of(events):
    return [(e["type"], e["data"].get("rule"), e["priority"]) for e in events if e["type"].startswith("alert.")]


@pytest.fixture
def belt_config(write_config, tmp_path):
    def make(extra: str = "", protocol: str = "micradar"):
        pty = Pty(tmp_path / "belt")
        path = write_config(MINIMAL + f'\n[belt]\nport = "{pty.link}"\nprotocol = "{protocol}"\n' + extra)
        return pty, config.load(path)
    return make


@run_async
async def test_a_night_on_the_pty_reaches_the_store_and_replays_the_same(belt_config, tmp_path):
    pty, cfg = belt_config('\n[store]\nbatch_interval = "0.5s"\n')
    script = simulator.night_script(demo_plan())
    clock = ManualClock(NIGHT_START)       # driven by the simulation: the same on any load
    hub = Hub(cfg, clock=clock)
    hub.tick_s = 0.02
    await hub.start()
    types_seen: set[str] = set()
    hub.store.subscribe(lambda e: types_seen.add(e.type))
    try:
        engine = hub.runner.pipeline.engine
        await simulator.play_in_step(pty.master, script, step_s=5.0,
                                     set_time=lambda t: clock.advance(t - clock.monotonic()),
                                     handled=lambda: engine.readings_handled)
        await wait_until(lambda: "sleep.report" in types_seen, timeout_s=30)
    finally:
        await hub.stop()
        pty.close()
    lived = committed(tmp_path / "state" / "events.db")
    types = {e["type"] for e in lived}
    assert {"bed.entered", "bed.exited", "vitals.minute", "device.status", "sleep.report"} <= types
    assert ("alert.raised", "night_bed_exit", 2) in alerts_of(lived)
    assert ("alert.raised", "vitals_absent", 1) in alerts_of(lived)
    # A minute after bed.entered, skipping the first: the minute that holds the entry may end
    # inside the enter debounce (HR already flows, in_bed_s still 0), depending on where the
    # hub's minute grid falls; and a buffered priority-3 minute can be committed after it.
    entered = next(e["seq"] for e in lived if e["type"] == "bed.entered")
    minute = [e for e in lived if e["type"] == "vitals.minute" and e["data"]["hr_avg_bpm"]
              and e["seq"] > entered][1]
    assert 40 <= minute["data"]["hr_avg_bpm"] <= 100 and minute["data"]["in_bed_s"] > 0

    # The same bytes as a recording, through `carehub replay`'s code path: the same alerts.
    rec = tmp_path / "night.rec"
    simulator.write_recording(rec, script, NIGHT_START)
    sink = await replay(cfg, read_recording(rec), out=None)
    replayed = [json.loads(e.to_json()) for e in sink.events]
    assert alerts_of(replayed) == alerts_of(lived)
    for a, b in zip([e for e in lived if e["type"] == "alert.raised"],
                    [e for e in replayed if e["type"] == "alert.raised"]):
        t_lived = datetime.fromisoformat(a["occurred_at"].replace("Z", "+00:00"))
        t_replay = datetime.fromisoformat(b["occurred_at"].replace("Z", "+00:00"))
        assert abs((t_lived - t_replay).total_seconds()) < 120, (a, b)


@run_async
async def test_unplugged_belt_is_reported_and_comes_back(belt_config, tmp_path):
    pty, cfg = belt_config('\n[store]\nbatch_interval = "0.2s"\n', protocol="ndjson")
    cfg["belt"].update(stale_timeout=1.0, reconnect_max=0.5, enter_debounce=0.0, exit_debounce=0.0)
    hub = Hub(cfg)
    await hub.start()
    seen: list[dict] = []
    hub.store.subscribe(lambda e: seen.append(e.to_dict()))

    bed = {"in_bed": True}

    async def feed():
        """The belt talks every 0.1 s while it is plugged in, like a real one."""
        while True:
            try:
                os.write(pty.master, (json.dumps({**bed, "heart_rate_bpm": 62}) + "\n").encode())
            except OSError:
                pass  # unplugged
            await asyncio.sleep(0.1)

    def has(type_, **data):
        return [e for e in seen if e["type"] == type_ and all(e["data"].get(k) == v for k, v in data.items())]

    feeder = asyncio.create_task(feed())
    try:
        await wait_until(lambda: has("bed.entered") and has("device.status", state="connected"))
        pty.unplug()
        await wait_until(lambda: has("device.status", state="disconnected"))
        pty.open()
        bed["in_bed"] = False
        await wait_until(lambda: len(has("device.status", state="connected")) == 2)
        await wait_until(lambda: has("bed.exited"))
        assert hub.runner.pipeline.devices["belt"]["state"] == "connected"
    finally:
        feeder.cancel()
        await hub.stop()
        pty.close()
    states = [e["data"]["state"] for e in seen if e["type"] == "device.status"]
    assert states == ["connected", "disconnected", "connected"]
    lived = committed(tmp_path / "state" / "events.db")
    assert [e["data"]["state"] for e in lived if e["type"] == "device.status"] == states


@run_async
async def test_panel_long_press_raises_sos_and_the_light_follows(write_config, tmp_path):
    cfg = config.load(write_config(MINIMAL + '\n[gpio]\nsos_hold = "0.5s"\n'))
    factory = MockFactory()
    hub = Hub(cfg, pin_factory=factory)
    await hub.start()
    raised: list = []
    hub.store.subscribe(lambda e: raised.append(e) if e.type == "alert.raised" else None)
    try:
        assert hub.panel.led_pattern == "ok"
        pin = factory.pin(cfg["gpio"]["sos_pin"])
        pin.drive_low()
        await wait_until(lambda: raised, timeout_s=10)
        pin.drive_high()
        await wait_until(lambda: hub.panel.led_pattern == "alert")
        assert hub.panel.buzzer_pattern == "alert"
    finally:
        await hub.stop()
    [event] = raised
    assert (event.data["rule"], event.priority) == ("sos", 1)
    assert [e["type"] for e in committed(tmp_path / "state" / "events.db") if e["priority"] == 1] == ["alert.raised"]


@run_async
async def test_panel_that_cannot_be_built_is_reported_and_the_hub_runs(write_config, tmp_path):
    cfg = config.load(write_config(MINIMAL + "\n[gpio]\n"))
    factory = MockFactory()
    from gpiozero import Button
    squatter = Button(cfg["gpio"]["sos_pin"], pin_factory=factory)  # the pin is already in use
    hub = Hub(cfg, pin_factory=factory)
    try:
        await hub.start()
        assert hub.panel is None and not hub.stop_event.is_set()
    finally:
        await hub.stop()
        squatter.close()
    [status] = [e for e in committed(tmp_path / "state" / "events.db") if e["type"] == "device.status"]
    assert status["data"]["device"] == "gpio" and status["data"]["state"] == "disconnected"
    assert status["data"]["reason"]


@run_async
async def test_an_unusable_saved_alert_state_is_replaced_not_a_crash_loop(write_config, tmp_path):
    cfg = config.load(write_config(MINIMAL))
    store = Store(tmp_path / "state" / "events.db")
    store.put_state("alerts.engine", {"v": 999, "from": "a future version"})
    store.close()
    hub = Hub(cfg)
    try:
        await hub.start()
        await hub.runner.pipeline.observe(ButtonPress("sos"))
        assert [a["rule"] for a in hub.runner.pipeline.engine.active_alerts()] == ["sos"]
    finally:
        await hub.stop()


@run_async
async def test_configured_pin_factory_builds_the_panel(write_config):
    cfg = config.load(write_config(MINIMAL + '\n[gpio]\npin_factory = "mock"\n'))
    hub = Hub(cfg)
    try:
        await hub.start()
        assert hub.panel is not None and hub.panel.led_pattern == "ok"
        assert hub.runner.pipeline.devices["gpio"]["state"] == "connected"
    finally:
        await hub.stop()
