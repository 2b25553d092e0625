"""From the watch driver's reports to what the rules observe (pure; no I/O).

The driver (drivers/watch) says what the watch sent; the rules (hub/rules/watch.py and
buttons.py) want facts about the resident. The one piece of state here is the last position
fix, so that an SOS or a fall carries where the resident was and how old that fix is at the
moment the alert is raised (``details.location``: lat, lon, accuracy_m, age_s).
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.watch.reports import Battery, HeartRate, LinkStatus, Location, Press, WatchReport
from hub.rules.observations import ButtonPress, WatchObservation


@dataclass(frozen=True)
class WatchReported:
    """The runner's message for one report of the watch link (any ``WatchReport``)."""

    report: WatchReport


class WatchMapper:
    """Keeps the last fix; turns each report into an observation (or None)."""

    def __init__(self):
        self.fix: Location | None = None

    def location(self, now_mono: float) -> dict | None:
        return self.fix.details(now_mono) if self.fix is not None else None

    def observation(self, report: WatchReport, now_mono: float):
        if isinstance(report, Press):
            if report.kind == "ok":
                return ButtonPress("ok", "watch")
            return WatchObservation(sos=report.kind == "sos", fall=report.kind == "fall",
                                    location=self.location(now_mono))
        if isinstance(report, HeartRate):
            return WatchObservation(hr_bpm=report.hr_bpm, worn=report.contact)
        if isinstance(report, Battery):
            return WatchObservation(battery_pct=report.battery_pct)
        if isinstance(report, Location):
            self.fix = report
            return WatchObservation(location=self.location(now_mono))
        return None


def status_info(status: LinkStatus) -> dict:
    """The data of the watch's ``device.status`` event (null fields left out)."""
    info = {"battery_pct": status.battery_pct, "rssi": status.rssi, "reason": status.reason}
    return {k: v for k, v in info.items() if v is not None}
