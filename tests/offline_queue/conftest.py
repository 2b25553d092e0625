"""Events and store paths for the store tests: real SQLite files under tmp_path."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from hub.clock import ManualClock
from hub.events import EventFactory


@pytest.fixture
def clock():
    return ManualClock(datetime(2026, 11, 23, 22, 0, tzinfo=timezone.utc), mono=1000.0)


@pytest.fixture
def factory(clock):
    return EventFactory("home-test", "R-1", clock, boot_id="boot-test", synced=lambda: True)


@pytest.fixture
def make(factory, clock):
    """make(type="vitals.minute", priority=None, **data) -> Event, one second after the last."""

    def make_one(type: str = "vitals.minute", priority: int | None = None, **data):
        clock.advance(1.0)
        return factory.make(type, data or {"hr_bpm": 62, "rr_bpm": 14}, priority)

    return make_one


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "state" / "queue.db"
