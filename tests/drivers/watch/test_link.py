"""The supervisor against bleak's own BleakClient/BleakScanner and bleak-retry-connector,
with a simulated watch plugged in through bleak's public ``backend=`` argument."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone

import pytest
from bleak.exc import BleakError

from drivers.watch import gatt
from drivers.watch.bthome import BTHOME_UUID
from drivers.watch.link import WatchLink
from drivers.watch.pattern import ITAG_BUTTON
from drivers.watch.profiles import make_profile
from drivers.watch.reports import Battery, HeartRate, LinkStatus, Location, Press
from drivers.watch.simulator import SimulatedWatch, encode_heart_rate, encode_location
from hub.clock import ManualClock

pytestmark = pytest.mark.timeout(60)


async def until(pred, timeout=15.0, what="condition"):
    """Wait for a condition (generous timeout, never a fixed sleep)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


class Rig:
    def __init__(self, watch: SimulatedWatch, profile="standard", **kw):
        self.watch = watch
        self.clock = ManualClock(datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc), mono=100.0)
        self.reports: list = []
        self.statuses: list[LinkStatus] = []
        opts = dict(offline_grace_s=30.0, reconnect_min_s=0.01, reconnect_max_s=0.05,
                    scan_timeout_s=2.0, tick_s=0.01)
        opts.update(kw)
        self.link = WatchLink(watch.address, make_profile(profile) if isinstance(profile, str) else profile,
                              on_report=self.reports.append, on_status=self.statuses.append,
                              clock=self.clock, client_backend=watch.client_backend,
                              scanner_backend=watch.scanner_backend, **opts)
        self.task = None

    def of(self, kind):
        return [r for r in self.reports if isinstance(r, kind)]

    def states(self):
        return [s.state for s in self.statuses]

    async def __aenter__(self):
        self.task = asyncio.ensure_future(self.link.run())
        return self

    async def __aexit__(self, *exc):
        self.link.stop()
        await asyncio.wait_for(self.task, 10)

    async def connected(self, n=1):
        await until(lambda: self.link.connects >= n and self.link.state == "connected"
                    and self.watch.client is not None and self.watch.client.subscribed,
                    what=f"connection {n}")


def run(coro):
    asyncio.run(coro)


def test_press_gives_one_sos_with_battery_and_connected_status():
    async def main():
        w = SimulatedWatch()
        async with Rig(w) as rig:
            await rig.connected()
            assert rig.of(Battery) == [Battery(87, 100.0)]        # read after connecting
            assert rig.statuses[-1] == LinkStatus("connected", None, 87, -60, 100.0)
            assert w.press()
            await until(lambda: rig.of(Press))
            assert rig.of(Press) == [Press("sos", None, 100.0)]
    run(main())


def test_heart_rate_location_and_battery_notifications():
    async def main():
        w = SimulatedWatch()
        async with Rig(w) as rig:
            await rig.connected()
            w.notify(gatt.HEART_RATE_MEASUREMENT, encode_heart_rate(72, (1.0,)))
            w.notify(gatt.LOCATION_AND_SPEED, encode_location(52.52, 13.405))
            w.set_battery(9)
            await until(lambda: len(rig.of(Battery)) == 2)
            assert rig.of(HeartRate) == [HeartRate(72, (1.0,), None, True, 100.0)]
            assert rig.of(Location)[0].lat == 52.52 and rig.link.location.lon == 13.405
            assert rig.link.battery_pct == 9
    run(main())


def test_drop_reconnect_press_again_with_a_new_client_and_fresh_subscriptions():
    async def main():
        w = SimulatedWatch()
        async with Rig(w) as rig:
            await rig.connected()
            first = w.client
            w.press()
            w.walk_away()
            rig.clock.advance(5)
            w.come_back()
            await rig.connected(2)
            assert w.client is not first and not first.is_connected
            assert w.press()          # re-subscribed on the new connection
            await until(lambda: len(rig.of(Press)) == 2)
            assert [p.mono for p in rig.of(Press)] == [100.0, 105.0]
            # the drop lasted less than the grace: no disconnected status was reported
            assert rig.states() == ["connected"]
    run(main())


def test_duplicated_notifications_raise_one_sos():
    async def main():
        w = SimulatedWatch()
        w.duplicate_notifications = True       # bleak#2002
        async with Rig(w) as rig:
            await rig.connected()
            w.press()
            await until(lambda: rig.link.decoder.duplicates == 1)
            assert len(rig.of(Press)) == 1
    run(main())


def test_a_watcher_left_by_an_old_connection_is_ignored():
    async def main():
        w = SimulatedWatch()
        async with Rig(w) as rig:
            await rig.connected()
            old_callback = w.client.subscribed[ITAG_BUTTON]
            w.walk_away()
            rig.clock.advance(5)
            w.come_back()
            await rig.connected(2)
            old_callback(bytearray(b"\x01"))   # what a leaked watcher would deliver
            assert rig.link.stale_notifications == 1 and rig.of(Press) == []
    run(main())


def test_out_of_range_longer_than_the_grace_is_reported_once_then_back():
    async def main():
        w = SimulatedWatch()
        async with Rig(w) as rig:
            await rig.connected()
            w.walk_away()
            await until(lambda: rig.link._down_since is not None, what="the drop noticed")
            rig.clock.advance(29)
            await asyncio.sleep(0.05)
            assert rig.states() == ["connected"]        # within the grace: not news yet
            rig.clock.advance(2)
            await until(lambda: rig.states() == ["connected", "disconnected"])
            assert rig.statuses[-1].reason == "out of range"
            rig.clock.advance(600)
            await asyncio.sleep(0.05)
            assert rig.states() == ["connected", "disconnected"]   # once per change
            w.come_back()
            await until(lambda: rig.states() == ["connected", "disconnected", "connected"])
    run(main())


def test_a_watch_absent_at_start_blocks_nothing_and_stop_is_prompt():
    async def main():
        w = SimulatedWatch()
        w.in_range = False
        rig = Rig(w, scan_timeout_s=30.0)
        ticks = 0

        async def other_work():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        other = asyncio.ensure_future(other_work())
        async with rig:
            await until(lambda: ticks > 20, what="the rest of the hub running")
            rig.clock.advance(30)
            await until(lambda: rig.states() == ["disconnected"])
            assert rig.statuses[0].reason == "out of range"
            loop = asyncio.get_running_loop()
            t0 = loop.time()
        assert loop.time() - t0 < 5.0, "stop() waited for the 30 s scan"
        other.cancel()
        assert rig.reports == []
    run(main())


def test_in_progress_clears_stale_state_and_connects_later(caplog):
    async def main():
        w = SimulatedWatch()
        w.connect_errors = [BleakError("[org.bluez.Error.InProgress] Operation already in progress")] * 4
        async with Rig(w) as rig:
            await rig.connected()
            assert w.connect_errors == [] and w.connects == 1
    with caplog.at_level(logging.INFO, logger="drivers.watch.link"):
        run(main())
    assert "operation in progress" in caplog.text


def test_wrong_profile_says_so_and_keeps_trying():
    async def main():
        w = SimulatedWatch(layout="bthome")       # no GATT table with 0xFFE1
        async with Rig(w, profile="itag") as rig:
            await until(lambda: w.connects >= 2, what="a retry")
            rig.clock.advance(30)
            await until(lambda: rig.states() == ["disconnected"])
            assert "is the profile right?" in rig.statuses[0].reason
    run(main())


def test_heartbeat_read_failure_reconnects():
    async def main():
        w = SimulatedWatch()
        async with Rig(w, battery_interval_s=0.05) as rig:
            await rig.connected()
            first = w.client
            first._connected = False      # BlueZ still says connected; the watch does not answer
            await rig.connected(2)
            assert w.client is not first
    run(main())


def test_no_adapter_is_a_status_not_a_traceback():
    class NoAdapter(SimulatedWatch().scanner_backend):
        async def start(self):
            raise BleakError("No Bluetooth adapters found.")

    async def main():
        w = SimulatedWatch()
        rig = Rig(w, offline_grace_s=0)
        rig.link.scanner_backend = NoAdapter
        async with rig:
            await until(lambda: rig.states() == ["disconnected"])
            assert "No Bluetooth adapters found" in rig.statuses[0].reason
    run(main())


def test_bthome_listens_to_adverts_dedupes_by_packet_id_and_notices_silence():
    async def main():
        w = SimulatedWatch(layout="bthome")
        async with Rig(w, profile="bthome") as rig:
            w.bthome(bytes.fromhex("44 00 01 01 5a 3a 01"))     # packet 1: battery 90 %, press
            await until(lambda: rig.of(Press))
            await asyncio.sleep(0.2)                            # the same packet, advertised again
            assert rig.of(Press) == [Press("sos", 1, 100.0)] and rig.of(Battery)[0].battery_pct == 90
            assert rig.states() == ["connected"]
            w.bthome(bytes.fromhex("44 00 02 3a 01"))
            await until(lambda: len(rig.of(Press)) == 2)
            w.in_range = False
            rig.clock.advance(31)
            await until(lambda: rig.states() == ["connected", "disconnected"])
    run(main())
