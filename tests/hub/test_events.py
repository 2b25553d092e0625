"""The event envelope of spec section 3."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from hub import events
from offline_queue import envelope
from hub.clock import ManualClock
from hub.events import Event, EventFactory, new_id


def make_factory(synced=True):
    clock = ManualClock(datetime(2026, 11, 23, 22, 14, 5, 120000, tzinfo=ZoneInfo("Asia/Shanghai")), mono=4321.5)
    return clock, EventFactory("home-0042", "R-1017", clock, boot_id="b-1", synced=lambda: synced)


def test_envelope_has_exactly_the_spec_fields():
    _, f = make_factory()
    d = f.make("bed.entered").to_dict()
    assert set(d) == {"id", "seq", "type", "priority", "occurred_at", "clock_synced", "boot_id", "uptime_s",
                      "hub_id", "resident_id", "data"}
    assert d["occurred_at"] == "2026-11-23T14:14:05.120Z"  # UTC with milliseconds
    assert (d["hub_id"], d["resident_id"], d["boot_id"], d["uptime_s"]) == ("home-0042", "R-1017", "b-1", 4321.5)
    assert d["priority"] == 3 and d["clock_synced"] is True and d["seq"] is None


def test_events_are_immutable_and_json_round_trips():
    _, f = make_factory(synced=False)
    e = f.make("alert.raised", {"rule": "sos", "details": {"where": [1, 2]}}, priority=1)
    with pytest.raises(AttributeError):
        e.priority = 2
    with pytest.raises(TypeError):
        e.data["rule"] = "x"
    committed = e.with_seq(7)
    back = Event.from_dict(json.loads(committed.to_json()))
    assert back == committed and back.seq == 7 and back.clock_synced is False
    assert back.to_dict()["data"] == {"rule": "sos", "details": {"where": [1, 2]}}


def test_bad_priority_is_refused():
    _, f = make_factory()
    with pytest.raises(ValueError):
        f.make("x", priority=0)


def test_ids_are_uuid7_unique_and_time_ordered_even_if_the_clock_steps_back(monkeypatch):
    ids = [new_id() for _ in range(5000)]
    now = [2_000_000_000_000_000_000]
    monkeypatch.setattr(envelope.time, "time_ns", lambda: now[0])
    ids += [new_id() for _ in range(10)]
    now[0] -= 3600 * 10**9  # NTP steps the wall clock back an hour
    ids += [new_id() for _ in range(10)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(uuid.UUID(i).version == 7 for i in ids)


def test_boot_id_and_sync_state_come_from_the_kernel():
    assert re.fullmatch(r"[0-9a-f-]{36}", events.read_boot_id())
    assert isinstance(events.kernel_clock_synced(), bool)


def test_manual_clock_moves_only_when_told():
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    clock.advance(90)
    assert clock.monotonic() == 90 and clock.now() == datetime(2026, 1, 1, 0, 1, 30, tzinfo=timezone.utc)
    clock.set_wall(clock.now() - timedelta(hours=1))
    assert clock.monotonic() == 90
    with pytest.raises(ValueError):
        clock.advance(-1)
