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
from hub.events import EventFactory
from hub.notify import Notifier
from offline_queue.store import AsyncStore

LOGGER = logging.getLogger(__name__)

STORE_FILE = "events.db"
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
        for comp in self.components:
            close = getattr(comp, "aclose", None)
            if close:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(close(), timeout=1.0)
        await self.store.close()

    async def run(self) -> None:
        await self.start()
        await self.stop_event.wait()

    async def _build_components(self) -> list:
        """The devices, the pipeline and the uploader, as the configuration asks."""
        return []

    def describe(self) -> str:
        parts = [f"hub {self.cfg['hub']['id']}"]
        parts += [d for c in self.components if (d := getattr(c, "describe", lambda: "")())]
        return "; ".join(parts)

    # --- loops ------------------------------------------------------------------------------
    def _committed(self, event) -> None:
        LOGGER.debug("committed seq=%s id=%s type=%s priority=%s", event.seq, event.id, event.type,
                     event.priority)

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
