"""Making events: the hub's default priority per type and the factory that stamps each new event
with identity, wall time and boot facts. The envelope itself lives in offline_queue/envelope.py."""

from __future__ import annotations

from typing import Mapping

from offline_queue.envelope import (  # noqa: F401  (re-exported: the hub's one place for events)
    ENVELOPE_FIELDS, Event, format_utc, kernel_clock_synced, new_id, read_boot_id)

# Default priority per type; a caller may say otherwise (alerts carry their own).
PRIORITY_BY_TYPE = {
    "alert.raised": 1,
    "alert.escalated": 1,
    "alert.cancelled": 2,
    "alert.resolved": 2,
    "alert.prealert": 2,
    "alert.acknowledged": 2,
    "alert.notified": 2,
    "bed.entered": 3,
    "bed.exited": 3,
    "vitals.minute": 3,
    "sleep.report": 3,
    "device.status": 3,
    "hub.heartbeat": 3,
    "store.evicted": 2,
    "store.reset": 2,
    "hub.config_rejected": 2,
    "store.damaged": 2,
}


class EventFactory:
    """Stamps new events with identity, wall time, boot facts and the hub's ids.

    ``clock`` is the injected clock (replay passes the recording's); ``synced`` and ``boot_id``
    are injectable so tests and replay can state them.
    """

    def __init__(self, hub_id: str, resident_id: str, clock, *, boot_id: str | None = None,
                 synced=kernel_clock_synced, uptime=None):
        self.hub_id = hub_id
        self.resident_id = resident_id
        self.clock = clock
        self.boot_id = boot_id if boot_id is not None else read_boot_id()
        self._synced = synced
        self._uptime = uptime or clock.monotonic

    def make(self, type: str, data: Mapping | None = None, priority: int | None = None) -> Event:
        if priority is None:
            priority = PRIORITY_BY_TYPE.get(type, 3)
        return Event(
            id=new_id(),
            type=type,
            priority=priority,
            occurred_at=format_utc(self.clock.now()),
            clock_synced=bool(self._synced()),
            boot_id=self.boot_id,
            uptime_s=round(self._uptime(), 3),
            hub_id=self.hub_id,
            resident_id=self.resident_id,
            data=data or {},
        )
