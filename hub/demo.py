"""`carehub demo`: the whole hub on simulated devices, with an embedded community-server receiver.

No hardware, no network, no root. A simulated bed radar plays a night into a real
pseudo-terminal, the resident's panel is on gpiozero's mock pins, a GSM modem is simulated on
another pseudo-terminal (the SOS comes while the internet is down: the duty desk's phone gets
the text and answers OK), the receiver listens on a free loopback port, and the hub's clock is driven by the simulation: each frame is written at its own
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
from hub import config
from hub.app import Hub
from hub.clock import ManualClock

TZ = "Asia/Shanghai"
SOS_AT_S = 5 * 3600 + 2400      # the resident holds SOS at 04:40 (simulated)
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

[sms]
port = "{modem}"
when = "always"
language = "en"
resident_name = "Wang Fang"
address = "88 Garden Road, Building 5, Flat 302"

[[sms.phones]]
number = "{phone}"
name = "Duty desk"
priorities = [1]
"""
PHONE = "+8613800000000"


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
        elif e.type == "alert.notified":
            what = f"{d.get('channel')} to {d.get('to')} ({d.get('name', '')}): {d.get('result')}"
        elif e.type.startswith("alert."):
            what = f"{d.get('rule', '')} {d.get('message') or d.get('reason') or d.get('by') or ''}".strip()
        elif e.type == "device.status":
            what = f"{d.get('device')} {d.get('state')}"
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
    from drivers.modem.simulator import FakeModem
    from offline_queue.receiver import Fault
    modem = FakeModem().start()
    cfg_path.write_text(DEMO_CONFIG.format(tz=TZ, state_dir=workdir / "state", url=server.url,
                                           token_file=token_file, belt=belt, modem=modem.port,
                                           phone=PHONE))
    cfg = config.load(cfg_path)

    start = datetime.now(tz).replace(hour=23, minute=0, second=0, microsecond=0)
    clock = ManualClock(start, mono=0.0)
    printer = Printer(clock, tz, out)
    from gpiozero.pins.mock import MockFactory
    hub = Hub(cfg, clock=clock, pin_factory=MockFactory())
    hub.tick_s = max(0.01, 20.0 / speed)
    hub.show_listeners.append(printer.panel)

    def committed(e):
        printer.event(e)
        if e.type == "alert.raised" and e.data.get("priority", e.priority) == 1 \
                and e.data.get("rule") != "sos":   # the SOS is answered by the duty desk's phone
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
        await hub.start()
        hub.store.subscribe(committed)
        script = simulator.night_script(demo_plan())
        engine = hub.runner.pipeline.engine

        phone = asyncio.create_task(_phone(modem, printer))

        async def press_sos():
            server.faults.hold(Fault("status", 503))
            printer.line("      (the home's internet is down: the community server answers 503)")
            await _press_sos(hub, printer, cfg["gpio"]["sos_hold"])
            # the night waits for the text and the answer, so they are shown on any machine load
            await _until(lambda: any("SOS" in t.text for t in modem.texts()), timeout_s=60)
            printer.line(f"      (the duty desk replies OK from {PHONE})")
            modem.inject_sms(PHONE, "OK")
            await _until(lambda: any(a["rule"] == "sos" and a["stage"] == "acked"
                                     for a in engine.active_alerts()), timeout_s=60)
            server.faults.clear()
            printer.line("      (the internet is back)")

        await play_in_step(master, script, speed=speed, step_s=STEP_S, at={SOS_AT_S: press_sos},
                           set_time=lambda t: clock.advance(t - clock.monotonic()),
                           handled=lambda: engine.readings_handled)
        # the night is over: simulated time stands still while the last events go out
        await hub.store.flush()
        await _drain(hub, timeout_s=10)
        events = server.events()
    finally:
        if "phone" in locals():
            phone.cancel()
        await hub.stop()
        modem.close()
        server.shutdown()
        server.server_close()
        os.close(master)
        os.close(slave)
    alerts = [e for e in events if e["type"] == "alert.raised"]
    print(f"\nThe community server received {len(events)} events, {len(alerts)} alerts:", file=out)
    for a in alerts:
        print(f"  priority {a['data']['priority']}  {a['data']['rule']}: {a['data']['message']}", file=out)
    for e in events:
        d = e["data"]
        if e["type"] == "alert.notified":
            print(f"  {d['channel']} to {d['to']} ({d.get('name', '')}): {d['result']}", file=out)
        elif e["type"] == "alert.acknowledged":
            print(f"  acknowledged {d.get('rule')} by {d.get('by')}", file=out)
    return 0


async def _phone(modem, printer: Printer) -> None:
    """Print each text as the bound phone's simulated modem receives it."""
    shown = 0
    while True:
        texts = modem.texts()
        for text in texts[shown:]:
            printer.line(f"      SMS to {text.number}: {text.text}")
        shown = len(texts)
        await asyncio.sleep(0.05)


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
