"""What the alert path costs, and how fast an alert reaches the disk.

Run by hand: ``python bench/alerts.py [--runs 200]``. Prints three tables:
1. rule evaluation per reading: the engine alone, and the whole pipeline (decoder, resident state,
   engine) on the decoded frames of a simulated night;
2. `carehub replay` of an 8-hour night: wall time and how many times faster than real time;
3. latency from the decisive frame written on a real pty to the alert committed (fsynced) in
   the store, through pyserial, the event loop, the rules and the store's thread: p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drivers.belt import micradar as m  # noqa: E402
from drivers.belt import simulator  # noqa: E402
from drivers.belt.decoder import make_decoder  # noqa: E402
from hub import config  # noqa: E402
from hub.app import Hub  # noqa: E402
from hub.clock import ManualClock  # noqa: E402
from hub.demo import demo_plan  # noqa: E402
from hub.events import EventFactory  # noqa: E402
from hub.pipeline import Pipeline  # noqa: E402
from drivers.recording import read_recording  # noqa: E402
from hub.replay import PrintSink, replay  # noqa: E402
from hub.rules.engine import AlertEngine  # noqa: E402
from hub.rules.observations import BeltReading, Now, Tick  # noqa: E402

TZ = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 11, 23, 23, 0, tzinfo=TZ)
CONFIG = """\
[hub]
id = "bench"
resident_id = "R-B"
timezone = "Asia/Shanghai"
state_dir = "{state}"

[belt]
port = "{port}"
protocol = "micradar"
enter_debounce = 0
exit_debounce = 0
stale_timeout = "1h"
"""


def load_config(tmp: Path, port: str = "/dev/null") -> dict:
    path = tmp / "bench.toml"
    path.write_text(CONFIG.format(state=tmp / "state", port=port))
    return config.load(path)


def readings_of_a_night():
    script = simulator.night_script(demo_plan())
    decoder = make_decoder("micradar")
    out = []
    for t, frame in script:
        for r in decoder.feed(frame):
            out.append((t, r))
    return script, out


def bench_evaluation(cfg) -> list[tuple[str, int, float]]:
    _, readings = readings_of_a_night()
    rows = []
    engine = AlertEngine(seed="bench")
    t0 = time.perf_counter()
    for t, r in readings:
        engine.handle(BeltReading(r), Now(t, START + timedelta(seconds=t)))
    rows.append(("AlertEngine.handle per reading", len(readings), time.perf_counter() - t0))
    engine = AlertEngine(seed="bench")
    n_ticks = int(readings[-1][0])
    t0 = time.perf_counter()
    for i in range(n_ticks):
        engine.handle(Tick(), Now(float(i), START + timedelta(seconds=i)))
    rows.append(("AlertEngine.handle per 1 s tick", n_ticks, time.perf_counter() - t0))

    clock = ManualClock(START)
    sink = PrintSink(out=None)
    pipeline = Pipeline(cfg, clock, EventFactory("bench", "R-B", clock, boot_id="b", synced=lambda: True), sink)

    async def run():
        for t, r in readings:
            clock.advance(max(0.0, t - clock.monotonic()))
            await pipeline.reading(r)

    t0 = time.perf_counter()
    asyncio.run(run())
    rows.append(("pipeline per reading (engine incl. resident state + events)", len(readings), time.perf_counter() - t0))
    return rows


def bench_replay(cfg, tmp: Path) -> tuple[float, float, int]:
    script, _ = readings_of_a_night()
    rec = tmp / "night.rec"
    simulator.write_recording(rec, script, START)
    night_s = script[-1][0]
    t0 = time.perf_counter()
    sink = asyncio.run(replay(cfg, read_recording(rec), out=None))
    wall = time.perf_counter() - t0
    return night_s, wall, len(sink.events)


async def bench_latency(tmp: Path, runs: int) -> list[float]:
    """Vitals absent: 119 s of frames with no heart rate, then the frame that makes it 120 s."""
    master, slave = os.openpty()
    link = tmp / "belt"
    link.symlink_to(os.ttyname(slave))
    cfg = load_config(tmp, str(link))
    clock = ManualClock(START)
    hub = Hub(cfg, clock=clock)
    await hub.start()
    raised = asyncio.Event()
    t_committed = [0.0]

    def committed(e):
        if e.type == "alert.raised":
            t_committed[0] = time.perf_counter()
            raised.set()

    hub.store.subscribe(committed)
    decoder = hub.runner.pipeline.decoder

    async def send(frame: bytes, at_s: float) -> None:
        clock.advance(max(0.0, at_s - clock.monotonic()))
        before = decoder.counters["frames_ok"]
        os.write(master, frame)
        while decoder.counters["frames_ok"] == before:
            await asyncio.sleep(0.0005)

    latencies = []
    t = 0.0
    try:
        for _ in range(runs):
            # alive and in bed
            for frame in (m.presence(True), m.in_bed(1), m.heart_rate(62), m.resp_rate(14), m.movement(3)):
                await send(frame, t)
            # no heart rate, no breathing, no movement: evidence every 3 s up to 119 s
            start = t + 1
            for k in range(0, 120, 3):
                await send(m.heart_rate(0), start + k)
            raised.clear()
            clock.advance(start + 121 - clock.monotonic())
            t_write = time.perf_counter()
            os.write(master, m.heart_rate(0))
            await asyncio.wait_for(raised.wait(), timeout=10)
            latencies.append(t_committed[0] - t_write)
            t = start + 125
            await send(m.heart_rate(63), t)   # breathing again: resolved
            await send(m.movement(40), t + 1)
            t += 40 * 60  # apart enough that the engine does not merge them as a flapping condition
    finally:
        await hub.stop()
        os.close(master)
        os.close(slave)
    return latencies


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        tmp = Path(d)
        cfg = load_config(tmp)
        print("1. rule evaluation (this machine, one core)")
        print(f"   {'what':55} {'calls':>8} {'us/call':>9}")
        for name, n, secs in bench_evaluation(cfg):
            print(f"   {name:55} {n:8d} {secs / n * 1e6:9.1f}")
        night_s, wall, n_events = bench_replay(cfg, tmp)
        print(f"\n2. replay of a {night_s / 3600:.1f} h night: {wall:.2f} s wall, "
              f"{night_s / wall:,.0f}x real time, {n_events} events")
        (tmp / "lat").mkdir()
        lat = asyncio.run(bench_latency(tmp / "lat", args.runs))
        q = statistics.quantiles(lat, n=100)
        print(f"\n3. decisive frame on the pty -> alert committed in the store ({len(lat)} runs)")
        print(f"   p50 {q[49] * 1000:.1f} ms   p99 {q[98] * 1000:.1f} ms   max {max(lat) * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
