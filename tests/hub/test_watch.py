"""The watch through the daemon: Hub in-process with a real store, bleak's own BleakClient,
BleakScanner and bleak-retry-connector over a simulated watch (bleak's ``backend=``)."""

from __future__ import annotations

import asyncio
import functools
import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from drivers.recording import read_recording
from drivers.watch import gatt
from drivers.watch.pattern import ITAG_BUTTON
from drivers.watch.recording import WatchRecorder, read_recording as read_watch
from drivers.watch.simulator import SimulatedWatch, encode_heart_rate, encode_location
from hub import config
from hub.app import Hub
from hub.clock import ManualClock
from hub.replay import replay
from hub.rules.observations import StaffClose
from hub.stages import TickDue
from tests.conftest import MINIMAL

pytestmark = pytest.mark.timeout(60)

ADDRESS = "C0:FF:EE:00:00:01"
WATCH_CONFIG = MINIMAL + f"""
[watch]
address = "{ADDRESS}"
profile = "standard"
offline_grace = "5s"
sos_dedupe = "2s"

[rules.fall]
cancel_window = "30s"

[rules.watch_offline]
alert_after = "10m"
"""
# Fast reconnects in real time (the clock of the rules is the test's).
FAST_LINK = dict(reconnect_min_s=0.01, reconnect_max_s=0.05, scan_timeout_s=0.5, tick_s=0.01)


def aio(test):
    """Run an async test on its own loop (the suite has no asyncio plugin)."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        asyncio.run(test(*args, **kwargs))
    return run


async def until(pred, timeout=20.0, what="condition"):
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


class Home:
    """A running hub with a simulated watch; ``events`` are the committed ones, in order."""

    def __init__(self, cfg, watch: SimulatedWatch, *, options=None):
        self.watch = watch
        self.clock = ManualClock(datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai")),
                                 mono=100.0)
        self.hub = Hub(cfg, clock=self.clock)
        self.hub.tick_s = 0.01
        self.hub.watch_options = dict(FAST_LINK, client_backend=watch.client_backend,
                                      scanner_backend=watch.scanner_backend, **(options or {}))
        self.events: list = []

    def of(self, type_, rule=None):
        return [e for e in self.events if e.type == type_
                and (rule is None or e.data.get("rule") == rule)]

    def status(self):
        return [e.data["state"] for e in self.events if e.type == "device.status"
                and e.data["device"] == "watch"]

    async def __aenter__(self):
        self.hub.store.subscribe(self.events.append)   # before start: the link may connect during it
        await self.hub.start()
        return self

    async def __aexit__(self, *exc):
        await self.hub.stop()


@pytest.fixture
def cfg(write_config):
    return config.load(write_config(WATCH_CONFIG))


async def connected(home: Home, n: int = 1) -> None:
    """The link reports connected only once it has subscribed."""
    await until(lambda: home.status().count("connected") >= n, what=f"connected #{n}")


@aio
async def test_press_raises_sos_with_location_then_reconnect_and_press_again(cfg):
    watch = SimulatedWatch(ADDRESS, battery_pct=80)
    async with Home(cfg, watch) as home:
        await connected(home)
        first = [e for e in home.events if e.type == "device.status"][-1]
        assert first.data == {"device": "watch", "state": "connected", "battery_pct": 80, "rssi": -60}
        assert watch.notify(gatt.HEART_RATE_MEASUREMENT, encode_heart_rate(72))
        assert watch.notify(gatt.LOCATION_AND_SPEED, encode_location(52.52, 13.405))
        await until(lambda: home.hub.runner.pipeline.watch.fix is not None, what="the fix")
        home.clock.advance(30)
        assert watch.press()
        await until(lambda: home.of("alert.raised", "sos"), what="sos raised")
        sos = home.of("alert.raised", "sos")[0]
        assert sos.priority == 1
        loc = sos.data["details"]["location"]
        assert loc["lat"] == pytest.approx(52.52) and loc["lon"] == pytest.approx(13.405)
        assert loc["age_s"] == 30.0 and "accuracy_m" in loc
        assert sos.data["details"]["source"] == "watch"

        # out of range briefly (shorter than the grace): it reconnects, nobody is told
        watch.walk_away()
        watch.come_back()
        await until(lambda: home.hub.watch.connects >= 2, what="reconnect")
        home.clock.advance(5)
        assert watch.press()
        await until(lambda: home.of("alert.renotified"), what="second press heard")
        assert len(home.of("alert.raised", "sos")) == 1     # the same alert, insisting
        assert home.of("alert.renotified")[0].data["count"] == 2
        assert home.status() == ["connected"]


@aio
async def test_duplicated_notification_raises_once(cfg):
    watch = SimulatedWatch(ADDRESS)
    watch.duplicate_notifications = True     # bleak#2002: a leaked watcher, every notify twice
    async with Home(cfg, watch) as home:
        await connected(home)
        assert watch.press()
        await until(lambda: home.of("alert.raised", "sos"), what="sos raised")
        # a battery notification afterwards goes the same way: when it is committed the press
        # (queued before it) is long judged
        watch.set_battery(70)
        await until(lambda: home.hub.runner.pipeline.engine.state["watch"]["battery"] == 70,
                    what="battery after the press")
        await home.hub.store.flush()
        assert len(home.of("alert.raised", "sos")) == 1
        assert home.of("alert.renotified") == []


@aio
async def test_out_of_range_past_the_grace_raises_watch_offline_and_back_resolves(cfg):
    watch = SimulatedWatch(ADDRESS)
    async with Home(cfg, watch) as home:
        await connected(home)
        watch.walk_away()
        await until(lambda: home.hub.watch.state is not None and not watch.in_range
                    and home.hub.watch._down_since is not None, what="link down")
        home.clock.advance(6)        # past offline_grace: reported disconnected
        await until(lambda: home.status()[-1:] == ["disconnected"], what="disconnected")
        status = [e for e in home.events if e.type == "device.status"][-1]
        assert status.data["reason"] == "out of range"
        assert not home.of("alert.raised", "watch_offline")
        home.clock.advance(601)      # past [rules.watch_offline] alert_after
        await until(lambda: home.of("alert.raised", "watch_offline"), what="watch_offline")
        assert home.of("alert.raised", "watch_offline")[0].priority == 3
        watch.come_back()
        await until(lambda: home.of("alert.resolved", "watch_offline"), what="resolved")
        await until(lambda: home.status() == ["connected", "disconnected", "connected"],
                    what="connected again")


@aio
async def test_battery_under_threshold_raises_watch_battery_low(cfg):
    watch = SimulatedWatch(ADDRESS, battery_pct=50)
    async with Home(cfg, watch) as home:
        await connected(home)
        watch.set_battery(8)
        await until(lambda: home.of("alert.raised", "watch_battery_low"), what="battery low")
        alert = home.of("alert.raised", "watch_battery_low")[0]
        assert alert.data["details"] == {"battery_pct": 8}
        watch.set_battery(90)
        await until(lambda: home.of("alert.resolved", "watch_battery_low"), what="battery ok")


@aio
async def test_fall_raised_after_cancel_window_with_location_aged_at_raise(cfg, write_config):
    cfg = config.load(write_config(WATCH_CONFIG.replace('profile = "standard"', '''profile = "custom"
event_char = "ffa3"
sos_pattern = "01"
fall_pattern = "02"
ok_pattern = "03"''')))
    char = "0000ffa3-0000-1000-8000-00805f9b34fb"
    watch = SimulatedWatch(ADDRESS, extra={"0000ffa0-0000-1000-8000-00805f9b34fb": [char]})
    async with Home(cfg, watch) as home:
        await connected(home)
        assert watch.notify(gatt.LOCATION_AND_SPEED, encode_location(31.23, 121.47))
        await until(lambda: home.hub.runner.pipeline.watch.fix is not None, what="the fix")
        home.clock.advance(10)
        assert watch.notify(char, b"\x02")
        await until(lambda: home.of("alert.prealert", "fall"), what="fall prealert")
        assert home.of("alert.prealert", "fall")[0].data["details"]["location"]["age_s"] == 10.0
        home.clock.advance(31)
        await until(lambda: home.of("alert.raised", "fall"), what="fall raised")
        loc = home.of("alert.raised", "fall")[0].data["details"]["location"]
        assert loc["age_s"] == 41.0
        # a second fall, answered by OK on the watch within the window: cancelled, not raised
        home.hub.runner.put(StaffClose(home.of("alert.raised", "fall")[0].data["alert_id"], "staff"))
        await until(lambda: "fall" not in home.hub.runner.pipeline.engine.state["alerts"],
                    what="fall closed")
        home.clock.advance(5)
        assert watch.notify(char, b"\x02")
        await until(lambda: len(home.of("alert.prealert", "fall")) == 2, what="second prealert")
        assert watch.notify(char, b"\x03")
        await until(lambda: home.of("alert.cancelled", "fall"), what="cancelled by OK")
        home.clock.advance(60)       # long past the window: a tick, then a marker behind it
        home.hub.runner.put(TickDue())
        watch.set_battery(55)
        await until(lambda: home.hub.runner.pipeline.engine.state["watch"]["battery"] == 55,
                    what="the tick and the marker handled")
        assert "fall" not in home.hub.runner.pipeline.engine.state["alerts"]
        assert len(home.of("alert.raised", "fall")) == 1


@aio
async def test_absent_watch_never_blocks_the_hub(cfg):
    watch = SimulatedWatch(ADDRESS)
    watch.in_range = False
    async with Home(cfg, watch) as home:
        assert home.hub.runner is not None         # start() returned with the watch absent
        home.clock.advance(6)
        await until(lambda: home.status() == ["disconnected"], what="reported absent")
        watch.come_back()
        await until(lambda: home.status() == ["disconnected", "connected"], what="found later")


# --- recordings: the watch beside the belt, replayed ------------------------------------------
def _belt(t: str, in_bed: bool) -> str:
    line = json.dumps({"in_bed": in_bed, "heart_rate_bpm": 60, "resp_rate_per_min": 14}) + "\n"
    return json.dumps({"t": t, "source": "belt", "hex": line.encode().hex()}) + "\n"


def _watch(t: str, char: str, data: bytes) -> str:
    return json.dumps({"t": t, "source": "watch", "hex": data.hex(), "char": char}) + "\n"


BOTH_CONFIG = WATCH_CONFIG + """
[belt]
port = "/dev/null"
protocol = "ndjson"
"""


@aio
async def test_a_recording_with_belt_and_watch_replays_to_the_sos_with_its_location(write_config, tmp_path):
    cfg = config.load(write_config(BOTH_CONFIG))
    rec = tmp_path / "night.jsonl"
    rec.write_text(
        _belt("2026-11-23T23:00:00.000+08:00", True)
        + json.dumps({"t": "2026-11-23T23:00:00.500+08:00", "source": "watch", "hex": "",
                      "link": "connected"}) + "\n"
        + _watch("2026-11-23T23:00:01.000+08:00", gatt.BATTERY_LEVEL, b"\x57")
        + _watch("2026-11-23T23:00:02.000+08:00", gatt.LOCATION_AND_SPEED,
                 bytes.fromhex("84 00 80 ea 4d 1f d0 70 fd 07"))
        + _belt("2026-11-23T23:00:10.000+08:00", True)
        + _watch("2026-11-23T23:00:32.000+08:00", ITAG_BUTTON, b"\x01")
        + _watch("2026-11-23T23:00:32.300+08:00", ITAG_BUTTON, b"\x01")   # a duplicate
        + _belt("2026-11-23T23:00:40.000+08:00", True))
    sink = await replay(cfg, read_recording(rec), out=None, watch=read_watch(rec))
    sos = [e for e in sink.events if e.type == "alert.raised" and e.data["rule"] == "sos"]
    assert len(sos) == 1
    assert sos[0].data["details"]["source"] == "watch"
    loc = sos[0].data["details"]["location"]
    assert (loc["lat"], loc["lon"], loc["age_s"]) == (pytest.approx(52.52), pytest.approx(13.405), 30.0)
    assert not [e for e in sink.events if e.type == "alert.renotified"]
    assert [e.data["state"] for e in sink.events if e.type == "device.status"] == ["connected"]
    assert any(e.type == "bed.entered" for e in sink.events)    # the belt's lines went through


@aio
async def test_what_the_daemon_recorded_of_the_watch_replays_to_the_same_alerts(cfg, tmp_path):
    rec = tmp_path / "watch.jsonl"
    watch = SimulatedWatch(ADDRESS, battery_pct=9)
    home = Home(cfg, watch)
    recorder = WatchRecorder(rec, now=home.clock.now)
    home.hub.watch_recorder = recorder
    async with home:
        await connected(home)
        assert watch.notify(gatt.LOCATION_AND_SPEED, encode_location(52.52, 13.405))
        await until(lambda: home.hub.runner.pipeline.watch.fix is not None, what="the fix")
        home.clock.advance(12)
        assert watch.press()
        await until(lambda: home.of("alert.raised", "sos"), what="sos raised")
    recorder.close()
    lived = [(e.type, e.data.get("rule")) for e in home.events if e.type.startswith("alert.")]
    assert ("alert.raised", "sos") in lived and ("alert.raised", "watch_battery_low") in lived
    sink = await replay(cfg, read_recording(rec), out=None, watch=read_watch(rec))
    replayed = [(e.type, e.data.get("rule")) for e in sink.events if e.type.startswith("alert.")]
    assert replayed == lived
    sos = [e for e in sink.events if e.type == "alert.raised" and e.data["rule"] == "sos"][0]
    assert sos.data["details"]["location"] == home.of("alert.raised", "sos")[0].data["details"]["location"]


@aio
async def test_monitor_beside_the_daemon_shows_and_records_the_watch_and_replay_agrees(cfg, tmp_path):
    """`carehub monitor --record` attached to the daemon's feed: the watch the daemon holds is
    shown and recorded, and the recording replays to the alerts the daemon raised."""
    import io
    from hub.monitor import run_attached
    rec = tmp_path / "night.jsonl"
    watch = SimulatedWatch(ADDRESS, battery_pct=60)
    watch.in_range = False          # found only once the monitor is attached
    out, stop = io.StringIO(), asyncio.Event()
    async with Home(cfg, watch) as home:
        await until(lambda: home.hub.feed.path.exists(), what="the feed")
        monitor = asyncio.ensure_future(run_attached(home.hub.feed.path, "micradar", rec, out, stop))
        await until(lambda: home.hub.feed.clients, what="monitor attached")
        watch.come_back()
        await connected(home)
        assert watch.notify(gatt.HEART_RATE_MEASUREMENT, encode_heart_rate(72))
        assert watch.notify(gatt.LOCATION_AND_SPEED, encode_location(52.52, 13.405))
        await until(lambda: home.hub.runner.pipeline.watch.fix is not None, what="the fix")
        home.clock.advance(7)
        assert watch.press()
        await until(lambda: home.of("alert.raised", "sos") and "SOS pressed" in out.getvalue(),
                    what="sos raised and shown")
        stop.set()
        assert await asyncio.wait_for(monitor, 10) == 0
    shown = out.getvalue()
    assert "watch battery 60%" in shown and "watch HR 72 bpm" in shown
    assert "watch location 52.52000, 13.40500" in shown and "watch connected" in shown
    lines = [json.loads(x) for x in rec.read_text().splitlines()]
    assert {x["source"] for x in lines} == {"watch"}
    sink = await replay(cfg, read_recording(rec), out=None, watch=read_watch(rec))
    [sos] = [e for e in sink.events if e.type == "alert.raised" and e.data["rule"] == "sos"]
    assert sos.data["details"]["location"]["age_s"] == 7.0
