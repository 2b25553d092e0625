"""`carehub scan`: nearby devices through bleak (simulated backend, and bleak's BlueZ backend
on a fake org.bluez); every missing piece of a Pi's Bluetooth stack is a sentence, not a
traceback."""

import io
import json
import os
import subprocess
import sys

import pytest
from bleak.exc import BleakBluetoothNotAvailableError, BleakBluetoothNotAvailableReason, BleakDBusError

from drivers.watch import scan
from drivers.watch.simulator import SimulatedWatch
from tests.conftest import REPO
from tests.drivers.watch.conftest import needs_dbus
from tests.drivers.watch.test_bluez import scenario

pytestmark = pytest.mark.timeout(90)


def test_scan_lists_name_address_rssi_and_services():
    w = SimulatedWatch(address="C0:FF:EE:12:34:56", name="Nanny-W1", rssi=-58)
    out, err = io.StringIO(), io.StringIO()
    assert scan.main(0.2, backend=w.scanner_backend, out=out, err=err) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["ADDRESS", "RSSI", "NAME", "SERVICES"]
    assert lines[1].split()[:3] == ["C0:FF:EE:12:34:56", "-58", "Nanny-W1"]
    assert "180d" in lines[1] and "ffe0" in lines[1]


def test_scan_json():
    w = SimulatedWatch(layout="bthome")
    w.service_data = {"0000fcd2-0000-1000-8000-00805f9b34fb": bytes.fromhex("4400013a01")}
    out = io.StringIO()
    assert scan.main(0.2, as_json=True, backend=w.scanner_backend, out=out) == 0
    (dev,) = json.loads(out.getvalue())
    assert dev == {"name": "CareWatch", "address": w.address, "rssi": -60,
                   "services": ["0000fcd2-0000-1000-8000-00805f9b34fb"], "bthome": True}


def carehub(*args, bus):
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": bus, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "hub", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_no_system_bus_is_a_clear_message(tmp_path):
    done = carehub("scan", "--seconds", "1", bus=f"unix:path={tmp_path}/none")
    assert done.returncode == 1
    assert "no D-Bus system bus" in done.stderr and "Traceback" not in done.stderr + done.stdout


@needs_dbus
def test_no_bluetoothd_is_a_clear_message(system_bus):
    done = carehub("scan", "--seconds", "1", bus=system_bus)
    assert done.returncode == 1
    assert "bluetoothd is not running" in done.stderr and "Traceback" not in done.stderr


@needs_dbus
def test_scan_through_bleaks_bluez_backend(system_bus):
    run = scenario(system_bus, "scan")
    (dev,) = run["devices"]
    assert dev["address"] == "C0:FF:EE:00:00:02" and dev["name"] == "CareWatch"
    assert dev["rssi"] in (-60, -61) and "0000180d-0000-1000-8000-00805f9b34fb" in dev["services"]
    assert "StartDiscovery" in run["calls"]


@pytest.mark.parametrize("exc,says", [
    (BleakBluetoothNotAvailableError("No Bluetooth adapters found.",
                                     BleakBluetoothNotAvailableReason.NO_BLUETOOTH), "no Bluetooth adapter"),
    (BleakDBusError("org.bluez.Error.InProgress", ["Operation already in progress"]), "already running"),
    (BleakDBusError("org.freedesktop.DBus.Error.AccessDenied", ["denied"]), "not allowed"),
    (PermissionError(13, "Permission denied"), "not allowed"),
    (RuntimeError("odd"), "BLE scan failed: RuntimeError: odd"),
])
def test_explain(exc, says):
    assert says in scan.explain(exc)


def test_seconds_must_be_positive():
    err = io.StringIO()
    assert scan.main(0, err=err) == 1 and "--seconds" in err.getvalue()
