"""A simulated clock and observation builders for replaying scenarios through the engine."""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from drivers.belt.reading import Reading
from hub.rules.actions import Emit
from hub.rules.engine import AlertEngine
from hub.rules.observations import BeltReading, Now, Tick

TZ = ZoneInfo("Asia/Shanghai")


def wall(hh: int, mm: int = 0, day: int = 23) -> datetime:
    return datetime(2026, 11, day, hh, mm, tzinfo=TZ)


def reading(in_bed=True, hr=62.0, rr=14.0, motion="still", movement=2.0, **kw) -> BeltReading:
    return BeltReading(Reading("test", presence=in_bed, in_bed=in_bed, heart_rate_bpm=hr,
                               resp_rate_per_min=rr, motion=motion, movement_index=movement,
                               **kw))


def absent() -> BeltReading:
    """In bed, presence detected, no heart rate, no breathing, no movement."""
    return reading(in_bed=True, hr=None, rr=None, motion="still", movement=0.0)


def empty() -> BeltReading:
    return reading(in_bed=False, hr=None, rr=None, motion="none", movement=0.0)


def belt(t0: float, t1: float, make, every: float = 1.0):
    """Readings from ``make()`` every ``every`` s in [t0, t1)."""
    n = int(round((t1 - t0) / every))
    return [(t0 + i * every, make() if callable(make) else make) for i in range(n)]


@dataclass(frozen=True)
class Restart:
    """A step that saves the state as JSON, 'reboots' (monotonic restarts near 0) and restores
    it ``down_s`` later; no step of the scenario may fall inside the downtime."""

    down_s: float


def one_field_per_frame(t0: float, t1: float, bed_every: float = 5.0, hr=64.0):
    """MicRadar's way: heart-rate readings every second carry nothing else, and the readings
    that speak of presence and the bed (here repeated every ``bed_every`` s) carry no rate."""
    steps = belt(t0, t1, lambda: BeltReading(Reading("test", heart_rate_bpm=hr)), 1.0)
    return steps + belt(t0 + 0.5, t1, lambda: BeltReading(Reading("test", presence=True,
                                                                  in_bed=True)), bed_every)


@dataclass
class Sim:
    """Drives an AlertEngine with a simulated clock; ticks every ``tick_s`` between steps."""

    start: datetime
    params: dict | None = None
    tick_s: float = 1.0
    mono0: float = 1000.0
    engine: AlertEngine | None = None
    t: float = 0.0
    events: list = field(default_factory=list)      # (t, Emit)
    panels: list = field(default_factory=list)      # (t, Panel)

    def __post_init__(self):
        if self.engine is None:
            self.engine = AlertEngine(self.params, seed="sim")

    def now(self) -> Now:
        return Now(self.mono0 + self.t, self.start + timedelta(seconds=self.t))

    def at(self, t: float, obs) -> list:
        assert t >= self.t, "time never goes back"
        self.t = t
        actions = self.engine.handle(obs, self.now())
        for a in actions:
            (self.events if isinstance(a, Emit) else self.panels).append((t, a))
        return actions

    def restart(self, down_s: float, mono_after_boot: float = 5.0) -> None:
        saved = json.loads(json.dumps(self.engine.state))
        self.engine = AlertEngine(self.params, state=saved)
        self.t += down_s
        self.mono0 = mono_after_boot - self.t

    def run(self, steps, until: float) -> "Sim":
        """Replay (t, obs) steps in time order with ticks in between, up to ``until``."""
        heap = [(t, i, obs) for i, (t, obs) in enumerate(steps)]
        heapq.heapify(heap)
        nxt = (int(self.t // self.tick_s) + 1) * self.tick_s
        while True:
            t_obs = heap[0][0] if heap else float("inf")
            if t_obs <= nxt and t_obs <= until:
                t, _, obs = heapq.heappop(heap)
                if isinstance(obs, Restart):
                    self.t = max(t, self.t)
                    self.restart(obs.down_s)
                    nxt = (int(self.t // self.tick_s) + 1) * self.tick_s
                    continue
                self.at(max(t, self.t), obs)
            elif nxt <= until:
                self.at(nxt, Tick())
                nxt += self.tick_s
            else:
                return self

    def of(self, type_: str, rule: str | None = None) -> list:
        return [(t, e) for t, e in self.events
                if e.type == type_ and (rule is None or e.data.get("rule") == rule)]
