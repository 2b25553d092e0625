"""The BlueZ path: bleak's real BlueZ backend and bleak-retry-connector against a fake
org.bluez (fake_bluez.py) on a private dbus-daemon this test starts. Each scenario runs in a
child process (bluez_scenario.py) with DBUS_SYSTEM_BUS_ADDRESS pointed at the private bus."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.drivers.watch.conftest import needs_dbus

pytestmark = [needs_dbus, pytest.mark.timeout(120)]


def scenario(bus: str, name: str) -> dict:
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": bus, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "tests.drivers.watch.bluez_scenario", name],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def main_run(system_bus):
    return scenario(system_bus, "main")


def test_press_gives_sos_and_battery_is_read_then_notified(main_run):
    assert main_run["sos"][0] == 1000.0
    assert main_run["batteries"][:2] == [87, 8]          # read after connect, then a notification
    assert main_run["location"] == [[52.52, 13.405]]
    assert main_run["statuses"][0] == ["connected", None, 87]


def test_duplicated_notification_raises_once(main_run):
    assert main_run["duplicates"] == 1 and main_run["sos_after_duplicate"] == 2


def test_out_of_range_is_reported_after_the_grace_then_reconnects_and_presses_again(main_run):
    assert main_run["states_within_grace"] == ["connected"]
    assert main_run["statuses"][1][:2] == ["disconnected", "out of range"]
    assert main_run["statuses"][2][0] == "connected"
    assert main_run["connects"] == 2 and main_run["sos"] == [1000.0, 1005.0, 1041.0]
    assert main_run["hr"] == [64]
    # subscribed again on the new connection (four characteristics each time)
    assert main_run["calls"].count("StartNotify") == 8
    assert main_run["calls"][-1] == "Disconnect"          # stop() disconnects what it opened


def test_in_progress_clears_bluez_state_and_reconnects(system_bus):
    run = scenario(system_bus, "in_progress")
    calls = run["calls"]
    assert calls.count("Connect") == 5 and "RemoveDevice" in calls
    assert calls.index("RemoveDevice") < len(calls) - 1 - calls[::-1].index("Connect")
    assert run["link_connects"] == 2


def test_a_connection_left_by_a_crashed_hub_is_closed_and_the_watch_found(system_bus):
    """BlueZ still holds the link of a process that died: the watch stops advertising and
    no scan finds it, until that stale connection is closed."""
    run = scenario(system_bus, "stale")
    assert run["calls"].index("Disconnect") < run["calls"].index("Connect")
    assert run["link_connects"] == 1


def test_through_the_hub_press_commits_one_sos_with_location_and_the_rest_of_the_flow(system_bus):
    """The daemon's own path (Hub, rules, the SQLite store) on bleak's BlueZ backend."""
    run = scenario(system_bus, "hub")
    [sos] = run["sos"]
    assert run["sos_priority"] == [1] and sos["details"]["source"] == "watch"
    loc = sos["details"]["location"]
    assert (round(loc["lat"], 5), round(loc["lon"], 5), loc["age_s"]) == (52.52, 13.405, 20.0)
    assert run["battery_low"] == [{"battery_pct": 8}]
    assert run["offline"] == ["alert.raised", "alert.resolved"]
    assert run["states"] == ["connected", "disconnected", "connected"]
    assert run["pressed_again"] == [2]     # pressed again after the reconnect: the same alert insists
