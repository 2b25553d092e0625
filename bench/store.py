"""Durable store benchmark: events/s and bytes written per 1000 events, beside persist-queue.

Run by hand from the repository root: ``python bench/store.py [--dir DIR] [--single N] [--batched N]``.

Bytes are ``write_bytes`` from /proc/self/io: what this process sent towards the block device
(counted when page-cache pages are dirtied; it includes WAL appends and checkpoint writes, not the
ext4 journal). Every case runs in a fresh directory on a real filesystem (not tmpfs) and includes
closing the store, so the final checkpoint is counted too. Same event bodies for every case:
``vitals.minute`` envelopes from ``EventFactory``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hub.clock import SystemClock  # noqa: E402
from hub.events import EventFactory  # noqa: E402
from offline_queue.store import AsyncStore, Store  # noqa: E402

BATCH = 100
FORGET_BATCH = 500


def write_bytes() -> int:
    with open("/proc/self/io") as f:
        fields = dict(line.split(": ") for line in f.read().splitlines())
    return int(fields["write_bytes"]) - int(fields["cancelled_write_bytes"])


@dataclass
class Row:
    case: str
    events: int
    seconds: float
    bytes: int

    @property
    def per_s(self) -> float:
        return self.events / self.seconds

    @property
    def kib_per_1000(self) -> float:
        return self.bytes / self.events * 1000 / 1024


def measure(case, events, work) -> Row:
    os.sync()
    b0, t0 = write_bytes(), time.perf_counter()
    work()
    t1, b1 = time.perf_counter(), write_bytes()
    return Row(case, events, t1 - t0, b1 - b0)


def make_events(n: int, priority: int):
    factory = EventFactory("home-0042", "R-1017", SystemClock(), synced=lambda: True)
    data = {"hr_bpm": {"avg": 61.4, "min": 58, "max": 66}, "rr_bpm": {"avg": 14.2, "min": 12, "max": 17},
            "movement": 3, "in_bed_s": 60, "valid_s": 57}
    return [factory.make("vitals.minute", data, priority) for _ in range(n)], factory


def chunks(seq, size):
    return [seq[i:i + size] for i in range(0, len(seq), size)]


def run_cases(base: Path, n_single: int, n_batched: int) -> tuple[list[Row], list[Row], int]:
    import persistqueue

    rows, forget_rows = [], []
    p1, factory = make_events(n_single, 1)
    p3, _ = make_events(n_batched, 3)
    body_size = sum(len(e.to_json().encode()) for e in p3) // len(p3)

    def fresh(name):
        d = base / name
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        return d

    # --- ours: one durable commit per priority-1 event, through Store.append
    d = fresh("store-single")
    store = Store(d / "q.db", make_event=factory.make)
    def single():
        for e in p1:
            store.append([e])
        store.close()
    rows.append(measure("CareHub Store.append, 1 event/commit (p1)", n_single, single))

    # --- ours: through AsyncStore.commit
    d = fresh("async-single")
    async def async_single():
        s = await AsyncStore(d / "q.db", make_event=factory.make).open()
        for e in p1:
            await s.commit(e)
        await s.close()
    rows.append(measure("CareHub AsyncStore.commit, 1 event/commit (p1)", n_single,
                        lambda: asyncio.run(async_single())))

    # --- ours: priority 3 through AsyncStore.enqueue, batches of 100
    d = fresh("async-batched")
    async def async_batched():
        s = await AsyncStore(d / "q.db", make_event=factory.make, batch_max=BATCH).open()
        for e in p3:
            s.enqueue(e)
        await s.close()
    rows.append(measure(f"CareHub AsyncStore.enqueue, {BATCH}/commit (p3)", n_batched,
                        lambda: asyncio.run(async_batched())))

    # --- ours: the same through Store.append, and then delivery (forget)
    d = fresh("store-batched")
    store = Store(d / "q.db", make_event=factory.make)
    def batched():
        for part in chunks(p3, BATCH):
            store.append(part)
    rows.append(measure(f"CareHub Store.append, {BATCH}/commit (p3)", n_batched, batched))
    def forget():
        while True:
            batch = store.take_batch(limit=FORGET_BATCH)
            if not batch:
                break
            store.forget([b["id"] for b in batch])
        store.close()
    forget_rows.append(measure(f"CareHub take_batch + forget, {FORGET_BATCH}/DELETE", n_batched, forget))

    # --- ours: how the bytes per event fall with the events per transaction (p3)
    for per_commit in (1, 10):
        d = fresh(f"store-sweep-{per_commit}")
        n = min(n_batched, 200 * per_commit)
        store_k = Store(d / "q.db", make_event=factory.make)
        def sweep(store_k=store_k, n=n, per_commit=per_commit):
            for part in chunks(p3[:n], per_commit):
                store_k.append(part)
        rows.append(measure(f"CareHub Store.append, {per_commit}/commit (p3)", n, sweep))
        def sweep_forget(store_k=store_k, n=n, per_commit=per_commit):
            for part in chunks(p3[:n], per_commit):
                store_k.forget([e.id for e in part])
            store_k.close()
        forget_rows.append(measure(f"CareHub forget, {per_commit}/DELETE", n, sweep_forget))

    # --- persist-queue SQLiteAckQueue: one commit per put (its ack queue forces auto_commit=True)
    d = fresh("pq-ack")
    bodies1 = [e.to_json() for e in p1]
    q = persistqueue.SQLiteAckQueue(str(d), auto_commit=True)
    def pq_single():
        for b in bodies1:
            q.put(b)
    rows.append(measure("persist-queue SQLiteAckQueue.put, 1/commit", n_single, pq_single))
    def pq_ack():
        for _ in range(n_single):
            q.ack(q.get(block=False))
        q.clear_acked_data(max_delete=0, keep_latest=0)
        q.close()
    forget_rows.append(measure("persist-queue SQLiteAckQueue get+ack+clear_acked_data", n_single, pq_ack))

    # --- persist-queue SQLiteQueue(auto_commit=False): task_done every 100 puts (its batch path)
    d = fresh("pq-batched")
    bodies3 = [e.to_json() for e in p3]
    q = persistqueue.SQLiteQueue(str(d), auto_commit=False)
    def pq_batched():
        for part in chunks(bodies3, BATCH):
            for b in part:
                q.put(b)
            q.task_done()
    rows.append(measure(f"persist-queue SQLiteQueue(auto_commit=False), task_done/{BATCH}",
                        n_batched, pq_batched))
    def pq_get():
        for part in chunks(bodies3, FORGET_BATCH):
            for _ in part:
                q.get(block=False)
            q.task_done()
        q.close()
    forget_rows.append(measure(f"persist-queue SQLiteQueue get + task_done/{FORGET_BATCH}",
                               n_batched, pq_get))
    return rows, forget_rows, body_size


def describe_machine(base: Path) -> str:
    fs = subprocess.run(["df", "-T", str(base)], capture_output=True, text=True).stdout.splitlines()[-1]
    import sqlite3
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}; filesystem: {' '.join(fs.split()[:2])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/var/tmp", help="a directory on a real filesystem")
    parser.add_argument("--single", type=int, default=1000, help="events in the one-by-one cases")
    parser.add_argument("--batched", type=int, default=10000, help="events in the batched cases")
    args = parser.parse_args()
    fs_type = subprocess.run(["stat", "-f", "-c", "%T", args.dir], capture_output=True,
                             text=True).stdout.strip()
    if fs_type == "tmpfs":
        sys.exit(f"{args.dir} is tmpfs: bytes written would mean nothing; pass --dir on a disk")
    base = Path(tempfile.mkdtemp(prefix="carehub-bench-", dir=args.dir))
    try:
        rows, forget_rows, body = run_cases(base, args.single, args.batched)
        print(describe_machine(base))
        print(f"event envelope: {body} B of JSON on average\n")
        w = max(len(r.case) for r in rows + forget_rows)
        print(f"{'append (durable)':<{w}}  {'events':>7}  {'events/s':>9}  {'KiB written/1000 ev':>19}")
        for r in rows:
            print(f"{r.case:<{w}}  {r.events:>7}  {r.per_s:>9.0f}  {r.kib_per_1000:>19.0f}")
        print(f"\n{'delivery (delete)':<{w}}  {'events':>7}  {'events/s':>9}  {'KiB written/1000 ev':>19}")
        for r in forget_rows:
            print(f"{r.case:<{w}}  {r.events:>7}  {r.per_s:>9.0f}  {r.kib_per_1000:>19.0f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
