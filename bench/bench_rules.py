"""How much a Pi core the alert engine costs: one simulated night of 1 Hz belt readings.

Run by hand: ``PYTHONPATH=. python bench/bench_rules.py``; prints a table.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

from drivers.belt.reading import Reading
from hub.rules.engine import AlertEngine, evaluate, initial_state, merged_params
from hub.rules.observations import BeltReading, Now, Tick

N = 8 * 3600


def main():
    start = datetime(2026, 11, 23, 22, tzinfo=timezone(timedelta(hours=8)))
    obs = BeltReading(Reading("bench", presence=True, in_bed=True, heart_rate_bpm=62,
                              resp_rate_per_min=14, motion="still", movement_index=2))
    rows = []
    eng = AlertEngine(seed="bench")
    t0 = time.perf_counter()
    for i in range(N):
        now = Now(float(i), start + timedelta(seconds=i))
        eng.handle(obs, now)
        eng.handle(Tick(), now)
    dt = time.perf_counter() - t0
    rows.append(("AlertEngine.handle (reading+tick)", 2 * N, dt))
    state, params = initial_state("b"), merged_params(None)
    t0 = time.perf_counter()
    for i in range(3600):
        state, _ = evaluate(state, obs, Now(float(i), start + timedelta(seconds=i)), params)
    rows.append(("evaluate() (copies the state)", 3600, time.perf_counter() - t0))
    t0 = time.perf_counter()
    for _ in range(1000):
        blob = json.dumps(eng.state)
    rows.append(("json.dumps(state) for put_state", 1000, time.perf_counter() - t0))
    print(f"{'operation':40} {'calls':>8} {'us/call':>9} {'% core at 2 Hz':>15}")
    for name, n, secs in rows:
        us = secs / n * 1e6
        print(f"{name:40} {n:8d} {us:9.1f} {us * 2 / 1e4:14.3f}%")
    print(f"state size after an 8 h night: {len(blob)} bytes")


if __name__ == "__main__":
    main()
