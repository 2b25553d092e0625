"""``carehub scan``: the BLE devices in range, so a technician can fill in ``[watch] address``.

Failures a technician meets on a fresh Pi (no D-Bus, no bluetoothd, no adapter, the radio
blocked, another scan running) come back as one sentence saying what to do, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import IO

from bleak import BleakScanner

from drivers.watch.bthome import BTHOME_UUID

EX_OK, EX_FAIL = 0, 1


async def scan(seconds: float = 5.0, backend: type | None = None) -> list[dict]:
    """Every device heard within ``seconds``, strongest first, as plain dicts."""
    found = await BleakScanner.discover(timeout=seconds, return_adv=True, backend=backend)
    devices = []
    for device, adv in found.values():
        devices.append({
            "name": adv.local_name or device.name or "",
            "address": device.address,
            "rssi": adv.rssi,
            "services": sorted(set(adv.service_uuids) | set(adv.service_data)),
            "bthome": BTHOME_UUID in adv.service_data,
        })
    devices.sort(key=lambda d: (-(d["rssi"] if d["rssi"] is not None else -999), d["address"]))
    return devices


def explain(exc: BaseException) -> str:
    """What went wrong, in the technician's terms, with the fix."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, (FileNotFoundError, ConnectionRefusedError)):
        return ("no D-Bus system bus, so no Bluetooth (install and start it: "
                "apt-get install dbus bluez; systemctl start dbus bluetooth)")
    if "ServiceUnknown" in text or "org.bluez was not provided" in text:
        return "bluetoothd is not running (apt-get install bluez; systemctl enable --now bluetooth)"
    if "No Bluetooth adapters" in text or "NotReady" in text:
        return ("no Bluetooth adapter ready (check `bluetoothctl list`; `rfkill unblock bluetooth`; "
                "a USB adapter must be plugged in)")
    if "InProgress" in text:
        return "another scan is already running (org.bluez.Error.InProgress): wait and try again"
    if isinstance(exc, PermissionError) or "AccessDenied" in text or "DENIED" in text.upper():
        return "not allowed to use Bluetooth: run as root or as a member of the bluetooth group"
    return f"BLE scan failed: {text}"


def format_table(devices: list[dict]) -> str:
    if not devices:
        return "no BLE devices heard (is the watch awake and near? try --seconds 20)"
    rows = [("ADDRESS", "RSSI", "NAME", "SERVICES")]
    for d in devices:
        services = ", ".join(_short(u) for u in d["services"]) + (" (BTHome)" if d["bthome"] else "")
        rows.append((d["address"], "" if d["rssi"] is None else str(d["rssi"]), d["name"], services))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip()
                     for r in rows)


def _short(uuid: str) -> str:
    """0000180d-0000-1000-8000-00805f9b34fb -> 180d; vendor UUIDs stay whole."""
    if uuid.startswith("0000") and uuid.endswith("-0000-1000-8000-00805f9b34fb"):
        return uuid[4:8]
    return uuid


def main(seconds: float = 5.0, as_json: bool = False, backend: type | None = None,
         out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> int:
    if seconds <= 0:
        print("carehub scan: --seconds must be more than 0", file=err)
        return EX_FAIL
    try:
        devices = asyncio.run(asyncio.wait_for(scan(seconds, backend), seconds + 30))
    except KeyboardInterrupt:
        return EX_OK
    except Exception as exc:   # every failure a Pi can have is explained, none is a traceback
        print(f"carehub scan: {explain(exc)}", file=err)
        return EX_FAIL
    if as_json:
        print(json.dumps(devices), file=out)
    else:
        print(format_table(devices), file=out)
    return EX_OK
