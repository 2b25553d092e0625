"""From bytes and observations to committed events: the one path shared by the daemon, the demo
and `carehub replay`, so a recorded night replays exactly as the daemon lived it.

Belt bytes -> decoder -> readings -> alert engine (the resident's fused state: bed.entered/exited,
vitals.minute; the rules: alerts) -> events to the sink; panel outputs to whoever shows them. The clock is read
for every step: the daemon passes the system clock, replay a clock driven by the recording.
"""

from __future__ import annotations

import logging
from typing import Callable, Protocol

from drivers.belt.decoder import make_decoder
from drivers.belt.reading import Reading
from hub.config import timezone_of
from hub.events import Event, EventFactory
from hub.rules.actions import Emit, Panel
from hub.rules.engine import AlertEngine
from hub.rules.observations import BeltReading, DeviceStatus, Now, Tick
from hub.stages import guarded
from hub.watch import WatchMapper, status_info
from drivers.watch.reports import LinkStatus as WatchLinkStatus

LOGGER = logging.getLogger(__name__)

ENGINE_STATE_KEY = "alerts.engine"
ACTIVE_ALERTS_KEY = "alerts.active"
DEVICES_KEY = "hub.devices"
TICK_S = 1.0  # how often time-based rules are evaluated without input
# The engine's state is saved with every event it emits; otherwise at most this often, so that
# a restart loses little (the engine bridges the gap by wall time) and the SD card is spared.
STATE_SAVE_S = 300.0
# Routine events the engine emits go to the store's batch (spared fsyncs), not one commit each.
BATCHED_EVENTS = frozenset(("vitals.minute", "bed.entered", "bed.exited"))


class EventSink(Protocol):
    async def commit(self, event: Event, *, state: dict | None = None) -> Event: ...

    def enqueue(self, event: Event) -> None: ...

    async def save_state(self, state: dict) -> None: ...


class Pipeline:
    """Owns the decoder and the alert engine for one home."""

    def __init__(self, cfg: dict, clock, factory: EventFactory, sink: EventSink, *,
                 engine_state=None, show: Callable[[str, str], None] | None = None,
                 seed: str | None = None):
        self.cfg = cfg
        self.clock = clock
        self.tz = timezone_of(cfg)
        self.factory = factory
        self.sink = sink
        self.show = show
        belt = cfg.get("belt")
        self.decoder = make_decoder(belt["protocol"]) if belt else None
        params = {**cfg["rules"], "alerts": cfg["alerts"], "sleep_report": cfg["sleep_report"]}
        if belt:
            params["bed"] = {"enter_debounce": belt["enter_debounce"],
                             "exit_debounce": belt["exit_debounce"]}
        if belt is None:  # no belt: its silence is not news
            params["belt_offline"] = dict(params["belt_offline"], enabled=False)
        try:
            self.engine = AlertEngine(params, state=engine_state, seed=seed)
        except (ValueError, KeyError, TypeError) as e:  # never a crash loop over a bad saved state
            LOGGER.error("saved alert state unusable (%s): starting with a fresh one", e)
            self.engine = AlertEngine(params, seed=seed)
        self.devices: dict[str, dict] = {}
        self.watch = WatchMapper()
        self.panel_state: tuple[str, str] | None = None
        self._saved_at: float | None = None

    def now(self) -> Now:
        return Now(self.clock.monotonic(), self.clock.now().astimezone(self.tz))

    # --- inputs ------------------------------------------------------------------------------
    # Each entry point is a stage boundary: one input that fails in it is dropped and counted.
    @guarded("decoder")
    async def belt_bytes(self, data: bytes) -> None:
        for reading in self.decoder.feed(data):
            await self.reading(reading)

    @guarded("bed")
    async def reading(self, reading: Reading) -> None:
        await self.observe(BeltReading(reading))

    @guarded("bed")
    async def tick(self) -> None:
        await self.observe(Tick())

    @guarded("watch")
    async def watch_report(self, report) -> None:
        """One report of the watch link (drivers/watch/reports.py), mapped by hub/watch.py."""
        if isinstance(report, WatchLinkStatus):
            await self.device_status("watch", report.state, status_info(report))
            return
        now = self.now()
        obs = self.watch.observation(report, now.mono)
        if obs is not None:
            await self.observe(obs, now)

    @guarded("rules")
    async def device_status(self, device: str, state: str, info: dict | None = None) -> None:
        """A driver's link changed: a device.status event, and the rules hear of it."""
        info = dict(info or {})
        if device == "belt" and self.decoder is not None and self.decoder.firmware:
            info["firmware"] = self.decoder.firmware
        self.devices[device] = {"state": state, **{k: v for k, v in info.items() if k != "reason"}}
        event = self.factory.make("device.status", {"device": device, "state": state, **info})
        await self.sink.commit(event, state={DEVICES_KEY: self.devices})
        await self.observe(DeviceStatus(device, state, info.get("battery_pct")))

    @guarded("rules")
    async def observe(self, observation, now: Now | None = None, *, save: bool = False) -> None:
        """Run the engine; commit what it emits together with its state."""
        now = now or self.now()
        events = []
        for action in self.engine.handle(observation, now):
            if isinstance(action, Emit):
                event = self.factory.make(action.type, action.data, action.priority)
                if action.type in BATCHED_EVENTS:
                    self.sink.enqueue(event)
                    save = save or action.type != "vitals.minute"   # the bed changed
                else:
                    events.append(event)
            elif isinstance(action, Panel):
                self._show(action.led, action.buzzer)
        due = self._saved_at is None or now.mono - self._saved_at >= STATE_SAVE_S
        if not (events or save or due):
            return
        self._saved_at = now.mono
        state = {ENGINE_STATE_KEY: self.engine.state, ACTIVE_ALERTS_KEY: self.engine.active_alerts()}
        for event in events[:-1]:
            await self.sink.commit(event)
        if events:
            await self.sink.commit(events[-1], state=state)
        else:
            await self.sink.save_state(state)

    @guarded("store")
    async def emit(self, type_: str, data: dict, priority: int | None = None) -> None:
        event = self.factory.make(type_, data, priority)
        if event.priority == 3:
            self.sink.enqueue(event)
        else:
            await self.sink.commit(event)

    def _show(self, led: str, buzzer: str) -> None:
        if (led, buzzer) == self.panel_state:
            return
        self.panel_state = (led, buzzer)
        LOGGER.info("panel: light %s, sound %s", led, buzzer)
        if self.show is not None:
            self.show(led, buzzer)
