"""Sync benchmarks on loopback: drain rate, priority-1 commit-to-accepted latency, bytes per event,
and the peak request rate of 100 hubs whose server comes back at once (simulated time).

Run by hand from the repository root:  PYTHONPATH=. /work/venv/bin/python bench/sync.py
Real receiver, real store (tmp files), real clocks (except the fleet, which is simulated time).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

from hub.clock import SystemClock
from hub.events import EventFactory
from offline_queue.receiver import make_server
from offline_queue.store import AsyncStore
from offline_queue.uploader import Uploader

TOKEN = "bench-token"
HUB = "home-bench"


class _Receiver:
    def __init__(self, tmp: Path, name: str):
        self.server = make_server("127.0.0.1", 0, tmp / name, TOKEN)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.server

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _factory(clock):
    return EventFactory(HUB, "R-bench", clock, synced=lambda: True)


_RNG = random.Random(42)


def _vitals(factory, i):
    """A minute summary with realistic variation (identical values would flatter gzip)."""
    hr, rr = _RNG.gauss(62, 6), _RNG.gauss(14, 2)
    return factory.make("vitals.minute", {
        "hr_bpm": {"avg": round(hr, 1), "min": int(hr - _RNG.uniform(2, 8)), "max": int(hr + _RNG.uniform(2, 9))},
        "rr_bpm": {"avg": round(rr, 1), "min": int(rr - _RNG.uniform(1, 3)), "max": int(rr + _RNG.uniform(1, 4))},
        "movement": _RNG.randint(0, 12), "in_bed_s": 60, "valid_s": _RNG.randint(40, 60)})


async def drain_rate(tmp: Path, n: int, gzip_on: bool) -> dict:
    clock = SystemClock()
    factory = _factory(clock)
    with _Receiver(tmp, f"drain-{gzip_on}.db") as server:
        store = AsyncStore(tmp / f"drain-{gzip_on}.q", make_event=factory.make)
        await store.open()
        try:
            for i in range(n):
                store.enqueue(_vitals(factory, i))
            await store.flush()
            up = Uploader(store, url=server.url, hub_id=HUB, token=TOKEN, clock=clock,
                          gzip_min_bytes=1024 if gzip_on else 1 << 30, clock_synced=lambda: True)
            wire = raw = requests = 0
            t0 = time.perf_counter()
            while True:
                r = await up.sync_once()
                if r.outcome == "idle":
                    break
                requests += 1
                wire += r.body_bytes
                raw += r.raw_bytes
            elapsed = time.perf_counter() - t0
        finally:
            await store.close()
        assert len(server.events()) == n
    return {"events": n, "seconds": elapsed, "events_per_s": n / elapsed, "requests": requests,
            "wire_bytes_per_event": wire / n, "raw_bytes_per_event": raw / n}


class _TimedUploader(Uploader):
    """Marks the moment an attempt that delivered something returns (the hub has forgotten it)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.delivered = asyncio.Event()

    async def sync_once(self):
        r = await super().sync_once()
        if r.delivered:
            self.delivered.set()
        return r


async def p1_latency(tmp: Path, alerts: int) -> dict:
    clock = SystemClock()
    factory = _factory(clock)
    lat = []
    with _Receiver(tmp, "latency.db") as server:
        store = AsyncStore(tmp / "latency.q", make_event=factory.make)
        await store.open()
        up = _TimedUploader(store, url=server.url, hub_id=HUB, token=TOKEN, clock=clock,
                            clock_synced=lambda: True, interval_s=3600)
        task = asyncio.create_task(up.run())
        try:
            await asyncio.sleep(0.2)  # the first (idle) attempt is over; the loop waits
            for i in range(alerts):
                up.delivered.clear()
                t0 = time.perf_counter()
                await store.commit(factory.make("alert.raised", {"alert_id": f"b-{i}", "rule": "sos",
                                                                 "priority": 1, "message": "SOS"}))
                await asyncio.wait_for(up.delivered.wait(), 10)
                lat.append((time.perf_counter() - t0) * 1000)
        finally:
            up.stop()
            await task
            await store.close()
    lat.sort()
    return {"alerts": alerts, "p50_ms": statistics.median(lat), "p99_ms": lat[int(0.99 * (len(lat) - 1))],
            "max_ms": lat[-1]}


async def fleet(tmp: Path, hubs: int) -> dict:
    from tests.offline_queue.synckit import simulate_fleet

    return {"jitter": await simulate_fleet(tmp, hubs=hubs, jitter=True),
            "none": await simulate_fleet(tmp, hubs=hubs, jitter=False)}


async def main(args) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        plain = await drain_rate(tmp, args.events, gzip_on=False)
        gz = await drain_rate(tmp, args.events, gzip_on=True)
        lat = await p1_latency(tmp, args.alerts)
        herd = await fleet(tmp, args.hubs)
    print(f"\nDrain of {args.events} vitals.minute events on loopback (real store, real receiver)")
    print(f"{'':12}{'events/s':>10}{'requests':>10}{'wire B/ev':>11}{'JSON B/ev':>11}")
    for name, r in (("no gzip", plain), ("gzip", gz)):
        print(f"{name:12}{r['events_per_s']:>10.0f}{r['requests']:>10}{r['wire_bytes_per_event']:>11.1f}"
              f"{r['raw_bytes_per_event']:>11.1f}")
    print(f"\nPriority-1 commit-to-accepted, {lat['alerts']} alerts, uploader idle in run():"
          f" p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms")
    print(f"\n{args.hubs} hubs, server down (503) for 120 s then back (simulated time, 1 s buckets)")
    print(f"{'':12}{'peak retry rps':>16}{'peak after recovery':>21}{'requests':>10}{'all in by':>11}")
    for name in ("none", "jitter"):
        r = herd[name]
        print(f"{'no jitter' if name == 'none' else 'full jitter':12}{r['peak_retry_rps']:>16}"
              f"{r['peak_after_recovery_rps']:>21}{r['requests']:>10}{r['last_delivery_s']:>10.0f}s")


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.ERROR)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=10_080)
    p.add_argument("--alerts", type=int, default=200)
    p.add_argument("--hubs", type=int, default=100)
    asyncio.run(main(p.parse_args()))
