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
from pathlib import Path

from hub import __version__
from hub.clock import SystemClock
from hub.config import timezone_of
from hub.errors import ConfigError
from hub.events import EventFactory
from hub.feed import LiveFeed, feed_path
from hub.notify import Notifier
from hub.pipeline import ENGINE_STATE_KEY, TICK_S, Pipeline
from hub.rules.observations import ButtonPress, StaffAck
from hub.watch import WatchReported
from drivers.belt.link import BeltLink
from offline_queue.store import AsyncStore

LOGGER = logging.getLogger(__name__)

STORE_FILE = "events.db"
# Events after which systemd's STATUS= line is brought up to date.
STATUS_EVENTS = {"device.status", "alert.raised", "alert.escalated", "alert.acknowledged",
                 "alert.resolved", "alert.cancelled"}
STOP_TIMEOUT_S = 4.0  # systemd and the spec give us 5 s


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
        self.components: list = []   # objects with async run() and stop()
        self.healthy = True
        self.tick_s = TICK_S
        self.panel = None
        self.uploader = None
        self.runner = None
        self.feed = None
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
            self._spawn(comp.run(), name=type(comp).__name__)
        await self._heartbeat()  # the first one says the hub (re)started
        self._spawn(self._heartbeat_loop(), name="heartbeat")
        if self.notifier.watchdog_interval_s:
            self._spawn(self._watchdog_loop(self.notifier.watchdog_interval_s), name="watchdog")
        self.notifier.ready(self.describe())
        LOGGER.info("carehub %s running: %s", __version__, self.describe())

    def _spawn(self, coro, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task) -> None:
        if task.cancelled() or self.stop_event.is_set():
            return
        exc = task.exception()
        if exc is not None:
            LOGGER.error("%s stopped unexpectedly: %r", task.get_name(), exc, exc_info=exc)
            self.healthy = False
            self.notifier.status(f"degraded: {task.get_name()} stopped ({exc})")

    async def stop(self) -> None:
        self.stop_event.set()
        self.notifier.stopping()
        for comp in self.components:
            with contextlib.suppress(Exception):
                comp.stop()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT_S / 2)
        await self.store.close()

    async def run(self) -> None:
        await self.start()
        await self.stop_event.wait()

    async def _build_components(self) -> list:
        """The devices, the pipeline and the uploader, as the configuration asks."""
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        engine_state = await self.store.get_state(ENGINE_STATE_KEY)
        self.runner = runner = PipelineRunner(
            Pipeline(cfg, self.clock, self.factory, StoreSink(self.store), engine_state=engine_state,
                     show=self._show),
            tick_s=self.tick_s)
        comps: list = [runner]
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
                feed.belt_bytes(data)
                runner.put(data)

            def belt_status(state: str, info: dict) -> None:
                feed.belt_status(state, info)
                runner.put(("belt", state, info))

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
                                           on_status=lambda state, detail: self.notifier.status(self.describe()))
            comps.append(self.uploader)
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
        if self.uploader is not None:
            parts.append(f"server {self.uploader.state or 'not reached yet'}")
        elif not self.cfg["server"]["url"]:
            parts.append("offline only")
        return "; ".join(parts)

    # --- loops ------------------------------------------------------------------------------
    def _committed(self, event) -> None:
        LOGGER.debug("committed seq=%s id=%s type=%s priority=%s", event.seq, event.id, event.type,
                     event.priority)
        if event.type in STATUS_EVENTS:
            self.notifier.status(self.describe())

    async def heartbeat_data(self) -> dict:
        depth = await self.store.depth()
        return {
            "queue_depth": {str(k): v for k, v in depth.items()},
            "dead_letters": await self.store.dead_letter_count(),
            "uptime_s": round(self.clock.monotonic(), 1),
            "version": __version__,
        }

    async def _heartbeat(self) -> None:
        self.store.enqueue(self.factory.make("hub.heartbeat", await self.heartbeat_data()))

    async def _heartbeat_loop(self) -> None:
        interval = self.cfg["hub"]["heartbeat_interval"]
        while True:
            await asyncio.sleep(interval)
            await self._heartbeat()

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
        await hub.run()
    finally:
        await hub.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0


def main(cfg: dict) -> int:
    return asyncio.run(run(cfg))


class StoreSink:
    """The pipeline's sink in the daemon: the durable store."""

    def __init__(self, store: AsyncStore):
        self.store = store

    async def commit(self, event, *, state=None):
        return await self.store.commit(event, state=state)

    def enqueue(self, event) -> None:
        self.store.enqueue(event)

    async def save_state(self, state: dict) -> None:
        for key, value in state.items():
            await self.store.put_state(key, value)


class PipelineRunner:
    """Feeds the pipeline from one queue, so bytes, ticks, presses and acks never interleave."""

    def __init__(self, pipeline: Pipeline, tick_s: float = TICK_S):
        self.pipeline = pipeline
        self.tick_s = tick_s
        self.link = None
        self._queue: asyncio.Queue = asyncio.Queue()
        self._stopped = False

    def put(self, item) -> None:
        self._queue.put_nowait(item)

    def stop(self) -> None:
        self._stopped = True
        self._queue.put_nowait(None)

    async def run(self) -> None:
        ticker = asyncio.create_task(self._ticks(), name="ticks")
        try:
            while not self._stopped:
                item = await self._queue.get()
                if item is None:
                    break
                await self._handle(item)
        finally:
            ticker.cancel()

    async def _ticks(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            self.put("tick")

    async def _handle(self, item) -> None:
        p = self.pipeline
        if item == "tick":
            await p.tick()
        elif isinstance(item, (bytes, bytearray)):
            await p.belt_bytes(bytes(item))
            if self.link is not None:
                for frame in p.decoder.take_outgoing():
                    await self.link.write(frame)
        elif isinstance(item, WatchReported):
            await p.watch_report(item.report)
        elif isinstance(item, tuple) and item[0] == "belt":
            _, state, info = item
            await p.device_status("belt", state, info)
        else:
            await p.observe(item)


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


def build_uploader(cfg: dict, store, clock, on_ack, on_status=None):
    from offline_queue.errors import ServerConfigError
    from offline_queue.uploader import Uploader
    server = cfg["server"]
    with open(server["token_file"], encoding="utf-8") as f:
        token = f.readline().strip()
    try:
        return Uploader(store, url=server["url"], hub_id=cfg["hub"]["id"], token=token,
                        ca_file=server["ca_file"] or None, timeout_s=server["timeout"],
                        batch_max=server["batch_max"], gzip_min_bytes=server["gzip_min_bytes"],
                        backoff_base_s=server["backoff_base"], backoff_max_s=server["backoff_max"],
                        auth_backoff_s=server["auth_backoff"], interval_s=server["sync_interval"],
                        clock=clock, on_ack=on_ack, on_status=on_status)
    except ServerConfigError as e:  # the uploader's own checks, told as configuration problems
        raise ConfigError(e.problems) from None
