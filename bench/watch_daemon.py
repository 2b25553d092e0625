"""The daemon for bench/watch.py: Hub with or without its watch, and the RSS child.

Its own module, importing nothing of the BLE stack at the top, so the RSS of a daemon
without a watch is measured without bleak loaded. ``python bench/watch_daemon.py 0|1``
prints the RSS (KiB) of a fresh, settled daemon without / with a connected simulated watch.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ADDRESS = "C0:FF:EE:00:00:09"
SETTLE_S = 3.0
HUB_CONFIG = """\
[hub]
id = "bench"
resident_id = "R-BENCH"
timezone = "Asia/Shanghai"
state_dir = "{state_dir}"
log_level = "warning"
"""
WATCH_TABLE = f"""
[watch]
address = "{ADDRESS}"
profile = "itag"
"""


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def start_hub(state_dir: str, watch_options: dict | None):
    """The daemon's Hub (real store in ``state_dir``) on a clock the caller moves."""
    from datetime import datetime
    from zoneinfo import ZoneInfo
    from hub import config
    from hub.app import Hub
    from hub.clock import ManualClock
    path = os.path.join(state_dir, "config.toml")
    with open(path, "w") as f:
        f.write(HUB_CONFIG.format(state_dir=os.path.join(state_dir, "state"))
                + (WATCH_TABLE if watch_options is not None else ""))
    clock = ManualClock(datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai")), mono=100.0)
    hub = Hub(config.load(path), clock=clock)
    hub.watch_options = dict(watch_options or {}, reconnect_min_s=0.05)
    await hub.start()
    return hub, clock


async def _rss(with_watch: bool) -> int:
    opts = None
    if with_watch:
        from drivers.watch.simulator import SimulatedWatch
        w = SimulatedWatch(ADDRESS)
        opts = {"client_backend": w.client_backend, "scanner_backend": w.scanner_backend}
    d = tempfile.mkdtemp(prefix="bench-watch-rss-")
    hub, _ = await start_hub(d, opts)
    try:
        for _ in range(200):
            if not with_watch or hub.watch.state == "connected":
                break
            await asyncio.sleep(0.05)
        else:
            raise SystemExit("the simulated watch did not connect")
        await asyncio.sleep(SETTLE_S)
        return rss_kib()
    finally:
        await hub.stop()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    print(asyncio.run(_rss(sys.argv[1] == "1")))
