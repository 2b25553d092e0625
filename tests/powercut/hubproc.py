"""`carehub run` on a night clock: the daemon the power-cut test starts and cuts.

Everything is the production path (config.load, the same logging, hub.app.run with its Hub, the
store on its thread, the belt on a pty) except the clock, which runs `speed` times faster than
real time so that alerts (whose rules need tens of seconds of evidence) happen between cuts. The
clock's origin is the night's start (`--t0`, a CLOCK_MONOTONIC reading shared by every process),
so time goes on across restarts as it does on the Pi between kills.

Run: python -m tests.powercut.hubproc --config PATH --speed 40 --t0 T --start ISO-DATETIME
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from datetime import datetime, timedelta

from hub import app, config


class NightClock:
    def __init__(self, speed: float, t0: float, start_wall: datetime):
        self.speed, self.t0, self.start_wall = speed, t0, start_wall

    def monotonic(self) -> float:
        return (time.monotonic() - self.t0) * self.speed

    def now(self) -> datetime:
        return self.start_wall + timedelta(seconds=self.monotonic())


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--speed", type=float, required=True)
    p.add_argument("--t0", type=float, required=True)
    p.add_argument("--start", required=True, help="the night's start, ISO 8601 with its offset")
    args = p.parse_args(argv)
    cfg = config.load(args.config)
    logging.basicConfig(level=getattr(logging, cfg["hub"]["log_level"].upper()), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    clock = NightClock(args.speed, args.t0, datetime.fromisoformat(args.start))
    return asyncio.run(app.run(cfg, hub=app.Hub(cfg, clock=clock)))


if __name__ == "__main__":
    sys.exit(main())
