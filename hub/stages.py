"""The boundaries between the daemon's stages: nothing one input does can stop the hub watching.

- ``guarded(stage)`` wraps a pipeline entry point: an exception on one input is caught, the
  input dropped and counted in ``StageFaults``, logged once per kind (stage + exception type).
- ``InputQueue`` is the bounded hand-off from the link, the panel and the uploader to the
  pipeline: belt bytes and ticks (low value, they come again) are dropped and counted when it
  is full; button presses, acks and device status are never dropped.
- ``CommitQueue`` is the pipeline's sink in the daemon: the pipeline never waits on the store
  (the panel's light and sound never wait on a commit), and a failed commit is retried with
  backoff, in order, holding priority 1 and 2 events in memory until the store takes them.

The messages of the queue are frozen dataclasses (``BeltBytes``, ``TickDue``, ``LinkStatus``)
next to the engine's own observations (button presses, staff acks).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Mapping

LOGGER = logging.getLogger(__name__)

# The link -> pipeline queue holds at most this many belt bytes (about 5 s at 115200 baud).
MAX_QUEUED_BELT_BYTES = 64 * 1024
# Priority-3 events held while the store fails, beyond which the oldest go (counted).
MAX_HELD_P3 = 1000
COMMIT_RETRY_MIN_S = 0.5
COMMIT_RETRY_MAX_S = 30.0


# --- faults at the stage boundaries ---------------------------------------------------------
class StageFaults:
    """Counts inputs dropped because a stage raised on them; logs each kind once."""

    def __init__(self):
        self.counts: Counter = Counter()

    def record(self, stage: str, exc: BaseException) -> None:
        kind = f"{stage}.{type(exc).__name__}"
        first = kind not in self.counts
        self.counts[kind] += 1
        if first:
            LOGGER.error("%s stage failed on one input (%r); the input is dropped and the hub "
                         "goes on (further %s are only counted)", stage, exc, kind, exc_info=exc)

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)


def stage_faults(owner) -> StageFaults:
    """The ``StageFaults`` of an object whose methods are ``guarded`` (made on first use)."""
    faults = owner.__dict__.get("stage_faults")
    if faults is None:
        faults = owner.__dict__["stage_faults"] = StageFaults()
    return faults


def guarded(stage: str):
    """Decorate an async method: an exception (not a cancellation) is recorded, never raised."""
    def wrap(method):
        @functools.wraps(method)
        async def guard(self, *args, **kwargs):
            try:
                return await method(self, *args, **kwargs)
            except Exception as exc:
                stage_faults(self).record(stage, exc)
                return None
        return guard
    return wrap


# --- the runner's messages and queue ----------------------------------------------------------
@dataclass(frozen=True)
class BeltBytes:
    data: bytes


@dataclass(frozen=True)
class TickDue:
    """Time-based rules are due (the runner's own ticker)."""


@dataclass(frozen=True)
class LinkStatus:
    device: str
    state: str
    info: Mapping[str, Any] = field(default_factory=dict)


class InputQueue:
    """Bounded where it may drop, never blocking the loop; get() in arrival order."""

    def __init__(self, max_belt_bytes: int = MAX_QUEUED_BELT_BYTES):
        self.max_belt_bytes = max_belt_bytes
        self._items: deque = deque()
        self._belt_bytes = 0
        self._tick_queued = False
        self._ready = asyncio.Event()
        self.dropped: Counter = Counter()   # "belt_bytes" (bytes), "ticks"
        self._full_logged = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item) -> bool:
        """Queue ``item``; False when it was low-value and dropped (counted)."""
        if isinstance(item, BeltBytes):
            if self._belt_bytes + len(item.data) > self.max_belt_bytes:
                self.dropped["belt_bytes"] += len(item.data)
                if not self._full_logged:
                    self._full_logged = True
                    LOGGER.warning("pipeline behind: belt bytes dropped (counted) until it catches up")
                return False
            self._belt_bytes += len(item.data)
        elif isinstance(item, TickDue):
            if self._tick_queued:   # one pending tick says the same as two
                self.dropped["ticks"] += 1
                return False
            self._tick_queued = True
        self._items.append(item)
        self._ready.set()
        return True

    async def get(self):
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        if isinstance(item, BeltBytes):
            self._belt_bytes -= len(item.data)
            if not self._belt_bytes:
                self._full_logged = False
        elif isinstance(item, TickDue):
            self._tick_queued = False
        return item


# --- the store side ----------------------------------------------------------------------------
class CommitQueue:
    """The pipeline's sink in the daemon: commits in order, in the background, retried.

    ``commit`` and ``save_state`` return at once; ``run()`` (a supervised task) hands each
    held item to the store in order. When the store raises (a full disk, an I/O error: any
    ``StoreError``, or anything else), the item stays at the head and is tried again after a
    backoff doubling from ``retry_min_s`` to ``retry_max_s``; the failure is logged once and
    its end once. Priority 1 and 2 events are never dropped; priority 3 events beyond
    ``max_held_p3`` are (the oldest first, counted; a state they carried stays held).
    """

    def __init__(self, store, *, retry_min_s: float = COMMIT_RETRY_MIN_S,
                 retry_max_s: float = COMMIT_RETRY_MAX_S, max_held_p3: int = MAX_HELD_P3):
        self.store = store
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.max_held_p3 = max_held_p3
        self._held: deque[list] = deque()   # [event or None, state or None]
        self._held_p3 = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self.failing: str | None = None     # the last error while commits fail
        self.dropped: Counter = Counter()   # "p3_events"
        self.commit_failures = 0
        self.repaired = 0                   # events whose data had to be made JSON-safe

    # --- the EventSink the pipeline sees -----------------------------------------------------
    async def commit(self, event, *, state=None):
        self._hold(event, dict(state) if state else None)
        return event

    def enqueue(self, event) -> None:
        """Priority 3 in bulk: straight to the store's own buffer, which batches them (and drops
        its oldest when the disk keeps failing)."""
        try:
            self.store.enqueue(event)
        except Exception as exc:   # the store is not open: the event is low value
            self.dropped["p3_events"] += 1
            LOGGER.debug("priority-3 %s dropped: %s", event.type, exc)

    async def save_state(self, state: dict) -> None:
        if self._held and self._held[-1][0] is None:
            self._held[-1][1].update(state)    # coalesce with a state-only item waiting
        else:
            self._hold(None, dict(state))

    # --- status -------------------------------------------------------------------------------
    @property
    def held(self) -> int:
        """Events waiting for the store."""
        return sum(1 for ev, _ in self._held if ev is not None)

    # --- the task -----------------------------------------------------------------------------
    def _hold(self, event, state) -> None:
        if event is not None:
            event = self._storable(event)
        self._held.append([event, state])
        if event is not None and event.priority == 3:
            self._held_p3 += 1
            if self._held_p3 > self.max_held_p3:
                self._drop_oldest_p3()
        self._wake.set()

    def _storable(self, event):
        """The event, or a copy the store can write: one event whose data cannot be JSON (a bug
        upstream) must never sit at the head of the queue and hold every later alert back."""
        try:
            event.to_json().encode("utf-8")
            return event
        except (TypeError, ValueError) as exc:
            self.repaired += 1
            LOGGER.error("%s %s could not be stored as it was (%s): its data is kept as text",
                         event.type, event.id, exc)
            return dataclasses.replace(event, data=_json_safe(event.data))

    def _drop_oldest_p3(self) -> None:
        for i, item in enumerate(self._held):
            if i == 0:
                continue   # the head is being committed
            event, state = item
            if event is not None and event.priority == 3:
                if state:
                    item[0] = None   # its state is still written, in its place
                else:
                    del self._held[i]
                self._held_p3 -= 1
                self.dropped["p3_events"] += 1
                return

    async def run(self) -> None:
        self._stopping = False
        delay = self.retry_min_s
        while not self._stopping:
            if not self._held:
                self._wake.clear()
                await self._wake.wait()
                continue
            if await self._commit_head():
                delay = self.retry_min_s
                continue
            try:
                await asyncio.wait_for(self._stop_wait(), delay)
            except asyncio.TimeoutError:
                pass
            delay = min(delay * 2, self.retry_max_s)

    async def _stop_wait(self) -> None:
        while not self._stopping:
            self._wake.clear()
            await self._wake.wait()

    async def _commit_head(self) -> bool:
        item = self._held[0]
        event, state = item
        try:
            if event is None:
                for key, value in state.items():
                    await self.store.put_state(key, value)
            else:
                await self.store.commit(event, state=state)
        except asyncio.CancelledError:
            raise
        except Exception as exc:   # the store stage: keep the event, try again later
            self.commit_failures += 1
            if self.failing is None:
                LOGGER.error("store commit failed (%s): holding %d event(s) in memory, in order, "
                             "retrying with backoff; priority 1 and 2 are never dropped",
                             exc, self.held)
            self.failing = str(exc) or type(exc).__name__
            return False
        if self._held and self._held[0] is item:
            self._held.popleft()
            if event is not None and event.priority == 3:
                self._held_p3 -= 1
        if self.failing is not None and not self._held:
            LOGGER.warning("store commits work again: every held event is committed")
            self.failing = None
        return True

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def drain(self) -> int:
        """At stop: one last attempt for each held item; returns how many events are lost."""
        while self._held:
            if not await self._commit_head():
                break
        lost = self.held
        if lost:
            LOGGER.error("stopping with %d event(s) the store would not take: %s", lost, self.failing)
        return lost


def _json_safe(value):
    if isinstance(value, Mapping):
        return {_json_safe_text(str(k)): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, str):
        return _json_safe_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int)):
        return value
    return _json_safe_text(repr(value))


def _json_safe_text(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
