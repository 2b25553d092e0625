"""One physiological night, three protocols, one outcome.

Hypothesis builds a night (bed exits of various lengths, breathing/heart stops, heart-rate and
breathing-rate episodes, data gaps); each protocol encodes it its own way: MicRadar one field
per frame (presence and in-bed only on change), TinyFrame a few frames per reading (no bed flag:
derived from presence), NDJSON everything in one line. Decoded and judged by the engine, the
three must raise the same alerts with the same priorities, within one reading period.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import example, given, settings, strategies as st

from drivers.belt import micradar as m
from drivers.belt import ndjson, tinyframe as tf
from drivers.belt.decoder import make_decoder
from hub.rules.actions import Emit
from hub.rules.engine import AlertEngine
from hub.rules.observations import BeltReading, Now, Tick

TZ = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 11, 23, 23, 0, tzinfo=TZ)
PERIOD_S = 5.0          # one reading period: every protocol reports the vital signs this often
M = 60.0

# Episode lengths stay more than a reading period away from every rule's threshold, where a
# one-period difference would rightly change the outcome.
EPISODES = {
    "out": [2 * M, 12 * M, 35 * M, 65 * M],     # exit debounce 1 min; alert 30 min, P1 60 min
    "apnea": [20.0, 90.0, 150.0],               # pre-alert 60 s, alert 120 s
    "hr_high": [4 * M, 13 * M],                 # 10 min at 125 bpm
    "rr_low": [3 * M, 8 * M],                   # 5 min at 7 /min
    "gap": [30.0, 4 * M, 35 * M],               # sample gap 15 s; belt_offline 30 min
}


def physiology(night):
    """Per reading period: None (no data) or (in_bed, hr, rr)."""
    plan = [("sleep", 15 * M)] + [seg for ep, sleep in night for seg in (ep, ("sleep", sleep))]
    out = []
    for kind, length in plan:
        for _ in range(int(length / PERIOD_S)):
            out.append({"sleep": (True, 62, 14), "out": (False, None, None),
                        "apnea": (True, None, None), "hr_high": (True, 125, 14),
                        "rr_low": (True, 62, 7), "gap": None}[kind])
    return out


def micradar(periods):
    frames, in_bed = [(0.0, m.presence(True)), (0.0, m.in_bed(1))], True
    for i, p in enumerate(periods):
        t = i * PERIOD_S
        if p is None:
            continue
        bed, hr, rr = p
        if bed != in_bed:
            frames += [(t, m.presence(bed)), (t, m.in_bed(1 if bed else 0))]
            in_bed = bed
        if hr is not None:
            frames.append((t, m.heart_rate(hr)))
        if rr is not None:
            frames.append((t + 1, m.resp_rate(rr)))
        frames.append((t + 2, m.movement(2 if bed and hr is not None else 0)))
    return frames


def tinyframe(periods):
    frames = []
    for i, p in enumerate(periods):
        if p is not None:
            t, (bed, hr, rr) = i * PERIOD_S, p
            frames += [(t, tf.presence(bed)), (t, tf.heart_rate(hr or 0.0)),
                       (t, tf.resp_rate(rr or 0.0))]
    return frames


def ndjson_lines(periods):
    frames = []
    for i, p in enumerate(periods):
        if p is not None:
            bed, hr, rr = p
            frames.append((i * PERIOD_S, ndjson.encode(
                presence=bed, in_bed=bed, heart_rate_bpm=hr, resp_rate_per_min=rr,
                movement_index=2 if bed and hr is not None else 0)))
    return frames


def judge(protocol, frames, periods):
    """Ticks where no protocol sends anything (readings run the timers otherwise)."""
    decoder, engine = make_decoder(protocol), AlertEngine(seed="p")
    ticks = [(i * PERIOD_S, 0, None) for i, p in enumerate(periods + [None]) if p is None]
    steps = sorted([(t, 1, f) for t, f in frames] + ticks, key=lambda s: (s[0], s[1]))
    got = []
    for t, _, frame in steps:
        now = Now(t, START + timedelta(seconds=t))
        obs = [Tick()] if frame is None else [BeltReading(r) for r in decoder.feed(frame)]
        for o in obs:
            got += [(t, a.type, a.data["rule"], a.priority) for a in engine.handle(o, now)
                    if isinstance(a, Emit) and a.type.startswith("alert.")]
    return got


night_strategy = st.lists(st.tuples(
    st.sampled_from(sorted(EPISODES)).flatmap(
        lambda k: st.sampled_from(EPISODES[k]).map(lambda v: (k, v))),
    st.sampled_from([10 * M, 15 * M])), min_size=1, max_size=2)


@settings(max_examples=4, deadline=None)
@given(night_strategy)
@example([(("out", 35 * M), 10 * M), (("apnea", 150.0), 10 * M), (("hr_high", 13 * M), 10 * M)])
@example([(("out", 65 * M), 10 * M), (("rr_low", 8 * M), 10 * M), (("gap", 35 * M), 10 * M)])
def test_the_same_night_in_three_protocols_gives_the_same_alerts(night):
    periods = physiology(night)
    runs = {name: judge(name, enc(periods), periods) for name, enc in
            (("micradar", micradar), ("tinyframe", tinyframe), ("ndjson", ndjson_lines))}
    base = runs["ndjson"]
    for name, got in runs.items():
        assert [x[1:] for x in got] == [x[1:] for x in base], (name, got, base)
        for (t, *what), (t0, *_) in zip(got, base):
            assert abs(t - t0) <= PERIOD_S, (name, what, t, t0)
    wanted = {"out": 35 * M, "apnea": 150.0, "hr_high": 13 * M, "rr_low": 8 * M}
    for (kind, length), _ in night:          # the test is not vacuous: long episodes alert
        if wanted.get(kind, float("inf")) <= length:
            assert any(x[1] == "alert.raised" for x in base), (night, base)
