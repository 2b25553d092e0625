"""Real parts for the sync tests: a receiver on 127.0.0.1 and a real store on a tmp file.

Time is a ManualClock shared by hub and receiver, so backoffs of minutes pass in no real time.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import ssl
import threading
import time
from collections import Counter
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timezone

from hub.clock import ManualClock
from hub.events import EventFactory
from offline_queue.receiver import Fault, make_server
from offline_queue.store import AsyncStore
from offline_queue.uploader import Uploader

WALL0 = datetime(2026, 11, 23, 22, 0, tzinfo=timezone.utc)
TOKEN = "test-token-4f1c9a"
HUB = "home-test"


def new_clock() -> ManualClock:
    return ManualClock(WALL0, mono=1000.0)


@contextmanager
def running_receiver(tmp_path, now, name: str = "receiver.db", *, tls=None, **kw):
    """A receiver serving on a thread; ``tls``: a trustme server certificate for https."""
    ctx = None
    if tls is not None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.configure_cert(ctx)
    if "tokens" not in kw:
        kw["token"] = TOKEN
    server = make_server("127.0.0.1", 0, tmp_path / name, now=now, ssl_context=ctx, **kw)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="receiver", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@asynccontextmanager
async def open_store(path, factory):
    store = AsyncStore(path, make_event=lambda t, d, p: factory.make(t, d, p))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def make_factory(clock, hub_id: str = HUB) -> EventFactory:
    return EventFactory(hub_id, "R-1", clock, boot_id="boot-test", synced=lambda: True)


def make_uploader(store, server, clock, **kw) -> Uploader:
    opts = dict(url=server.url, hub_id=HUB, token=TOKEN, clock=clock, rng=random.Random(7),
                clock_synced=lambda: True, boot_id="boot-test", timeout_s=5)
    opts.update(kw)
    return Uploader(store, **opts)


async def commit_mix(store, factory, clock, n_vitals: int = 6, n_alerts: int = 2) -> list:
    """Interleaved vitals (p3) and alerts (p1) committed in time order; returns the events."""
    out = []
    for i in range(n_vitals):
        clock.advance(60)
        out.append(await store.commit(factory.make("vitals.minute", {"hr_bpm": 60 + i})))
        if i % max(1, n_vitals // max(1, n_alerts)) == 0 and sum(e.priority == 1 for e in out) < n_alerts:
            out.append(await store.commit(factory.make(
                "alert.raised", {"alert_id": f"a-{i}", "rule": "sos", "priority": 1,
                                 "message": "SOS pressed", "details": {}})))
    return out


async def drain(uploader, clock, max_attempts: int = 200) -> list:
    """sync_once until idle, letting each backoff pass on the ManualClock; returns the results."""
    results = []
    for _ in range(max_attempts):
        clock.advance(uploader.due_in_s)
        res = await uploader.sync_once()
        results.append(res)
        if res.outcome == "idle":
            return results
    raise AssertionError(f"not drained after {max_attempts} attempts: {results[-3:]}")


async def wait_for(predicate, timeout_s: float = 5.0):
    """Polls ``predicate`` on the loop until true (real time bounded), for run()-loop tests."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def assert_exactly_once(server, events) -> None:
    got = [e["id"] for e in server.events(HUB)]
    counts = Counter(got)
    assert not [i for i, n in counts.items() if n > 1], "an event arrived twice"
    assert set(got) == {e.id for e in events}


# --- a fleet of hubs whose server comes back at once ------------------------------------------


async def simulate_fleet(tmp_path, *, hubs: int = 100, jitter: bool = True, outage_s: float = 120.0,
                         events_per_hub: int = 3, seed: int = 1) -> dict:
    """Every hub fails together at t=0 (server answers 503) and retries on its own schedule;
    the server recovers at ``outage_s``. Returns request times (simulated s) and the peaks."""
    clock = new_clock()
    t0 = clock.monotonic()
    request_times: list[float] = []
    with running_receiver(tmp_path, clock.now, name=f"fleet-{jitter}.db") as server:
        server.faults.hold(Fault("status", status=503))
        stores, uploaders = [], []
        try:
            for i in range(hubs):
                factory = make_factory(clock, f"hub-{i:03d}")
                store = AsyncStore(tmp_path / f"fleet-{jitter}-{i}.db", make_event=factory.make)
                await store.open()
                stores.append(store)
                for k in range(events_per_hub):
                    await store.commit(factory.make("vitals.minute", {"k": k}))
                uploaders.append(Uploader(store, url=server.url, hub_id=f"hub-{i:03d}", token=TOKEN,
                                          clock=clock, rng=random.Random(seed * 1000 + i), jitter=jitter,
                                          clock_synced=lambda: True, boot_id="boot-test"))
            queue = [(clock.monotonic(), i) for i in range(hubs)]
            heapq.heapify(queue)
            first_attempt_done = set()
            retry_times = []
            while queue:
                due, i = heapq.heappop(queue)
                clock.advance(max(0.0, due - clock.monotonic()))
                if clock.monotonic() - t0 >= outage_s:
                    server.faults.clear()
                res = await uploaders[i].sync_once()
                if res.outcome == "idle":
                    continue
                t = clock.monotonic() - t0
                request_times.append(t)
                if i in first_attempt_done:
                    retry_times.append(t)
                first_attempt_done.add(i)
                heapq.heappush(queue, (clock.monotonic() + res.delay_s, i))
            delivered = len(server.events())
        finally:
            for store in stores:
                await store.close()
    buckets = Counter(int(t) for t in retry_times)
    after = Counter(int(t) for t in retry_times if t >= outage_s)
    return {
        "requests": len(request_times),
        "peak_retry_rps": max(buckets.values()),
        "peak_after_recovery_rps": max(after.values()) if after else 0,
        "last_delivery_s": max(request_times),
        "delivered": delivered,
        "expected": hubs * events_per_hub,
    }
