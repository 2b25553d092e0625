"""`carehub demo`: the whole hub on simulated devices, with an embedded community-server receiver.

No hardware, no root, no network. A simulated bed radar plays a night into a real
pseudo-terminal, the resident's panel is on gpiozero's mock pins, a GSM modem is simulated on
another (the SOS comes while the internet is down: the duty desk's phone is texted and replies
OK), and the receiver listens on a
free loopback port. The hub's clock is driven by the simulation: each frame is written at its own
simulated instant and the next waits until the hub has judged it, at most ``speed`` times faster
than real time, so a run gives the same alerts on any machine load.

Two kinds of time, shown side by side on every line: the simulated clock of the night ("sim")
and the real seconds since the demo started ("real"). What a person does with their hands runs
in real time: when the resident holds SOS, the simulation slows to real time (1x) until the staff
have acknowledged the alert at the community server and the hub has heard of it; then it speeds
up again. Delivery latencies are real time too: commit in the hub's store -> accepted by the
receiver, both stamped on one steady (monotonic) clock.
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
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from drivers.belt import simulator
from hub import config
from hub.app import Hub
from hub.clock import ManualClock

TZ = "Asia/Shanghai"
DEFAULT_SPEED = 400.0           # a night in about 85 s, plus the real-time section and the wrap-up
SOS_AT_S = 5 * 3600 + 2400      # the resident holds SOS at 04:40 (simulated)
SOS_HOLD_S = 2.0                # the panel's sos_hold: a real 2-second press
STAFF_REACTION_S = 2.0          # real seconds the staff take to acknowledge once the alert arrives
REALTIME_TIMEOUT_S = 45.0       # a real-time step that has not happened by then is reported and skipped
STEP_S = 5.0                    # simulated seconds per lock-step (under the 15 s sample gap)
REDRAW_S = 0.2                  # real seconds between redraws of the live view
STATUS_EVERY_S = 3600.0         # plain output: one status line per simulated hour
RECENT_LINES = 14               # live view: the latest lines of the log under the board
DEVICE_NAMES = {"gpio": "panel"}
ALERT_STATES = {"new": "pending", "prealert": "prealert", "raised": "raised", "acked": "acknowledged"}
QUIET_EVENTS = {"vitals.minute", "hub.heartbeat", "posture", "activity.summary"}

DEMO_CONFIG = """\
[hub]
id = "demo-0001"
resident_id = "R-DEMO"
timezone = "{tz}"
state_dir = "{state_dir}"
# real seconds: the hub fetches the staff's acknowledgement on its next upload, and while the
# simulation runs at real time a heartbeat is the next upload
heartbeat_interval = "10s"
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
# the radar's script pauses during the real-time section: not a disconnection
stale_timeout = "90s"

[gpio]
pin_factory = "mock"
sos_hold = "{sos_hold}s"

# the resident's watch: a simulated one that bleak itself talks to (through its backend= argument)
[watch]
address = "{watch}"
profile = "standard"

# a GSM modem on a pseudo-terminal: the duty desk's phone is texted priority-1 alerts
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
WATCH = "C0:FF:EE:00:00:01"
WATCH_VITALS_AT_S = (1800, 10800)     # the watch's heart rate and battery at 23:30 and 02:00
WATCH_SOS_AT_S = 2 * 3600 + 1800      # and SOS pressed on the watch at 01:30, with a location
HOME_LAT, HOME_LON = 31.2304, 121.4737


def demo_plan() -> simulator.NightPlan:
    night = simulator.NightPlan()
    return simulator.NightPlan(
        up_at_s=night.up_at_s, end_s=night.up_at_s + 65 * 60,  # out of bed long enough to end the night
        incidents=(simulator.Incident(simulator.VITALS_ABSENT, at_s=5 * 3600, duration_s=150),),
    )


class SteadyWall:
    """Wall-clock readings that advance with the monotonic clock: latencies measured on it stay
    true even if NTP steps the system clock during the demo. The receiver stamps with it too."""

    def __init__(self):
        self._wall0 = datetime.now(timezone.utc)
        self._mono0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self._mono0

    def __call__(self) -> datetime:
        return self._wall0 + timedelta(seconds=self.elapsed())


@dataclass
class AlertRow:
    alert_id: str
    rule: str
    priority: int
    state: str
    raised_sim: str = ""
    committed_real: datetime | None = None
    latency_s: float | None = None     # commit -> accepted at the receiver, real seconds


@dataclass
class Board:
    """What the live view shows; filled from committed events, the engine and the receiver."""

    devices: dict = field(default_factory=dict)
    hr_bpm: float | None = None
    rr_per_min: float | None = None
    in_bed: bool | None = None
    alerts: dict = field(default_factory=dict)          # alert_id -> AlertRow, in raise order
    queue: dict = field(default_factory=dict)
    committed: int = 0
    delivered: int = 0
    sync_state: str | None = None
    last_sync_real: float | None = None
    pace: str = ""


class View:
    """The live terminal view on a TTY (redrawn in place with ANSI), plain lines otherwise."""

    def __init__(self, out, clock: ManualClock, tz, wall: SteadyWall, speed: float):
        self.out, self.clock, self.tz, self.wall, self.speed = out, clock, tz, wall, speed
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self.recent: list[str] = []
        self.header: list[str] = []
        self.before_stamp = None   # brings the simulated clock up to date while it follows real time

    def stamp(self, sim: datetime | None = None) -> str:
        if self.before_stamp is not None:
            self.before_stamp()
        sim = (sim or self.clock.now()).astimezone(self.tz).strftime("%H:%M:%S")
        return f"sim {sim}  real {_real(self.wall.elapsed())}"

    def line(self, text: str, sim: datetime | None = None) -> None:
        """``sim``: the simulated instant the line is about (an event's own time), else now."""
        text = f"{self.stamp(sim)}  {text}"
        if self.tty:
            self.recent = (self.recent + [text])[-RECENT_LINES:]
        else:
            print(text, file=self.out, flush=True)

    def text(self, text: str = "") -> None:
        """Outside the board (banner, summary): printed as is."""
        print(text, file=self.out, flush=True)

    def draw(self, board: Board) -> None:
        if not self.tty:
            return
        rows = self.header + [f"  clock     {self.stamp()}   pace: {board.pace}", ""]
        rows += ["  " + line for line in board_lines(board)]
        rows += ["", "  recent (sim = the night's simulated clock, real = seconds since the demo started)"]
        rows += ["    " + r for r in self.recent]
        try:   # clipped to the terminal's width: a wrapped row would spoil the redraw
            width = os.get_terminal_size(self.out.fileno()).columns
        except (AttributeError, OSError, ValueError):
            width = 200
        self.out.write("\x1b[H\x1b[J" + "\n".join(r[:width] for r in rows) + "\n")
        self.out.flush()


def board_lines(board: Board, plain: bool = False) -> list[str]:
    devices = ", ".join(f"{DEVICE_NAMES.get(n, n)} {d.get('state')}" for n, d in sorted(board.devices.items()))
    vitals = (f"heart {_num(board.hr_bpm)} bpm, breathing {_num(board.rr_per_min)}/min, "
              f"{'in bed' if board.in_bed else 'out of bed' if board.in_bed is not None else 'bed not seen yet'}")
    queue = sum(board.queue.values())
    by_prio = ", ".join(f"P{k} {v}" for k, v in sorted(board.queue.items()))
    sync = (f"{board.last_sync_real:.1f} s ago (real), server {board.sync_state}"
            if board.last_sync_real is not None else "not yet")
    rows = [("devices", devices or "none yet"), ("vitals", vitals),
            ("queue", f"{queue} waiting ({by_prio or 'empty'}); "
                      f"{board.committed} committed, {board.delivered} at the server"),
            ("last sync", sync)]
    if not plain:
        alerts = [f"P{a.priority} {a.rule:<15} {a.state:<12} raised {a.raised_sim or '-':<8}  " + (
                  f"delivered {a.latency_s * 1000:.0f} ms" if a.latency_s is not None
                  else "not delivered yet" if a.committed_real else "") for a in board.alerts.values()]
        rows += [("alerts" if i == 0 else "", text) for i, text in enumerate(alerts or ["none yet"])]
        return [f"{label:<10}{text}" for label, text in rows]
    return [" | ".join(f"{label} {text}" for label, text in rows)]


def _num(v) -> str:
    return "-" if v is None else f"{v:g}"


def _real(seconds: float) -> str:
    m, s = divmod(max(seconds, 0.0), 60)
    return f"{int(m)}:{s:04.1f}"


class Demo:
    def __init__(self, speed: float, workdir: Path, out):
        self.speed, self.workdir = speed, workdir
        self.tz = ZoneInfo(TZ)
        self.wall = SteadyWall()
        start = datetime.now(self.tz).replace(hour=23, minute=0, second=0, microsecond=0)
        self.clock = ManualClock(start, mono=0.0)
        self.view = View(out, self.clock, self.tz, self.wall, speed)
        self.board = Board(pace=f"{speed:g}x real time")
        self.hub: Hub | None = None
        self.server = None
        self.modem = None
        self.sim_watch = None
        self.next_status_s = STATUS_EVERY_S

    # --- committed events ------------------------------------------------------------------
    def committed(self, e) -> None:
        b, d = self.board, e.data
        b.committed += 1
        if e.type == "vitals.minute":
            # a minute without a heart rate (breathing only, or nothing) keeps the last one shown
            b.hr_bpm = d.get("hr_avg_bpm") if d.get("hr_avg_bpm") is not None else b.hr_bpm
            b.rr_per_min = d.get("rr_avg_per_min") if d.get("rr_avg_per_min") is not None else b.rr_per_min
        elif e.type in ("bed.entered", "bed.exited"):
            b.in_bed = e.type == "bed.entered"
            if not b.in_bed:   # the radar measures vitals in bed only
                b.hr_bpm = b.rr_per_min = None
        elif e.type == "device.status":
            b.devices[d.get("device")] = {"state": d.get("state")}
        if e.type.startswith("alert.") and d.get("alert_id"):
            row = b.alerts.get(d["alert_id"])
            if row is None:
                row = b.alerts[d["alert_id"]] = AlertRow(d["alert_id"], d.get("rule", "?"),
                                                         d.get("priority", e.priority), "pending")
            if e.type != "alert.notified":   # a text about the alert is not a change of its state
                row.state = e.type.removeprefix("alert.")
            if e.type == "alert.raised":
                row.priority = d.get("priority", e.priority)
                row.raised_sim = self.sim_hms()
                row.committed_real = self.wall()
        if e.type in QUIET_EVENTS:
            return
        # low-priority events are committed in batches: stamp each with its own simulated time
        occurred = datetime.fromisoformat(e.occurred_at.replace("Z", "+00:00"))
        self.view.line(f"#{e.seq:<4} {e.type:<18} P{e.priority}  {describe(e)}", sim=occurred)

    def sim_hms(self) -> str:
        return self.clock.now().astimezone(self.tz).strftime("%H:%M:%S")

    def panel(self, led: str, buzzer: str) -> None:
        self.view.line(f"      panel: light {led}, sound {buzzer}")

    # --- the live view's loop ----------------------------------------------------------------
    async def watch(self) -> None:
        """Polls the engine, the store and the receiver in real time and redraws."""
        while True:
            await self.refresh()
            self.view.draw(self.board)
            await asyncio.sleep(REDRAW_S)

    async def refresh(self) -> None:
        hub, b = self.hub, self.board
        b.devices.update({n: {"state": d.get("state")} for n, d in hub.runner.pipeline.devices.items()})
        for a in hub.runner.pipeline.engine.active_alerts():
            row = b.alerts.get(a["alert_id"])
            if row is None:   # pending: the condition holds, nothing committed yet
                row = b.alerts[a["alert_id"]] = AlertRow(a["alert_id"], a["rule"], a["priority"], "pending")
            if row.state in ("pending", "prealert", "raised", "acknowledged"):
                row.state = ALERT_STATES.get(a["stage"], a["stage"])
        b.queue = {int(k): v for k, v in (await hub.store.depth()).items()}
        b.sync_state = hub.uploader.state if hub.uploader else None
        received = await asyncio.to_thread(self.server.db.alerts, 1000)
        b.delivered = await asyncio.to_thread(self._received_count)
        for r in reversed(received):
            row = b.alerts.get(r["alert_id"])
            if row is None or row.latency_s is not None or row.committed_real is None:
                continue
            at = datetime.fromisoformat(r["received_at"].replace("Z", "+00:00"))
            committed_ms = row.committed_real.replace(microsecond=row.committed_real.microsecond // 1000 * 1000)
            row.latency_s = max(0.0, (at - committed_ms).total_seconds())
            self.view.line(f"delivered  P{row.priority} {row.rule} at the server, "
                           f"{row.latency_s * 1000:.0f} ms after its commit (real)")
        last = await hub.store.get_state("sync.last_success")
        if isinstance(last, dict) and last.get("at"):
            at = datetime.fromisoformat(last["at"].replace("Z", "+00:00"))
            b.last_sync_real = max(0.0, (datetime.now(timezone.utc) - at).total_seconds())
        if not self.view.tty and self.clock.monotonic() >= self.next_status_s:
            self.next_status_s += STATUS_EVERY_S
            self.view.line("status     " + board_lines(b, plain=True)[0])

    def _received_count(self) -> int:
        return len(self.server.events())

    # --- the real-time section ----------------------------------------------------------------
    async def sos_in_real_time(self) -> None:
        """The resident holds SOS for real seconds; the staff answer in real seconds."""
        hub, b, v = self.hub, self.board, self.view
        engine = hub.runner.pipeline.engine
        previous_pace, b.pace = b.pace, "1x: real time (a person is acting)"
        v.line("---- real time: the simulation runs at 1x while people act ----")
        last = [time.monotonic()]

        def follow() -> None:
            now = time.monotonic()
            self.clock.advance(now - last[0])
            last[0] = now

        follower = asyncio.create_task(self._clock_follows_real_time(follow))
        v.before_stamp = follow
        try:
            pin = hub.pin_factory.pin(hub.cfg["gpio"]["sos_pin"])
            from offline_queue.receiver import Fault
            self.server.faults.hold(Fault("status", 503))
            v.line("      the home's internet is down: the community server answers 503")
            v.line(f"      the resident presses SOS and holds it ({SOS_HOLD_S:g} s, real time)")
            pressed = time.monotonic()
            pin.drive_low()
            await _until(lambda: self._sos() is not None, REALTIME_TIMEOUT_S)
            await asyncio.sleep(0.2)
            pin.drive_high()
            v.line(f"      the resident lets go after {time.monotonic() - pressed:.1f} s (real)")
            sos = self._sos()
            if sos is None:
                v.line("      no SOS alert was raised (see the log above)")
                return
            # the home's internet is down: the bound phone is texted through the GSM modem
            await _until(lambda: any("SOS" in s.text for s in self.modem.texts()), REALTIME_TIMEOUT_S)
            await asyncio.sleep(STAFF_REACTION_S)
            v.line(f"      the duty desk replies OK from {PHONE}, {STAFF_REACTION_S:g} s after the text (real)")
            acked = time.monotonic()
            self.modem.inject_sms(PHONE, "OK")
            await _until(lambda: any(a["alert_id"] == sos.alert_id and a["stage"] == "acked"
                                     for a in engine.active_alerts()), REALTIME_TIMEOUT_S)
            v.line(f"      the hub took the reply as an acknowledgement, {time.monotonic() - acked:.1f} s later (real)")
            self.server.faults.clear()
            v.line("      the internet is back: the alert, the text's record and the ack go to the server")
            await _until(lambda: sos.latency_s is not None, REALTIME_TIMEOUT_S)
        finally:
            follower.cancel()
            v.before_stamp = None
            b.pace = previous_pace
            v.line(f"---- back to {self.speed:g}x ----")

    # --- the watch ---------------------------------------------------------------------------
    async def watch_vitals(self, bpm: int, pct: int) -> None:
        from drivers.watch import gatt
        from drivers.watch.simulator import encode_heart_rate
        engine = self.hub.runner.pipeline.engine
        self.view.line(f"      the watch reports heart rate {bpm} bpm, battery {pct}%")
        self.sim_watch.notify(gatt.HEART_RATE_MEASUREMENT, encode_heart_rate(bpm))
        self.sim_watch.set_battery(pct)
        await _until(lambda: engine.state["watch"]["battery"] == pct, REALTIME_TIMEOUT_S)

    async def watch_fix(self) -> None:
        from drivers.watch import gatt
        from drivers.watch.simulator import encode_location
        self.sim_watch.notify(gatt.LOCATION_AND_SPEED, encode_location(HOME_LAT, HOME_LON))
        await _until(lambda: self.hub.runner.pipeline.watch.fix is not None, REALTIME_TIMEOUT_S)

    async def watch_sos(self) -> None:
        """SOS on the watch, with where the resident is; staff acknowledge it at the server."""
        engine = self.hub.runner.pipeline.engine
        self.view.line("      the resident presses SOS on the watch")
        self.sim_watch.press()
        await _until(lambda: any(a["rule"] == "sos" for a in engine.active_alerts()), REALTIME_TIMEOUT_S)
        sos = self._sos()
        if sos is not None:
            await _until(lambda: sos.latency_s is not None, REALTIME_TIMEOUT_S)
            await asyncio.to_thread(self.server.ack, sos.alert_id, "staff (demo)")
            self.view.line("      staff acknowledge the watch's SOS at the server")

    async def phone(self) -> None:
        """Show each text as the bound phone's simulated modem receives it."""
        shown = 0
        while True:
            texts = self.modem.texts()
            for sms in texts[shown:]:
                self.view.line(f"      SMS to {sms.number}: {sms.text}")
            shown = len(texts)
            await asyncio.sleep(0.05)

    def _sos(self) -> AlertRow | None:
        """The SOS alert now open (the watch's of 01:30 is closed by the panel's at 04:40)."""
        return next((a for a in reversed(self.board.alerts.values())
                     if a.rule == "sos" and a.committed_real and a.state != "resolved"), None)

    @staticmethod
    async def _clock_follows_real_time(follow) -> None:
        while True:
            await asyncio.sleep(0.02)
            follow()

    # --- the whole run ------------------------------------------------------------------------
    async def run(self) -> int:
        from gpiozero.pins.mock import MockFactory
        from offline_queue.receiver import make_server

        workdir, v = self.workdir, self.view
        token = secrets.token_urlsafe(24)
        token_file = workdir / "token"
        token_file.write_text(token + "\n")
        os.chmod(token_file, 0o600)
        self.server = server = make_server("127.0.0.1", 0, workdir / "receiver.db", token, now=self.wall)
        threading.Thread(target=server.serve_forever, name="receiver", daemon=True).start()

        master, slave = os.openpty()
        belt = workdir / "belt"
        belt.symlink_to(os.ttyname(slave))
        cfg_path = workdir / "config.toml"
        from drivers.modem.simulator import FakeModem
        self.modem = FakeModem().start()
        cfg_path.write_text(DEMO_CONFIG.format(tz=TZ, state_dir=workdir / "state", url=server.url,
                                               token_file=token_file, belt=belt, sos_hold=SOS_HOLD_S,
                                               modem=self.modem.port, phone=PHONE, watch=WATCH))
        cfg = config.load(cfg_path)
        self.hub = hub = Hub(cfg, clock=self.clock, pin_factory=MockFactory())
        from drivers.watch.simulator import SimulatedWatch
        self.sim_watch = SimulatedWatch(WATCH, battery_pct=64)
        hub.watch_options = dict(client_backend=self.sim_watch.client_backend,
                                 scanner_backend=self.sim_watch.scanner_backend,
                                 reconnect_min_s=0.05, scan_timeout_s=2.0)
        hub.tick_s = max(0.01, 20.0 / self.speed)
        hub.show_listeners.append(self.panel)

        v.header = [
            f"CareHub demo: a simulated night of the real hub at {self.speed:g}x (about 2 min); "
            f"Ctrl-C stops it",
            f"  simulated bed radar on a pseudo-terminal, the resident's panel on mock GPIO pins, a community",
            f"  server on {server.url} (loopback only): no hardware, no root, no network.",
            "  Scenario: to bed at 23:05; up at 02:00 for 35 min (alert); no vital signs at 04:00",
            "  (alert); the watch reports HR and battery, SOS on the watch at 01:30 with a location;",
            "  SOS held on the panel at 04:40 while the internet is down: the duty desk's phone gets a text",
            "  and replies OK, in real time; up at 07:00 (report).",
            "  sim = the night's simulated clock; real = real time since the demo started.",
            ""]
        for text in v.header:
            v.text(text)
        watcher = None
        try:
            hub.store.subscribe(self.committed)   # before start: the first events count too
            await hub.start()
            watcher = asyncio.create_task(self.watch())
            phone = asyncio.create_task(self.phone())
            engine = hub.runner.pipeline.engine
            # the watch is found before the night starts (its first status is the same every run)
            await _until(lambda: hub.watch.state == "connected"
                         and "watch" in hub.runner.pipeline.devices, REALTIME_TIMEOUT_S)
            at = {t: (lambda i=i: self.watch_vitals(62 + i, 64 - i))
                  for i, t in enumerate(WATCH_VITALS_AT_S)}
            at[WATCH_SOS_AT_S - 20] = self.watch_fix   # the fix is 20 s old at the press
            at[WATCH_SOS_AT_S] = self.watch_sos
            await simulator.play_in_step(
                master, simulator.night_script(demo_plan()), speed=self.speed, step_s=STEP_S,
                at={**at, SOS_AT_S: self.sos_in_real_time},
                set_time=lambda t: self.clock.advance(max(0.0, t - self.clock.monotonic())),
                handled=lambda: engine.readings_handled)
            # the night is over: simulated time stands still while the last events go out
            self.board.pace = "night over: sending the last events"
            v.line("the night is over; sending what is still queued")
            await hub.store.flush()
            await _until(lambda: self._all_delivered(), timeout_s=30, poll_s=0.2)
            await self.refresh()
            v.draw(self.board)
        finally:
            if watcher is not None:
                watcher.cancel()
                phone.cancel()
            await hub.stop()
            self.modem.close()
            server.shutdown()
            total = self._received_count()
            server.server_close()
            os.close(master)
            os.close(slave)
        return self.summary(total)

    def _all_delivered(self) -> bool:
        b = self.board
        return (b.committed > 0 and b.delivered >= b.committed
                and all(a.latency_s is not None for a in b.alerts.values() if a.committed_real))

    def summary(self, delivered: int) -> int:
        b, v = self.board, self.view
        raised = [a for a in b.alerts.values() if a.committed_real]
        arrived = [a for a in raised if a.latency_s is not None]
        sim_s = self.clock.monotonic()
        v.text("")
        v.text(f"Summary: {_real(self.wall.elapsed())} real time for {sim_s / 3600:.1f} h of simulated night")
        v.text(f"  events: {b.committed} committed, {delivered} delivered to the community server")
        v.text(f"  alerts: {len(raised)} raised, {len(arrived)} delivered")
        for a in raised:
            got = f"delivered in {a.latency_s * 1000:.0f} ms" if a.latency_s is not None else "NOT delivered"
            v.text(f"    P{a.priority} {a.rule:<16} raised {a.raised_sim} (sim), {got} (real), now {a.state}")
        if arrived:
            worst = max(a.latency_s for a in arrived)
            v.text(f"  latency commit -> accepted at the receiver: at most {worst * 1000:.0f} ms (real time)")
        ok = raised and len(arrived) == len(raised) and delivered >= b.committed
        v.text("  every alert reached the community server" if ok else
               "  NOT everything reached the community server (see above)")
        return 0 if ok else 1


def describe(e) -> str:
    d = e.data
    if e.type == "alert.notified":   # a text to a bound phone (the [sms] fallback)
        return f"{d.get('channel')} to {d.get('to')} ({d.get('name', '')}): {d.get('result')}"
    if e.type.startswith("alert."):
        what = f"{d.get('rule', '')} {d.get('message') or d.get('reason') or d.get('by') or ''}".strip()
        loc = (d.get("details") or {}).get("location") if e.type == "alert.raised" else None
        if loc:   # the watch's last fix
            what += f" at {loc['lat']:.4f}, {loc['lon']:.4f} (fix {loc['age_s']:g} s old)"
        return what
    if e.type == "device.status":
        what = f"{DEVICE_NAMES.get(d.get('device'), d.get('device'))} {d.get('state')}"
        return what + (f", battery {d['battery_pct']}%" if d.get("battery_pct") is not None else "")
    if e.type == "sleep.report":
        exits = d.get("bed_exits") or {}
        return (f"in bed {d.get('time_in_bed_min')} min, asleep {d.get('sleep_min')} min, "
                f"{exits.get('count')} bed exit(s) ({exits.get('minutes')} min), "
                f"{d.get('turnovers')} turn-overs")
    return ""


async def _until(predicate, timeout_s: float, poll_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(poll_s)
    return True


def main(speed: float = DEFAULT_SPEED, keep: bool = False, out=sys.stdout) -> int:
    if speed <= 0:
        print("carehub demo: --speed must be positive", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="carehub-demo-"))
    try:
        return asyncio.run(Demo(speed, workdir, out).run())
    except KeyboardInterrupt:
        print("\ncarehub demo: stopped", file=out)
        return 130
    finally:
        if keep:
            print(f"kept {workdir}", file=out)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
