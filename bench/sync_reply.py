"""What a hostile 200 MB reply costs the hub: peak RSS and traced Python memory of one upload.

Run by hand from the repository root:  PYTHONPATH=. /work/venv/bin/python bench/sync_reply.py
(--gzip: the 200 MB arrive as a ~200 KB gzip body). Real receiver (its ``huge_reply`` fault) on
127.0.0.1, real store on a tmp file; one process per run so the peak RSS is this upload's.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import threading
import tracemalloc
from pathlib import Path

from hub.clock import SystemClock
from hub.events import EventFactory
from offline_queue.receiver import Fault, make_server
from offline_queue.store import AsyncStore
from offline_queue.uploader import Uploader

TOKEN = "bench-token"
HUB = "home-bench"


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def one_upload(tmp: Path, size: int, gz: bool) -> dict:
    server = make_server("127.0.0.1", 0, tmp / "receiver.db", TOKEN)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    clock = SystemClock()
    factory = EventFactory(HUB, "R-1", clock, boot_id="bench", synced=lambda: True)
    try:
        async with AsyncStore(tmp / "q.db", make_event=factory.make) as store:
            for i in range(10):
                await store.commit(factory.make("vitals.minute", {"i": i}))
            up = Uploader(store, url=server.url, hub_id=HUB, token=TOKEN, clock=clock, timeout_s=60)
            server.faults.push(Fault("huge_reply", size_bytes=size, gzip=gz))
            before = rss_mib()
            tracemalloc.start()
            result = await up.sync_once()
            traced = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            return {"outcome": result.outcome, "error": result.error, "kept": await store.depth(),
                    "rss_before_mib": round(before, 1), "rss_peak_mib": round(rss_mib(), 1),
                    "traced_peak_mib": round(traced, 1)}
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--mb", type=int, default=200)
    p.add_argument("--gzip", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(asyncio.run(one_upload(Path(tmp), args.mb * 2**20, args.gzip)))


if __name__ == "__main__":
    main()
