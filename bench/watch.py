"""Watch driver: latency from a simulated notification to the decoded report the link
delivers, CPU per press and at idle, and memory with the watch connected.

Run by hand: ``PYTHONPATH=. python bench/watch.py [--path sim|bluez] [--stage link|hub]
[--presses 200]`` or ``PYTHONPATH=. python bench/watch.py --memory``.

``sim``: bleak's BleakClient/BleakScanner and bleak-retry-connector over the simulated
backend (drivers/watch/simulator.py): the driver's own cost. ``bluez``: bleak's real BlueZ
backend against the test suite's fake org.bluez on a private dbus-daemon (needs
dbus-daemon): adds the D-Bus hop a real notification takes from bluetoothd.

Stages: the link delivers each report to ``Stage``s in order; ``Delivered`` marks the time.
``--stage hub`` measures end to end instead: the whole hub in-process (hub/app.py's Hub, its
pipeline and rules, the real SQLite store in a temporary state dir) with its watch link on the
chosen path, from the notification to the store's commit of the ``alert.raised`` sos event
(staff close each alert before the next press, so every press raises one). ``--memory``
compares the RSS of two fresh daemons (child processes), without and with a connected watch.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


RSS_BARE = rss_kib()
import bleak  # noqa: E402  (measured: what importing the BLE stack costs)
import bleak_retry_connector  # noqa: E402,F401

from drivers.watch import gatt  # noqa: E402
from drivers.watch.link import WatchLink  # noqa: E402
from drivers.watch.pattern import ITAG_BUTTON, ITAG_SERVICE  # noqa: E402
from drivers.watch.profiles import make_profile  # noqa: E402
from drivers.watch.reports import Press  # noqa: E402
from drivers.watch.simulator import SimulatedWatch  # noqa: E402
from bench.watch_daemon import start_hub  # noqa: E402

RSS_IMPORTED = rss_kib()
ADDRESS = "C0:FF:EE:00:00:09"


class Clock:
    """Monotonic time that jumps 10 s per press so no press is a duplicate of the last."""

    def __init__(self):
        self.t = 0.0

    def monotonic(self):
        return self.t


class Delivered:
    """The driver-level stage: the time each press report reached the hub."""

    def __init__(self):
        self.times: list[float] = []
        self.event = asyncio.Event()

    async def __call__(self, report) -> None:
        if isinstance(report, Press):
            self.times.append(time.perf_counter())
            self.event.set()


async def measure_hub(press, client_backend, scanner_backend, subscribed, presses, idle_s) -> dict:
    from hub.rules.observations import StaffClose
    backends = {k: v for k, v in (("client_backend", client_backend),
                                  ("scanner_backend", scanner_backend)) if v is not None}
    d = tempfile.mkdtemp(prefix="bench-watch-")
    hub, clock = await start_hub(d, backends)
    committed: dict[str, float] = {}
    closed: set[str] = set()

    def on_commit(e) -> None:
        if e.type == "alert.raised" and e.data["rule"] == "sos":
            committed[e.data["alert_id"]] = time.perf_counter()
        elif e.type == "alert.resolved" and e.data["rule"] == "sos":
            closed.add(e.data["alert_id"])

    hub.store.subscribe(on_commit)
    try:
        await until(lambda: hub.watch.state == "connected" and subscribed())
        latencies = []
        cpu0 = time.process_time()
        for _ in range(presses):
            clock.advance(10.0)            # past sos_dedupe: a new press
            n = len(committed)
            t0 = time.perf_counter()
            press()
            await until(lambda: len(committed) > n, timeout=10)
            alert_id, t1 = list(committed.items())[-1]
            latencies.append((t1 - t0) * 1000)
            hub.runner.put(StaffClose(alert_id, "bench"))
            await until(lambda: alert_id in closed, timeout=10)
        cpu_per_press = (time.process_time() - cpu0) / presses
    finally:
        await hub.stop()
        shutil.rmtree(d, ignore_errors=True)
    latencies.sort()
    return {"presses": len(latencies), "p50_ms": statistics.median(latencies),
            "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)], "max_ms": latencies[-1],
            "cpu_ms_per_press": cpu_per_press * 1000}


class Stages:
    def __init__(self, *stages):
        self.stages = stages
        self._tasks: set = set()

    def __call__(self, report) -> None:
        task = asyncio.ensure_future(self._run(report))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, report):
        for stage in self.stages:
            await stage(report)


async def until(pred, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.001)


async def run_sim(presses: int, idle_s: float, measure=None) -> dict:
    measure = measure or measure_link
    w = SimulatedWatch(ADDRESS)
    return await measure(lambda: w.press(), w.client_backend, w.scanner_backend,
                         lambda: w.client is not None and bool(w.client.subscribed), presses, idle_s)


async def run_bluez(presses: int, idle_s: float, measure=None) -> dict:
    measure = measure or measure_link
    from tests.drivers.watch.fake_bluez import FakeBlueZ
    fake = FakeBlueZ(ADDRESS, [(gatt.BATTERY_SERVICE, [gatt.BATTERY_LEVEL]), (ITAG_SERVICE, [ITAG_BUTTON])],
                     values={gatt.BATTERY_LEVEL: b"\x50"})
    await fake.start()
    try:
        return await measure(lambda: fake.notify(ITAG_BUTTON, b"\x01"), None, None,
                             lambda: fake.chars[ITAG_BUTTON].notifying, presses, idle_s)
    finally:
        await fake.stop()


async def measure_link(press, client_backend, scanner_backend, subscribed, presses, idle_s) -> dict:
    clock = Clock()
    delivered = Delivered()
    link = WatchLink(ADDRESS, make_profile("itag"), on_report=Stages(delivered), clock=clock,
                     client_backend=client_backend, scanner_backend=scanner_backend,
                     reconnect_min_s=0.05, battery_interval_s=600.0)
    task = asyncio.ensure_future(link.run())
    await until(lambda: link.state == "connected" and subscribed())
    rss_connected = rss_kib()
    latencies = []
    cpu0 = time.process_time()
    for i in range(presses):
        clock.t += 10.0
        delivered.event.clear()
        t0 = time.perf_counter()
        press()
        await asyncio.wait_for(delivered.event.wait(), 10)
        latencies.append((delivered.times[-1] - t0) * 1000)
        await asyncio.sleep(0.002)        # presses come one at a time
    cpu_per_press = (time.process_time() - cpu0) / presses
    cpu1 = time.process_time()
    await asyncio.sleep(idle_s)
    idle_cpu = (time.process_time() - cpu1) / idle_s
    rss_after = rss_kib()
    link.stop()
    await task
    latencies.sort()
    return {
        "presses": len(latencies),
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)],
        "max_ms": latencies[-1],
        "cpu_ms_per_press": cpu_per_press * 1000,
        "idle_cpu_pct": idle_cpu * 100,
        "rss_import_kib": RSS_IMPORTED - RSS_BARE,
        "rss_connected_kib": rss_connected - RSS_IMPORTED,
        "rss_after_presses_kib": rss_after - RSS_IMPORTED,
    }


def with_private_bus(fn):
    daemon = shutil.which("dbus-daemon")
    if daemon is None:
        sys.exit("bench/watch.py --path bluez needs dbus-daemon (apt-get install dbus)")
    from tests.drivers.watch.fake_bluez import BUS_CONF
    d = tempfile.mkdtemp()
    conf = os.path.join(d, "bus.conf")
    with open(conf, "w") as f:
        f.write(BUS_CONF.format(path=os.path.join(d, "socket")))
    proc = subprocess.Popen([daemon, f"--config-file={conf}", "--nofork", "--print-address=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = proc.stdout.readline().strip()
        return fn()
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(d, ignore_errors=True)


def daemon_memory() -> tuple[int, int]:
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "watch_daemon.py")
    return tuple(int(subprocess.run([sys.executable, here, flag], capture_output=True, text=True,
                                    check=True).stdout.split()[-1]) for flag in ("0", "1"))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", choices=("sim", "bluez"), default="sim")
    ap.add_argument("--presses", type=int, default=200)
    ap.add_argument("--idle", type=float, default=10.0, help="seconds connected and idle for the CPU figure")
    ap.add_argument("--stage", choices=("link", "hub"), default="link",
                    help="link: to the decoded Press; hub: to the committed sos alert")
    ap.add_argument("--memory", action="store_true",
                    help="the daemon's RSS without and with a connected (simulated) watch")
    args = ap.parse_args(argv)
    if args.memory:
        bare, watch = daemon_memory()
        print(f"daemon RSS, fresh, idle: {bare / 1024:.1f} MiB without a watch, "
              f"{watch / 1024:.1f} MiB with the watch connected: +{(watch - bare) / 1024:.1f} MiB")
        return
    runner = run_sim if args.path == "sim" else run_bluez
    if args.stage == "hub":
        go = lambda: asyncio.run(runner(args.presses, args.idle, measure_hub))
        r = go() if args.path == "sim" else with_private_bus(go)
        print(f"path {args.path}: notification -> alert.raised sos committed by the daemon's store, "
              f"{r['presses']} presses (bleak {version('bleak')})")
        print(f"  latency  p50 {r['p50_ms']:.2f} ms   p99 {r['p99_ms']:.2f} ms   max {r['max_ms']:.2f} ms")
        print(f"  CPU      {r['cpu_ms_per_press']:.2f} ms per press and its close (the whole process)")
        return
    go = lambda: asyncio.run(runner(args.presses, args.idle))
    r = go() if args.path == "sim" else with_private_bus(go)
    print(f"path {args.path}: notification -> decoded Press delivered by the link, "
          f"{r['presses']} presses (bleak {version('bleak')}, "
          f"bleak-retry-connector {version('bleak-retry-connector')})")
    print(f"  latency  p50 {r['p50_ms']:.3f} ms   p99 {r['p99_ms']:.3f} ms   max {r['max_ms']:.3f} ms")
    print(f"  CPU      {r['cpu_ms_per_press']:.3f} ms per press (all processes' work in this one); "
          f"idle connected {r['idle_cpu_pct']:.3f} % of a core")
    print(f"  memory   importing bleak + bleak-retry-connector + drivers.watch: "
          f"{r['rss_import_kib'] / 1024:.1f} MiB RSS; connecting: {r['rss_connected_kib'] / 1024:.1f} MiB; "
          f"after the presses: {r['rss_after_presses_kib'] / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
