"""The composition root of `carehub run`: everything is built here from the configuration.

Nothing else opens a port, a pin or a file of the store; the parts get what they need passed in.
One asyncio loop; SQLite lives on the store's own thread, requests on worker threads, gpiozero
callbacks are handed to the loop explicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections import deque
from pathlib import Path
from typing import Awaitable, Callable

from hub import __version__
from hub.clock import SystemClock
from hub.config import read_token, timezone_of
from hub.configtypes import BadValue
from hub.errors import ConfigError
from hub.events import EventFactory
from hub.feed import LiveFeed, feed_path
from hub.notify import Notifier
from hub.pipeline import ENGINE_STATE_KEY, TICK_S, Pipeline
from hub.rules.observations import ButtonPress, StaffAck
from hub.stages import (
    MAX_QUEUED_BELT_BYTES, BeltBytes, CommitQueue, InputQueue, LinkStatus, TickDue, stage_faults,
)
from hub.watch import WatchReported
from drivers.belt.link import BeltLink
from offline_queue.store import AsyncStore

LOGGER = logging.getLogger(__name__)

STORE_FILE = "events.db"
# Events after which systemd's STATUS= line is brought up to date.
STATUS_EVENTS = {"device.status", "alert.raised", "alert.escalated", "alert.acknowledged",
                 "alert.resolved", "alert.cancelled"}
STOP_TIMEOUT_S = 4.0  # systemd and the spec give us 5 s
# A task that stops unexpectedly is restarted after RESTART_MIN_S, doubling to RESTART_MAX_S;
# more than MAX_RESTARTS in RESTART_WINDOW_S and the hub exits EX_SOFTWARE, so that systemd
# starts it afresh: never a hub that runs on without watching.
RESTART_MIN_S = 0.5
RESTART_MAX_S = 30.0
MAX_RESTARTS = 5
RESTART_WINDOW_S = 600.0
EX_SOFTWARE = 70
DROPPED_KEY = "inputs.dropped"
# Decoder counters that are not dropped input.
_NOT_DROPPED = {"frames_ok", "unknown", "handshakes_deferred"}


def store_path(cfg: dict) -> Path:
    return Path(cfg["hub"]["state_dir"]) / STORE_FILE


class Hub:
    """The running daemon: owns the tasks and their orderly stop."""

    def __init__(self, cfg: dict, *, clock=None, notifier=None, pin_factory=None):
        self.cfg = cfg
        self.clock = clock or SystemClock(timezone_of(cfg))
        self.notifier = notifier or Notifier()
        self.pin_factory = pin_factory
        self.factory = EventFactory(cfg["hub"]["id"], cfg["hub"]["resident_id"], self.clock)
        st = cfg["store"]
        self.store = AsyncStore(
            store_path(cfg),
            quota_bytes=st["quota_mb"] * 2**20,
            make_event=self.factory.make,
            batch_interval_s=st["batch_interval"],
            batch_max=st["batch_max"],
        )
        self.stop_event = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._supervised: dict[str, Callable[[], Awaitable]] = {}
        self._failures: dict[str, deque] = {}
        self.restart_min_s, self.restart_max_s = RESTART_MIN_S, RESTART_MAX_S
        self.max_restarts, self.restart_window_s = MAX_RESTARTS, RESTART_WINDOW_S
        self.components: list = []   # objects with async run() and stop()
        self.commits: CommitQueue | None = None
        self.healthy = True
        self.exit_code = 0
        self._dropped_saved: dict = {}
        self.tick_s = TICK_S
        self.panel = None
        self.uploader = None
        self.runner = None
        self.feed = None
        self.phones = None   # hub.notifier.PhoneNotifier when [sms] is configured
        self.show_listeners: list = []
        self.watch = None
        self.watch_recorder = None      # a drivers.watch.recording.WatchRecorder, if recording
        self.watch_options: dict = {}   # more WatchLink arguments: a simulated watch's backends

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        await self.store.open()
        self.store.subscribe(self._committed)
        self.components = await self._build_components()
        for comp in self.components:
            self.supervise(type(comp).__name__, comp.run)
        await self._heartbeat()  # the first one says the hub (re)started
        self.supervise("heartbeat", self._heartbeat_loop)
        if self.notifier.watchdog_interval_s:
            interval = self.notifier.watchdog_interval_s
            self.supervise("watchdog", lambda: self._watchdog_loop(interval))
        from hub import lastgood
        await lastgood.after_start(self.cfg, self.store, self.factory)
        self.notifier.ready(self.describe())
        LOGGER.info("carehub %s running: %s", __version__, self.describe())

    def supervise(self, name: str, run: Callable[[], Awaitable]) -> None:
        """Run ``run()`` as a task for the hub's life, restarted with backoff if it ever stops."""
        self._supervised[name] = run
        self._failures[name] = deque()
        self._start(name)

    def _start(self, name: str) -> None:
        task = asyncio.create_task(self._supervised[name](), name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)
        name = task.get_name()
        if self.stop_event.is_set() or name not in self._supervised:
            return
        exc = None if task.cancelled() else task.exception()
        why = repr(exc) if exc is not None else "it was cancelled" if task.cancelled() else "it returned"
        now = asyncio.get_running_loop().time()
        failures = self._failures[name]
        failures.append(now)
        while failures and now - failures[0] > self.restart_window_s:
            failures.popleft()
        if len(failures) > self.max_restarts:
            LOGGER.critical("%s stopped %d times within %.0f s (last: %s): exiting so that systemd "
                            "restarts the hub", name, len(failures), self.restart_window_s, why,
                            exc_info=exc)
            self.healthy = False
            self.exit_code = EX_SOFTWARE
            self.notifier.status(f"failed: {name} keeps stopping ({why})")
            self.stop_event.set()
            return
        delay = min(self.restart_min_s * 2 ** (len(failures) - 1), self.restart_max_s)
        LOGGER.error("%s stopped unexpectedly (%s): restarting it in %.1f s", name, why, delay,
                     exc_info=exc)
        self.notifier.status(f"restarting {name} ({why})")
        timer = asyncio.create_task(self._restart_after(name, delay), name=f"restart {name}")
        self._tasks.append(timer)
        timer.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def _restart_after(self, name: str, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        if not self.stop_event.is_set():
            self._start(name)
            self.notifier.status(self.describe())

    async def stop(self) -> None:
        self.stop_event.set()
        self.notifier.stopping()
        for comp in self.components:
            with contextlib.suppress(Exception):
                comp.stop()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=STOP_TIMEOUT_S / 2)
        if self.commits is not None:
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await asyncio.wait_for(self.commits.drain(), STOP_TIMEOUT_S / 4)
        await self.store.close()

    async def run(self) -> int:
        """Until stop_event; the exit status: 0, or EX_SOFTWARE when a task could not be kept up."""
        await self.start()
        await self.stop_event.wait()
        return self.exit_code

    async def _build_components(self) -> list:
        """The devices, the pipeline and the uploader, as the configuration asks."""
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        engine_state = await self.store.get_state(ENGINE_STATE_KEY)
        self.commits = CommitQueue(self.store)
        self.runner = runner = PipelineRunner(
            Pipeline(cfg, self.clock, self.factory, self.commits, engine_state=engine_state,
                     show=self._show),
            tick_s=self.tick_s)
        comps: list = [self.commits, runner]
        if cfg["gpio"] is not None:
            try:
                self.panel = build_panel(cfg["gpio"], self.pin_factory, loop,
                                         on_press=lambda button: runner.put(ButtonPress(button, "panel")))
            except Exception as e:  # no GPIO here, pins taken: report it and keep the rest running
                LOGGER.error("resident panel unavailable: %s", e)
                await runner.pipeline.device_status("gpio", "disconnected", {"reason": str(e)})
            else:
                comps.append(PanelComponent(self.panel))
                await runner.pipeline.device_status("gpio", "connected")
        if cfg["belt"] is not None or cfg.get("watch") is not None:
            self.feed = feed = LiveFeed(feed_path(cfg), self.clock)
            comps.append(feed)
        if cfg["belt"] is not None:
            belt = cfg["belt"]

            def belt_bytes(data: bytes) -> None:
                runner.put(BeltBytes(data))   # the pipeline first: a feed problem never costs it
                feed.belt_bytes(data)

            def belt_status(state: str, info: dict) -> None:
                runner.put(LinkStatus("belt", state, info))
                feed.belt_status(state, info)

            link = BeltLink(
                belt["port"], baudrate=belt["baudrate"], on_bytes=belt_bytes,
                on_status=belt_status,
                stale_timeout_s=belt["stale_timeout"], reconnect_max_s=belt["reconnect_max"],
                handshake=runner.pipeline.decoder.handshake_frames())
            runner.link = link
            comps.append(link)
        if cfg.get("watch") is not None:
            recorder = self.watch_recorder or _feed_recorder(self.feed, self.clock)
            self.watch = build_watch(cfg["watch"], self.clock,
                                     on_report=lambda r: runner.put(WatchReported(r)),
                                     recorder=recorder, **self.watch_options)
            comps.append(self.watch)
        if cfg["server"]["url"]:
            # The network lives in real time whatever clock the rules run on (the demo's is faster).
            self.uploader = build_uploader(cfg, self.store, SystemClock(timezone_of(cfg)),
                                           on_ack=lambda a, by, at: runner.put(StaffAck(a, by, at)),
                                           on_status=lambda state, detail: self.notifier.status(self.describe()),
                                           make_event=self.factory.make)
            comps.append(self.uploader)
        if cfg["sms"] is not None:
            self.phones = build_phone_notifier(cfg, self, runner)
            comps.append(self.phones)
        return comps

    def _show(self, led: str, buzzer: str) -> None:
        if self.panel is not None:
            self.panel.show(led, buzzer)
        for cb in self.show_listeners:
            cb(led, buzzer)

    def describe(self) -> str:
        """One line for systemd's STATUS=: devices, server, active alerts."""
        parts = [f"hub {self.cfg['hub']['id']}"]
        if self.runner is not None:
            pipeline = self.runner.pipeline
            parts += [f"{name} {d['state']}" for name, d in sorted(pipeline.devices.items())]
            if self.cfg["belt"] is not None and "belt" not in pipeline.devices:
                parts.append("belt not seen yet")
            if self.cfg.get("watch") is not None and "watch" not in pipeline.devices:
                parts.append("watch not seen yet")
            active = pipeline.engine.active_alerts()
            parts.append(f"{len(active)} active alert(s)" if active else "no active alert")
        if self.commits is not None and self.commits.failing:
            parts.append(f"store failing, {self.commits.held} event(s) held")
        if self.uploader is not None:
            parts.append(f"server {self.uploader.state or 'not reached yet'}")
        elif not self.cfg["server"]["url"]:
            parts.append("offline only")
        if self.cfg.get("_rejected"):
            parts.append(f"configuration rejected ({len(self.cfg['_rejected'])} problem(s)): on the last good one")
        return "; ".join(parts)

    # --- loops ------------------------------------------------------------------------------
    def _committed(self, event) -> None:
        LOGGER.debug("committed seq=%s id=%s type=%s priority=%s", event.seq, event.id, event.type,
                     event.priority)
        if event.type in STATUS_EVENTS:
            self.notifier.status(self.describe())

    def dropped(self) -> dict[str, int]:
        """Every input dropped so far, by where and why (non-zero counts only)."""
        out: dict[str, int] = {}
        if self.runner is not None:
            out.update({f"queue.{k}": v for k, v in self.runner.queue.dropped.items()})
            out.update({f"fault.{k}": v for k, v in stage_faults(self.runner.pipeline).counts.items()})
            decoder = self.runner.pipeline.decoder
            if decoder is not None:
                out.update({f"belt.{k}": v for k, v in decoder.counters.items() if k not in _NOT_DROPPED})
        if self.commits is not None:
            out.update({f"store.{k}": v for k, v in self.commits.dropped.items()})
        return {k: v for k, v in sorted(out.items()) if v}

    async def heartbeat_data(self) -> dict:
        depth = await self.store.depth()
        return {
            "queue_depth": {str(k): v for k, v in depth.items()},
            "dead_letters": await self.store.dead_letter_count(),
            "uptime_s": round(self.clock.monotonic(), 1),
            "version": __version__,
            "dropped": self.dropped(),
        }

    async def _heartbeat(self) -> None:
        data = await self.heartbeat_data()
        self.store.enqueue(self.factory.make("hub.heartbeat", data))
        if self.commits is not None and data["dropped"] != self._dropped_saved:
            self._dropped_saved = data["dropped"]
            await self.commits.save_state({DROPPED_KEY: data["dropped"]})   # for `carehub status`

    async def _heartbeat_loop(self) -> None:
        interval = self.cfg["hub"]["heartbeat_interval"]
        failing = False
        while True:
            await asyncio.sleep(interval)
            try:
                await self._heartbeat()
            except Exception as exc:  # the store cannot be read now: skip this beat, not the hub
                if not failing:
                    LOGGER.error("heartbeat skipped: %s (the next ones will be tried)", exc)
                failing = True
            else:
                failing = False

    async def _watchdog_loop(self, interval_s: float) -> None:
        """WATCHDOG=1 only while the loop turns and the store's thread answers."""
        while True:
            try:
                await asyncio.wait_for(self.store.depth(), timeout=interval_s)
                alive = all(not t.done() for t in self._tasks if t.get_name() != "watchdog")
                if self.healthy and alive:
                    self.notifier.watchdog()
            except asyncio.TimeoutError:
                LOGGER.warning("store did not answer within %.1fs: withholding the watchdog ping", interval_s)
            await asyncio.sleep(interval_s)


async def run(cfg: dict, *, hub: Hub | None = None) -> int:
    hub = hub or Hub(cfg)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, hub.stop_event.set)
    try:
        code = await hub.run()
    finally:
        await hub.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return code


def main(cfg: dict) -> int:
    _without_charset_detection()
    return asyncio.run(run(cfg))


def _without_charset_detection() -> None:
    """requests imports charset_normalizer, when it can, to guess the encoding of text replies:
    4 MB of the daemon's 40 MB. The uploader decodes only JSON bytes itself, and requests runs
    without a detector (``apparent_encoding`` falls back to UTF-8), so the daemon keeps it out."""
    import sys
    if "requests" not in sys.modules:
        sys.modules.setdefault("charset_normalizer", None)
        sys.modules.setdefault("chardet", None)


class PipelineRunner:
    """Feeds the pipeline from one bounded queue, so bytes, ticks, presses and acks never
    interleave; a message that fails is dropped and counted, the next one is handled."""

    def __init__(self, pipeline: Pipeline, tick_s: float = TICK_S, *,
                 max_belt_bytes: int = MAX_QUEUED_BELT_BYTES):
        self.pipeline = pipeline
        self.tick_s = tick_s
        self.link = None
        self.queue = InputQueue(max_belt_bytes)
        self._stopped = False

    def put(self, item) -> bool:
        """``BeltBytes``, ``TickDue``, ``LinkStatus``, ``WatchReported`` or an observation
        (``ButtonPress``, ``StaffAck``); False when low-value input was dropped because the queue is full."""
        return self.queue.put(item)

    def stop(self) -> None:
        self._stopped = True
        self.queue.put(_STOP)

    async def run(self) -> None:
        ticker = asyncio.create_task(self._ticks(), name="ticks")
        try:
            while not self._stopped:
                item = await self.queue.get()
                if item is _STOP:
                    break
                try:
                    await self._handle(item)
                except Exception as exc:   # the pipeline guards its stages; this is the last net
                    stage_faults(self.pipeline).record("runner", exc)
        finally:
            ticker.cancel()

    async def _ticks(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            self.put(TickDue())

    async def _handle(self, item) -> None:
        p = self.pipeline
        if isinstance(item, TickDue):
            await p.tick()
        elif isinstance(item, BeltBytes):
            await p.belt_bytes(item.data)
            if self.link is not None:
                for frame in p.decoder.take_outgoing():
                    await self.link.write(frame)
        elif isinstance(item, LinkStatus):
            await p.device_status(item.device, item.state, dict(item.info))
        elif isinstance(item, WatchReported):
            await p.watch_report(item.report)
        else:
            await p.observe(item)


_STOP = object()


class PanelComponent:
    """The panel has no loop of its own; it lives as long as the hub and is closed at the end."""

    def __init__(self, panel):
        self.panel = panel
        self._stop = asyncio.Event()

    async def run(self) -> None:
        await self._stop.wait()

    def stop(self) -> None:
        self._stop.set()
        self.panel.close()


def build_panel(gpio: dict, pin_factory, loop, on_press):
    """gpiozero pins are made here, and only here."""
    from drivers.panel import Panel, make_pin_factory
    if pin_factory is None and gpio["pin_factory"]:
        pin_factory = make_pin_factory(gpio["pin_factory"])
    return Panel.from_config(gpio, pin_factory, on_press=on_press, loop=loop)


def build_phone_notifier(cfg: dict, hub: "Hub", runner: "PipelineRunner"):
    """[sms]: the modem link and the notifier; a reply's ack goes the way a server ack goes."""
    from hub.notifier import PhoneNotifier, build_link, build_reset
    from hub.sms import Settings
    sms_cfg = cfg["sms"]
    voice = any(p["call"] for p in sms_cfg["phones"])
    link = build_link(sms_cfg, on_status=lambda state, info: runner.put(LinkStatus("modem", state, info)),
                      reset=build_reset(sms_cfg, hub.pin_factory), voice=voice)
    phones = PhoneNotifier(Settings.from_config(cfg), link, hub.store, hub.factory, hub.clock,
                           on_ack=lambda a, by, at: runner.put(StaffAck(a, by, at)))
    link.on_message = phones.incoming
    hub.store.subscribe(phones.committed)
    return phones


def build_watch(w: dict, clock, on_report, recorder=None, **options):
    """The watch's BLE link. It only ever waits: an absent watch never blocks the hub."""
    from drivers.watch.link import WatchLink
    from drivers.watch.profiles import profile_from_config
    kwargs = dict(clock=clock, offline_grace_s=w["offline_grace"], reconnect_max_s=w["reconnect_max"],
                  battery_interval_s=w["battery_interval"], scan_timeout_s=w["scan_timeout"],
                  dedupe_s=w["sos_dedupe"], recorder=recorder)
    return WatchLink(w["address"], profile_from_config(w), on_report=on_report, on_status=on_report,
                     **{**kwargs, **options})


def _feed_recorder(feed, clock):
    from drivers.watch.recording import WatchRecorder
    return WatchRecorder(feed.watch_writer(), now=clock.now)


def build_uploader(cfg: dict, store, clock, on_ack, on_status=None, make_event=None):
    from offline_queue.errors import ServerConfigError
    from offline_queue.uploader import Uploader
    server = cfg["server"]
    try:
        token = read_token(server["token_file"])   # as check-config read it
    except BadValue as e:
        raise ConfigError([f"server.token_file: {e}"]) from None
    try:
        return Uploader(store, url=server["url"], hub_id=cfg["hub"]["id"], token=token,
                        ca_file=server["ca_file"] or None, timeout_s=server["timeout"],
                        batch_max=server["batch_max"], gzip_min_bytes=server["gzip_min_bytes"],
                        backoff_base_s=server["backoff_base"], backoff_max_s=server["backoff_max"],
                        auth_backoff_s=server["auth_backoff"], interval_s=server["sync_interval"],
                        clock=clock, on_ack=on_ack, on_status=on_status, make_event=make_event)
    except ServerConfigError as e:  # the uploader's own checks, told as configuration problems
        raise ConfigError(e.problems) from None
