"""A simulated MicRadar bed radar: a scripted night of real frames, for demos and tests.

``night_script(NightPlan(...))`` gives ``[(seconds_from_start, frame_bytes), ...]`` in time
order: the resident goes to bed, sleeps (HR/RR drifting around their means, turn-overs),
gets up in the night for long enough to matter, comes back, and gets up in the morning.
``Incident``s script what the hub must notice (breathing stops, vitals absent, heart rate
high, the radar falling silent). ``play_into_fd`` writes the script into a pty at a speed
factor; ``play_in_step`` writes it with the simulation driving the hub's clock (deterministic
under any load); ``write_recording`` turns it into a recording file for replay tests.

The timing follows the radar's documented behaviour (reference sleep-sensors.md 1.2): HR and
RR every 3 s, body movement every 5 s, in/out of bed ~30 s after the fact, presence off
40 s after the room empties, a 10-minute composite and the night summary after getting up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from drivers.belt import micradar as m
from drivers.recording import RecordingWriter

LOGGER = logging.getLogger(__name__)

BREATHING_STOPS, VITALS_ABSENT, HR_HIGH, SILENCE = (
    "breathing_stops", "vitals_absent", "hr_high", "silence")
INCIDENTS = (BREATHING_STOPS, VITALS_ABSENT, HR_HIGH, SILENCE)

BED_DECLARE_S = 30.0        # the radar reports in/out of bed about 30 s after the fact
PRESENCE_OFF_S = 40.0       # and "no one" 40 s after the last movement
VITALS_PERIOD_S = 3.0
MOVEMENT_PERIOD_S = 5.0
DISTANCE_PERIOD_S = 10.0
HEARTBEAT_PERIOD_S = 60.0
COMPOSITE_PERIOD_S = 600.0


@dataclass(frozen=True)
class Incident:
    kind: str
    at_s: float
    duration_s: float

    def __post_init__(self):
        if self.kind not in INCIDENTS:
            raise ValueError(f"unknown incident {self.kind!r} (use one of {', '.join(INCIDENTS)})")

    def covers(self, t: float) -> bool:
        return self.at_s <= t < self.at_s + self.duration_s


@dataclass(frozen=True)
class NightPlan:
    """Times in seconds from the start of the script."""

    bed_at_s: float = 300.0
    exit_at_s: float = 3 * 3600.0
    exit_duration_s: float = 35 * 60.0      # longer than the default max_out_of_bed (30m)
    up_at_s: float = 8 * 3600.0
    end_s: float = 8 * 3600.0 + 600.0
    hr_mean_bpm: float = 60.0
    rr_mean_per_min: float = 14.0
    turnovers_per_hour: float = 3.0
    firmware: str = "G60SM1SYv010009"
    seed: int = 1
    incidents: tuple[Incident, ...] = field(default_factory=tuple)

    def in_bed(self, t: float) -> bool:
        return (self.bed_at_s <= t < self.exit_at_s
                or self.exit_at_s + self.exit_duration_s <= t < self.up_at_s)


def short_plan(**overrides) -> NightPlan:
    """A night squeezed into ~40 simulated minutes (demos, end-to-end tests)."""
    base = dict(bed_at_s=60.0, exit_at_s=900.0, exit_duration_s=600.0, up_at_s=2100.0,
                end_s=2400.0, turnovers_per_hour=12.0)
    base.update(overrides)
    return NightPlan(**base)


def night_script(plan: NightPlan = NightPlan()) -> list[tuple[float, bytes]]:
    rng = random.Random(plan.seed)
    out: list[tuple[float, bytes]] = []

    def at(t: float, frame: bytes) -> None:
        if 0 <= t <= plan.end_s and not any(i.kind == SILENCE and i.covers(t)
                                           for i in plan.incidents):
            out.append((round(t, 3), frame))

    def incident(kind: str, t: float) -> bool:
        return any(i.kind == kind and i.covers(t) for i in plan.incidents)

    at(0.0, m.init_complete())
    at(0.2, m.firmware_reply(plan.firmware))
    at(0.5, m.presence(False))
    at(0.5, m.in_bed(0))
    t = HEARTBEAT_PERIOD_S
    while t <= plan.end_s:
        at(t, m.heartbeat())
        t += HEARTBEAT_PERIOD_S

    # getting in and out of bed: (time, entering)
    moves = [(plan.bed_at_s, True), (plan.exit_at_s, False),
             (plan.exit_at_s + plan.exit_duration_s, True), (plan.up_at_s, False)]
    for when, entering in moves:
        if entering:
            at(when, m.presence(True))
            at(when, m.motion(2))
            at(when + BED_DECLARE_S, m.in_bed(1))
            at(when + BED_DECLARE_S + 5, m.motion(1))
        else:
            at(when, m.motion(2))
            at(when + BED_DECLARE_S, m.in_bed(0))
            at(when + PRESENCE_OFF_S, m.presence(False))
            at(when + PRESENCE_OFF_S, m.motion(0))

    # vitals while in bed: a slow random walk around the means, lower in deep sleep
    hr, rr = plan.hr_mean_bpm + 8, plan.rr_mean_per_min + 2
    breathing_off = False
    t = plan.bed_at_s + 10
    while t < plan.end_s:
        if plan.in_bed(t):
            hr += (plan.hr_mean_bpm - hr) * 0.02 + rng.gauss(0, 0.8)
            rr += (plan.rr_mean_per_min - rr) * 0.02 + rng.gauss(0, 0.3)
            stopped = incident(BREATHING_STOPS, t)
            if stopped != breathing_off:
                at(t, m.resp_state(4 if stopped else 1))
                breathing_off = stopped
            if not incident(VITALS_ABSENT, t):
                value = rng.randint(125, 140) if incident(HR_HIGH, t) else round(hr)
                at(t, m.heart_rate(min(max(value, 40), 120)))    # the device caps at 120
                if not stopped:
                    at(t + 0.5, m.resp_rate(min(max(round(rr), 6), 35)))
        t += VITALS_PERIOD_S

    # movement and distance; turn-overs as movement bursts, counted in the composite
    turn_p = plan.turnovers_per_hour * MOVEMENT_PERIOD_S / 3600.0
    turns = 0
    t = plan.bed_at_s + BED_DECLARE_S
    next_composite = plan.bed_at_s + COMPOSITE_PERIOD_S
    since_composite = {"large": 0, "small": 0, "n": 0}
    while t < plan.end_s:
        if plan.in_bed(t) and incident(VITALS_ABSENT, t):
            at(t, m.movement(0))   # no breathing, no heartbeat: no body movement either
            since_composite["small"] += 1
            since_composite["n"] += 1
        elif plan.in_bed(t):
            if rng.random() < turn_p:
                turns += 1
                at(t, m.movement(rng.randint(60, 85)))
                at(t, m.motion(2))
                at(t + 2, m.motion(1))
                since_composite["large"] += 1
            else:
                at(t, m.movement(rng.randint(0, 8)))
                since_composite["small"] += 1
            since_composite["n"] += 1
            if int(t) % int(DISTANCE_PERIOD_S) == 0:
                at(t, m.distance(80 + rng.randint(-5, 5)))
        if t >= next_composite:
            if plan.in_bed(t):
                n = max(since_composite["n"], 1)
                stage = rng.choice((0, 1, 1, 2))
                at(t, m.sleep_stage(stage))
                at(t, m.composite(True, stage, round(rr), round(hr), turns,
                                  100 * since_composite["large"] // n,
                                  100 * since_composite["small"] // n))
            turns = 0
            since_composite = {"large": 0, "small": 0, "n": 0}
            next_composite += COMPOSITE_PERIOD_S
        t += MOVEMENT_PERIOD_S

    # the night summary after getting up
    slept_min = int((plan.up_at_s - plan.bed_at_s - plan.exit_duration_s) / 60)
    at(plan.up_at_s + 60, m.encode(0x84, 0x0D, bytes((
        78, slept_min >> 8 & 0xFF, slept_min & 0xFF, 10, 60, 30,
        int(plan.exit_duration_s / 60) & 0xFF, 1, 12, round(plan.rr_mean_per_min),
        round(plan.hr_mean_bpm), 0))))
    out.sort(key=lambda item: item[0])
    return out


def script_bytes(script: list[tuple[float, bytes]]) -> bytes:
    return b"".join(frame for _, frame in script)


def write_recording(path, script: list[tuple[float, bytes]], start_wall: datetime) -> int:
    """The script as a recording (spec section 1); returns the number of lines."""
    with RecordingWriter(path) as writer:
        for t, frame in script:
            writer.write(frame, start_wall + timedelta(seconds=t))
        return writer.chunks


async def play_into_fd(fd: int, script: list[tuple[float, bytes]], speed: float = 60.0,
                       *, start_s: float = 0.0, wait_for_reader: bool = False) -> int:
    """Write the script into ``fd`` (a pty master) at ``speed`` times real time.

    Like a UART with nobody listening, bytes that do not fit are dropped rather than
    blocking the loop; with ``wait_for_reader`` they wait until the reader catches up instead
    (tests that compare a lived night with its replay need every byte). Returns the number of bytes dropped; stops quietly if the fd closes.
    """
    if speed <= 0:
        raise ValueError("speed must be positive")
    os.set_blocking(fd, False)
    loop = asyncio.get_running_loop()
    origin = loop.time()
    dropped = 0
    i, n = 0, len(script)
    while i < n:
        t = script[i][0]
        if t < start_s:
            i += 1
            continue
        batch = bytearray()
        while i < n and script[i][0] == t:
            batch += script[i][1]
            i += 1
        delay = origin + (t - start_s) / speed - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            if wait_for_reader:
                await _write_all(loop, fd, bytes(batch))
            else:
                written = os.write(fd, batch)
                dropped += len(batch) - written
        except BlockingIOError:
            dropped += len(batch)
        except OSError as exc:
            LOGGER.info("simulated belt stopped: %s", exc)
            break
    return dropped


async def _write_all(loop, fd: int, data: bytes) -> None:
    """Write everything, waiting (without blocking the loop) while the pty buffer is full."""
    while data:
        try:
            data = data[os.write(fd, data):]
        except BlockingIOError:
            ready = loop.create_future()
            loop.add_writer(fd, lambda: ready.done() or ready.set_result(None))
            try:
                await ready
            finally:
                loop.remove_writer(fd)


async def play_in_step(fd: int, script: list[tuple[float, bytes]], *, set_time, handled,
                       speed: float = 0.0, step_s: float = 0.0, at=None,
                       poll_s: float = 0.001) -> None:
    """Write the script into ``fd`` with the simulation, not wall time, driving the clock.

    For each instant of the script: ``set_time(t)`` (the hub's clock now reads t), write that
    instant's frames, then wait until ``handled()`` (frames the hub has decoded and judged)
    has caught up. Every frame is thus stamped with its own script time whatever the machine's
    load, so a run gives the same alerts every time (the demo and its test). ``speed`` > 0 caps
    the pace at that many times real time (0: as fast as the hub keeps up). ``step_s`` > 0
    plays that many simulated seconds per step (fewer waits; a frame is then stamped up to
    ``step_s`` late, the same way on every run). ``at`` is an
    optional ``{t: async callback}`` run once the simulation reaches t (e.g. a button press).
    """
    os.set_blocking(fd, False)
    loop = asyncio.get_running_loop()
    origin = loop.time()
    pending = sorted((at or {}).items())
    written = 0
    i, n = 0, len(script)
    while i < n:
        t = script[i][0]
        while pending and pending[0][0] <= t:
            when, callback = pending.pop(0)
            set_time(when)
            await callback()
        batch = bytearray()
        while i < n and (script[i][0] == t or script[i][0] < t + step_s) and not (
                pending and script[i][0] >= pending[0][0]):
            batch += script[i][1]
            written += 1
            i += 1
        t = script[i - 1][0]
        if speed > 0:
            delay = origin + t / speed - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        set_time(t)
        try:
            await _write_all(loop, fd, bytes(batch))
        except OSError as exc:
            LOGGER.info("simulated belt stopped: %s", exc)
            return
        while handled() < written:
            await asyncio.sleep(poll_s)
