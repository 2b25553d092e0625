"""Bed-sensor decoding speed: frames decoded per second on one core, CPU time per frame.

Run by hand: ``PYTHONPATH=. python bench/belt.py``. Feeds a realistic mix of frames in
64-byte reads (what a 115200-baud read returns) through ``make_decoder(protocol).feed``.
"""

from __future__ import annotations

import time

from drivers.belt import micradar as m, ndjson, tinyframe as t
from drivers.belt import simulator as sim
from drivers.belt.decoder import make_decoder
from drivers.belt.reading import Reading

N_FRAMES = 200_000
CHUNK = 64


def micradar_stream(n):
    night = [f for _, f in sim.night_script(sim.NightPlan())]
    frames = (night * (n // len(night) + 1))[:n]
    return b"".join(frames), len(frames)


def tinyframe_stream(n):
    mix = [t.heart_rate(61.5, 1), t.resp_rate(14.2, 2), t.presence(True, 3), t.distance(82.0, True, 4)]
    frames = (mix * (n // len(mix) + 1))[:n]
    return b"".join(frames), len(frames)


def ndjson_stream(n):
    mix = [ndjson.encode_reading(Reading("ndjson", heart_rate_bpm=61.0)),
           ndjson.encode_reading(Reading("ndjson", resp_rate_per_min=14.0)),
           ndjson.encode_reading(Reading("ndjson", presence=True, in_bed=True, distance_m=0.8))]
    frames = (mix * (n // len(mix) + 1))[:n]
    return b"".join(frames), len(frames)


def run(protocol, stream, n):
    d = make_decoder(protocol)
    chunks = [stream[i:i + CHUNK] for i in range(0, len(stream), CHUNK)]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    got = 0
    for c in chunks:
        got += len(d.feed(c))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    assert got == n, (protocol, got, n)
    return n / wall, cpu / n * 1e6, len(stream) / n


def main():
    rows = [("micradar", *micradar_stream(N_FRAMES)), ("tinyframe", *tinyframe_stream(N_FRAMES)),
            ("ndjson", *ndjson_stream(N_FRAMES // 2))]
    print(f"{'protocol':<10} {'frames':>8} {'bytes/frame':>11} {'frames/s':>10} {'CPU us/frame':>13}")
    for name, stream, n in rows:
        make_decoder(name).feed(stream[: len(stream) // 10])     # warm-up
        fps, us, bpf = run(name, stream, n)
        print(f"{name:<10} {n:>8} {bpf:>11.1f} {fps:>10,.0f} {us:>13.2f}")


if __name__ == "__main__":
    main()
