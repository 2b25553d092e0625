"""Child process of test_bluez.py: the supervisor against bleak's real BlueZ backend and
bleak-retry-connector, talking to fake_bluez over the private bus in DBUS_SYSTEM_BUS_ADDRESS.

Run as ``python -m tests.drivers.watch.bluez_scenario NAME``; prints one JSON object of
what happened. A child process because bleak and bleak-retry-connector keep per-process
state about the system bus (and whether it exists) that must not leak into other tests.
"""

import asyncio
import json
import logging
import sys

from drivers.watch import gatt
from drivers.watch.link import WatchLink
from drivers.watch.pattern import ITAG_BUTTON, ITAG_SERVICE
from drivers.watch.profiles import make_profile
from drivers.watch.scan import scan
from drivers.watch.reports import Battery, HeartRate, Location, Press
from drivers.watch.simulator import encode_heart_rate, encode_location
from tests.drivers.watch.fake_bluez import FakeBlueZ

ADDRESS = "C0:FF:EE:00:00:02"
LAYOUT = [(gatt.HEART_RATE_SERVICE, [gatt.HEART_RATE_MEASUREMENT]),
          (gatt.BATTERY_SERVICE, [gatt.BATTERY_LEVEL]),
          (gatt.LN_SERVICE, [gatt.LOCATION_AND_SPEED]),
          (ITAG_SERVICE, [ITAG_BUTTON])]


class Clock:
    def __init__(self):
        self.t = 1000.0

    def monotonic(self):
        return self.t


async def until(pred, what, timeout=20.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def hub_scenario(fake) -> dict:
    """The whole hub (real store, rules) with its watch on bleak's BlueZ backend."""
    import tempfile
    from datetime import datetime
    from pathlib import Path
    from zoneinfo import ZoneInfo

    from hub import config
    from hub.app import Hub
    from hub.clock import ManualClock
    from tests.conftest import MINIMAL

    d = Path(tempfile.mkdtemp(prefix="carehub-bluez-"))
    path = d / "config.toml"
    path.write_text(MINIMAL.format(state_dir=d / "state") + f"""
[watch]
address = "{ADDRESS}"
offline_grace = "30s"

[rules.watch_offline]
alert_after = "10m"
""")
    clock = ManualClock(datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai")), mono=1000.0)
    hub = Hub(config.load(path), clock=clock)
    hub.tick_s = 0.01
    hub.watch_options = dict(reconnect_min_s=0.05, reconnect_max_s=0.2, scan_timeout_s=5.0, tick_s=0.01)
    events = []

    def of(type_, rule=None):
        return [e for e in events if e.type == type_ and (rule is None or e.data.get("rule") == rule)]

    def states():
        return [e.data["state"] for e in events if e.type == "device.status" and e.data["device"] == "watch"]

    hub.store.subscribe(events.append)   # before start: the link may connect during it
    await hub.start()
    try:
        await until(lambda: states() == ["connected"] and fake.chars[ITAG_BUTTON].notifying, "connected")
        fake.notify(gatt.LOCATION_AND_SPEED, encode_location(52.52, 13.405))
        await until(lambda: hub.runner.pipeline.watch.fix is not None, "the fix")
        clock.advance(20)
        fake.duplicate_notifications = True
        fake.notify(ITAG_BUTTON, b"\x01")
        await until(lambda: of("alert.raised", "sos") and hub.watch.decoder.duplicates == 1, "sos")
        fake.duplicate_notifications = False
        fake.notify(gatt.BATTERY_LEVEL, b"\x08")
        await until(lambda: of("alert.raised", "watch_battery_low"), "battery low")
        fake.walk_away()
        await until(lambda: hub.watch._down_since is not None, "the drop noticed")
        clock.advance(31)
        await until(lambda: states()[-1:] == ["disconnected"], "disconnected after the grace")
        clock.advance(601)
        await until(lambda: of("alert.raised", "watch_offline"), "watch_offline")
        fake.come_back()
        await until(lambda: of("alert.resolved", "watch_offline") and states()[-1] == "connected"
                    and fake.chars[ITAG_BUTTON].notifying, "back in range")
        clock.advance(5)
        fake.notify(ITAG_BUTTON, b"\x01")
        await until(lambda: [e for e in of("alert.renotified") if "again" in e.data["reason"]],
                    "SOS after the reconnect")
    finally:
        await hub.stop()
    sos = of("alert.raised", "sos")
    return {"sos": [json.loads(e.to_json())["data"] for e in sos], "sos_priority": [e.priority for e in sos],
            "pressed_again": [e.data["count"] for e in of("alert.renotified") if "again" in e.data["reason"]],
            "battery_low": [dict(e.data["details"]) for e in of("alert.raised", "watch_battery_low")],
            "offline": [e.type for e in events if e.data.get("rule") == "watch_offline"],
            "states": states(), "calls": fake.calls}


async def scenario(name: str) -> dict:
    fake = FakeBlueZ(ADDRESS, LAYOUT, values={gatt.BATTERY_LEVEL: b"\x57"})
    if name == "stale":     # a crashed hub left the watch connected: it does not advertise
        fake.device.connected = fake.device.resolved = True
    await fake.start()
    if name == "hub":
        try:
            return await hub_scenario(fake)
        finally:
            await fake.stop()
    if name == "scan":
        try:
            return {"devices": await scan(1.0), "calls": fake.calls}
        finally:
            await fake.stop()
    clock = Clock()
    reports, statuses = [], []
    link = WatchLink(ADDRESS, make_profile("standard"), on_report=reports.append,
                     on_status=statuses.append, clock=clock, offline_grace_s=30.0,
                     reconnect_min_s=0.05, reconnect_max_s=0.2, scan_timeout_s=5.0, tick_s=0.01)
    task = asyncio.ensure_future(link.run())
    out: dict = {"steps": []}

    def of(kind):
        return [r for r in reports if isinstance(r, kind)]

    async def connected(n):
        await until(lambda: link.connects >= n and link.state == "connected"
                    and fake.chars[ITAG_BUTTON].notifying, f"connection {n}")
        out["steps"].append(f"connected {n}")

    try:
        await connected(1)
        if name == "main":
            fake.notify(ITAG_BUTTON, b"\x01")
            await until(lambda: len(of(Press)) == 1, "first SOS")
            fake.notify(gatt.BATTERY_LEVEL, b"\x08")
            await until(lambda: len(of(Battery)) == 2, "battery notification")
            fake.notify(gatt.LOCATION_AND_SPEED, encode_location(52.52, 13.405))
            await until(lambda: of(Location), "location")
            clock.t += 5
            fake.duplicate_notifications = True
            fake.notify(ITAG_BUTTON, b"\x01")
            await until(lambda: link.decoder.duplicates == 1, "the duplicate dropped")
            out["sos_after_duplicate"] = len(of(Press))
            fake.duplicate_notifications = False
            fake.walk_away()
            await until(lambda: link._down_since is not None, "the drop noticed")
            out["states_within_grace"] = [s.state for s in statuses]
            clock.t += 31
            await until(lambda: link.state == "disconnected", "disconnected after the grace")
            fake.come_back()
            await connected(2)
            clock.t += 5
            fake.notify(ITAG_BUTTON, b"\x01")
            fake.notify(gatt.HEART_RATE_MEASUREMENT, encode_heart_rate(64))
            await until(lambda: len(of(Press)) == 3 and of(HeartRate), "SOS after reconnect")
        elif name == "in_progress":
            fake.walk_away()
            fake.connect_errors = [("org.bluez.Error.InProgress", "Operation already in progress")] * 3
            fake.come_back()
            await connected(2)
    finally:
        link.stop()
        await asyncio.wait_for(task, 15)
        await fake.stop()
    out.update(
        sos=[p.mono for p in of(Press)], batteries=[b.battery_pct for b in of(Battery)],
        hr=[h.hr_bpm for h in of(HeartRate)], location=[(l.lat, l.lon) for l in of(Location)],
        statuses=[[s.state, s.reason, s.battery_pct] for s in statuses],
        connects=fake.connects, link_connects=link.connects, calls=fake.calls,
        duplicates=link.decoder.duplicates)
    return out


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result = asyncio.run(scenario(sys.argv[1]))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
