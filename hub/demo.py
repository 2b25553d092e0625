"""`carehub demo`: the whole hub on simulated devices, with an embedded community-server receiver.

No hardware, no network, no root. A simulated bed radar plays a night into a real
pseudo-terminal, the resident's panel is on gpiozero's mock pins, the watch is a simulated
one that bleak itself talks to (drivers/watch/simulator.py, through bleak's ``backend=``): it
reports heart rate and battery and the resident presses its SOS once, with a location; the receiver listens on a free
loopback port, and the hub's clock is driven by the simulation: each frame is written at its own
simulated instant and the next waits until the hub has judged it, at most `speed` times faster
than real time. A night passes in about a minute and gives the same alerts on any machine load. Every committed event is
printed, with the panel's light and sound and what reaches the server.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from drivers.belt import simulator
from drivers.watch import gatt
from drivers.watch.simulator import SimulatedWatch, encode_heart_rate, encode_location
from hub import config
from hub.app import Hub
from hub.clock import ManualClock

TZ = "Asia/Shanghai"
SOS_AT_S = 5 * 3600 + 2400      # the resident holds SOS at 04:40 (simulated)
WATCH_SOS_AT_S = 2 * 3600 + 1800  # and presses SOS on the watch at 01:30
WATCH_VITALS_AT_S = (1800, 10800, 18000, 25200)  # its heart rate and battery: 23:30, 02:00, 04:00, 06:00
WATCH = "C0:FF:EE:00:00:01"
HOME_LAT, HOME_LON = 31.2304, 121.4737
STAFF_ACK_AFTER_S = 0.5         # real seconds until "staff" acknowledge an alert at the receiver
VITALS_EVERY = 30               # print one vitals.minute line in this many
STEP_S = 5.0                    # simulated seconds per lock-step (under the 15 s sample gap)

DEMO_CONFIG = """\
[hub]
id = "demo-0001"
resident_id = "R-DEMO"
timezone = "{tz}"
state_dir = "{state_dir}"
heartbeat_interval = "5m"
log_level = "warning"

[server]
url = "{url}"
token_file = "{token_file}"
sync_interval = "0.3s"
backoff_base = "1s"
backoff_max = "5s"

[store]
batch_interval = "1s"

[belt]
port = "{belt}"
protocol = "micradar"

[gpio]
pin_factory = "mock"
sos_hold = "0.5s"

[watch]
address = "{watch}"
profile = "standard"
"""


def demo_plan() -> simulator.NightPlan:
    night = simulator.NightPlan()
    return simulator.NightPlan(
        up_at_s=night.up_at_s, end_s=night.up_at_s + 65 * 60,  # out of bed long enough to end the night
        incidents=(simulator.Incident(simulator.VITALS_ABSENT, at_s=5 * 3600, duration_s=150),),
    )


class Printer:
    def __init__(self, clock: ManualClock, tz, out):
        self.clock, self.tz, self.out = clock, tz, out
        self.vitals = 0

    def line(self, text: str) -> None:
        stamp = self.clock.now().astimezone(self.tz).strftime("%H:%M:%S")
        print(f"{stamp}  {text}", file=self.out, flush=True)

    def event(self, e) -> None:
        d = e.to_dict()["data"]
        if e.type == "vitals.minute":
            self.vitals += 1
            if self.vitals % VITALS_EVERY:
                return
            what = f"heart {d.get('hr_avg_bpm')} bpm, breathing {d.get('rr_avg_per_min')}/min"
        elif e.type.startswith("alert."):
            what = f"{d.get('rule', '')} {d.get('message') or d.get('reason') or d.get('by') or ''}".strip()
            loc = (d.get("details") or {}).get("location") if e.type == "alert.raised" else None
            if loc:
                what += f" at {loc['lat']:.4f}, {loc['lon']:.4f} (fix {loc['age_s']:g} s old)"
        elif e.type == "device.status":
            what = f"{d.get('device')} {d.get('state')}"
            if d.get("battery_pct") is not None:
                what += f", battery {d['battery_pct']}%"
        elif e.type == "sleep.report":
            exits = d.get("bed_exits") or {}
            what = (f"in bed {d.get('time_in_bed_min')} min, asleep {d.get('sleep_min')} min, "
                    f"{exits.get('count')} bed exit(s) ({exits.get('minutes')} min), "
                    f"{d.get('turnovers')} turn-overs")
        else:
            what = ""
        self.line(f"#{e.seq:<4} {e.type:<18} P{e.priority}  {what}")

    def panel(self, led: str, buzzer: str) -> None:
        self.line(f"      panel: light {led}, sound {buzzer}")


async def _run(speed: float, workdir: Path, out) -> int:
    from offline_queue.receiver import make_server
    from drivers.belt.simulator import play_in_step

    tz = ZoneInfo(TZ)
    token = secrets.token_urlsafe(24)
    token_file = workdir / "token"
    token_file.write_text(token + "\n")
    os.chmod(token_file, 0o600)
    server = make_server("127.0.0.1", 0, workdir / "receiver.db", token)
    threading.Thread(target=server.serve_forever, name="receiver", daemon=True).start()

    master, slave = os.openpty()
    belt = workdir / "belt"
    belt.symlink_to(os.ttyname(slave))
    cfg_path = workdir / "config.toml"
    cfg_path.write_text(DEMO_CONFIG.format(tz=TZ, state_dir=workdir / "state", url=server.url,
                                           token_file=token_file, belt=belt, watch=WATCH))
    cfg = config.load(cfg_path)

    start = datetime.now(tz).replace(hour=23, minute=0, second=0, microsecond=0)
    clock = ManualClock(start, mono=0.0)
    printer = Printer(clock, tz, out)
    from gpiozero.pins.mock import MockFactory
    hub = Hub(cfg, clock=clock, pin_factory=MockFactory())
    hub.tick_s = max(0.01, 20.0 / speed)
    watch = SimulatedWatch(WATCH, battery_pct=64)
    hub.watch_options = dict(client_backend=watch.client_backend, scanner_backend=watch.scanner_backend,
                             reconnect_min_s=0.05, scan_timeout_s=2.0)
    hub.show_listeners.append(printer.panel)

    def committed(e):
        printer.event(e)
        if e.type == "alert.raised" and e.data.get("priority", e.priority) == 1:
            timer = threading.Timer(STAFF_ACK_AFTER_S, staff_ack, args=(e.data["alert_id"],))
            timer.daemon = True
            timer.start()

    def staff_ack(alert_id: str) -> None:
        try:
            server.ack(alert_id, "staff (demo)")
        except Exception:  # the demo ended first
            pass

    print(f"CareHub demo: a simulated night at {speed:g}x real time (Ctrl-C stops it)\n"
          f"  state {workdir / 'state'}; community server {server.url}\n", file=out, flush=True)
    try:
        hub.store.subscribe(committed)   # before start: the watch may connect during it
        await hub.start()
        script = simulator.night_script(demo_plan())
        pipeline = hub.runner.pipeline
        engine = pipeline.engine

        # the watch is found before the night starts (its first status is the same every run)
        await _until(lambda: hub.watch.state == "connected" and "watch" in pipeline.devices,
                     timeout_s=30)

        async def watch_vitals(bpm: int, pct: int):
            printer.line(f"      (the watch reports heart rate {bpm} bpm, battery {pct}%)")
            watch.notify(gatt.HEART_RATE_MEASUREMENT, encode_heart_rate(bpm))
            watch.set_battery(pct)
            await _until(lambda: engine.state["watch"]["battery"] == pct, timeout_s=30)

        async def watch_fix():
            watch.notify(gatt.LOCATION_AND_SPEED, encode_location(HOME_LAT, HOME_LON))
            await _until(lambda: pipeline.watch.fix is not None, timeout_s=30)

        async def watch_sos():
            printer.line("      (the resident presses SOS on the watch)")
            watch.press()
            # raised is enough: the staff's answer comes as the night goes on (waiting for it
            # with the night held is the panel's part, below)
            await _until(lambda: any(a["rule"] == "sos" for a in engine.active_alerts()),
                         timeout_s=60)

        at = {t: (lambda i=i: watch_vitals(62 + i % 5, 64 - i))
              for i, t in enumerate(WATCH_VITALS_AT_S)}
        at[WATCH_SOS_AT_S - 20] = watch_fix     # the fix is 20 s old when the resident presses
        at[WATCH_SOS_AT_S] = watch_sos

        async def press_sos():
            await _press_sos(hub, printer, cfg["gpio"]["sos_hold"])
            # the night waits for the staff's answer, so it is shown on any machine load
            await _until(lambda: any(a["rule"] == "sos" and a["stage"] == "acked"
                                     for a in engine.active_alerts()), timeout_s=60)

        await play_in_step(master, script, speed=speed, step_s=STEP_S, at={**at, SOS_AT_S: press_sos},
                           set_time=lambda t: clock.advance(t - clock.monotonic()),
                           handled=lambda: engine.readings_handled)
        # the night is over: simulated time stands still while the last events go out
        await hub.store.flush()
        await _drain(hub, timeout_s=10)
        events = server.events()
    finally:
        await hub.stop()
        server.shutdown()
        server.server_close()
        os.close(master)
        os.close(slave)
    alerts = [e for e in events if e["type"] == "alert.raised"]
    print(f"\nThe community server received {len(events)} events, {len(alerts)} alerts:", file=out)
    for a in alerts:
        print(f"  priority {a['data']['priority']}  {a['data']['rule']}: {a['data']['message']}", file=out)
    return 0


async def _press_sos(hub: Hub, printer: Printer, hold_s: float) -> None:
    """Hold the button for real (gpiozero times the hold), simulated time standing still."""
    pin = hub.pin_factory.pin(hub.cfg["gpio"]["sos_pin"])
    printer.line("      (the resident holds the SOS button)")
    pin.drive_low()
    await asyncio.sleep(hold_s + 0.3)
    pin.drive_high()


async def _until(predicate, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def _drain(hub: Hub, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any((await hub.store.depth()).values()):
            return
        await asyncio.sleep(0.2)


def main(speed: float = 600.0, keep: bool = False, out=sys.stdout) -> int:
    if speed <= 0:
        print("carehub demo: --speed must be positive", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="carehub-demo-"))
    try:
        return asyncio.run(_run(speed, workdir, out))
    except KeyboardInterrupt:
        return 0
    finally:
        if keep:
            print(f"kept {workdir}", file=out)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
