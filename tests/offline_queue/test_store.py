"""Store on real SQLite files: seq, order, delivery, dead letters, state, quota, corruption."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from hub.errors import StoreError
from offline_queue import migrations
from offline_queue.store import Store, read_status

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(db_path, factory):
    s = Store(db_path, make_event=factory.make)
    yield s
    s.close()


def seqs(store, limit=10_000):
    return [e["seq"] for e in store.take_batch(limit=limit, max_bytes=10**9)]


# --- seq -----------------------------------------------------------------------------------

def test_append_assigns_increasing_gapless_seq_and_stores_the_envelope_with_it(store, make):
    events = [make(), make("alert.raised", 1, alert_id="a1"), make()]
    done = store.append(events)
    assert [e.seq for e in done] == [1, 2, 3]
    assert [e.id for e in done] == [e.id for e in events]
    stored = {d["id"]: d for d in store.take_batch()}
    for event in done:
        assert stored[event.id] == event.to_dict()
    assert store.last_seq() == 3


def test_seq_survives_forget_reopen_and_is_never_reused_after_the_queue_empties(db_path, factory, make):
    store = Store(db_path, make_event=factory.make)
    first = store.append([make() for _ in range(5)])
    assert store.forget([e.id for e in first]) == 5
    assert store.depth() == {1: 0, 2: 0, 3: 0}
    store.close()

    store = Store(db_path, make_event=factory.make)
    assert store.last_seq() == 5
    second = store.append([make(), make()])
    assert [e.seq for e in second] == [6, 7]
    store.forget([e.id for e in second])
    third = store.append([make()])
    assert third[0].seq == 8
    store.close()


def test_append_is_idempotent_on_id(store, make):
    a, b = make(), make()
    first = store.append([a, b])
    again = store.append([b, a, a])
    assert [e.seq for e in again] == [first[1].seq, first[0].seq, first[0].seq]
    assert store.depth()[3] == 2
    assert store.last_seq() == 2
    c = store.append([make()])[0]
    assert c.seq == 3


def test_a_failing_batch_stores_nothing(store, make, factory):
    good = [make(), make()]
    bad = factory.make("vitals.minute", {"reading": object()})
    with pytest.raises(StoreError, match="not JSON-serialisable"):
        store.append(good + [bad])
    assert store.depth() == {1: 0, 2: 0, 3: 0}
    assert store.last_seq() == 0
    assert store.append([make()])[0].seq == 1


# --- reading in order ------------------------------------------------------------------------

def test_take_batch_orders_by_priority_then_seq(store, make):
    kinds = [3, 1, 2, 3, 1, 3, 2]
    done = store.append([make("x.test", p) for p in kinds])
    batch = store.take_batch()
    expected = sorted(done, key=lambda e: (e.priority, e.seq))
    assert [d["id"] for d in batch] == [e.id for e in expected]
    assert [d["id"] for d in store.take_batch(limit=3)] == [e.id for e in expected[:3]]


def test_take_batch_stops_before_max_bytes(store, make):
    done = store.append([make() for _ in range(9)])
    size = len(done[0].to_json().encode())
    assert all(len(e.to_json().encode()) == size for e in done)
    batch = store.take_batch(max_bytes=3 * (size + 1) + size // 2)
    assert [d["seq"] for d in batch] == [1, 2, 3]
    assert len(json.dumps(batch, separators=(",", ":")).encode()) <= 3 * (size + 1) + size // 2


def test_take_batch_returns_one_oversized_event_alone(store, make):
    store.append([make(blob="x" * 5000), make()])
    assert [d["seq"] for d in store.take_batch(max_bytes=1000)] == [1]


# --- delivery and rejection ---------------------------------------------------------------

def test_forget_deletes_only_the_given_ids(store, make):
    done = store.append([make() for _ in range(6)])
    assert store.forget([done[1].id, done[3].id, "no-such-id"]) == 2
    assert seqs(store) == [1, 3, 5, 6]
    assert store.forget([]) == 0


def test_dead_letter_moves_events_aside_with_reason(store, make):
    done = store.append([make(), make("alert.raised", 1, alert_id="a"), make()])
    moved = store.dead_letter([(done[0].id, "schema: hr_bpm missing"), (done[1].id, "unknown rule"),
                               ("no-such-id", "x")])
    assert moved == 2
    assert seqs(store) == [3]
    assert store.dead_letter_count() == 2
    dead = store.dead_letters()
    assert [d["seq"] for d in dead] == [2, 1]
    assert dead[0]["reason"] == "unknown rule"
    assert dead[0]["event"] == done[1].to_dict()
    assert dead[1]["type"] == "vitals.minute"


def test_recent_keeps_the_last_events_after_delivery(store, make):
    done = store.append([make("bed.entered", 3) for _ in range(25)])
    store.forget([e.id for e in done])
    recent = store.recent()
    assert [r["seq"] for r in recent] == list(range(25, 5, -1))
    assert recent[0] == {"seq": 25, "type": "bed.entered", "priority": 3,
                         "occurred_at": done[-1].occurred_at}
    assert len(store.recent(limit=5)) == 5


# --- state ---------------------------------------------------------------------------------

def test_state_round_trips_across_reopen(db_path, factory):
    store = Store(db_path, make_event=factory.make)
    store.put_state("rules", {"night_bed_exit": {"active": "a1", "since_s": 12.5}})
    store.put_state("sync.next_attempt_at", 1234.5)
    store.put_state("sync.next_attempt_at", 99)
    store.put_state("gone", [1])
    store.delete_state("gone")
    with pytest.raises(StoreError, match="not JSON-serialisable"):
        store.put_state("bad", object())
    store.close()

    store = Store(db_path, make_event=factory.make)
    assert store.get_state("rules") == {"night_bed_exit": {"active": "a1", "since_s": 12.5}}
    assert store.get_state("sync.next_attempt_at") == 99
    assert store.get_state("gone") is None
    assert store.get_state("bad", "default") == "default"
    store.close()


def test_append_can_write_state_in_the_same_transaction(store, make):
    event = store.append([make("alert.raised", 1, alert_id="a")], state={"rules": {"open": ["a"]}})[0]
    assert store.get_state("rules") == {"open": ["a"]}
    assert event.seq == 1


# --- quota -----------------------------------------------------------------------------------

def test_quota_evicts_only_the_oldest_priority_3_and_reports_the_range(db_path, factory, make):
    quota = 256 * 1024
    store = Store(db_path, make_event=factory.make, quota_bytes=quota)
    reports = []
    store.add_commit_listener(lambda evs: reports.extend(e for e in evs if e.type == "store.evicted"))
    appended = []
    pattern = [3, 3, 3, 1, 3, 2, 3, 3]
    for i in range(160):
        batch = [make("x.test", pattern[(i * 5 + j) % len(pattern)], pad="v" * 300) for j in range(5)]
        appended += store.append(batch)
    assert reports, "the store never went over its quota"
    assert store.used_bytes() <= quota

    remaining = {d["seq"]: d for d in store.take_batch(limit=10_000, max_bytes=10**9)}
    p3 = [e.seq for e in appended if e.priority == 3]
    evicted = [s for s in p3 if s not in remaining]
    # only whole prefixes of the oldest priority-3 events are gone; every alert is kept
    assert evicted == p3[: len(evicted)]
    assert all(e.seq in remaining for e in appended if e.priority in (1, 2))
    assert sum(r.data["count"] for r in reports) == len(evicted)
    assert reports[0].data["first_seq"] == evicted[0]
    assert reports[-1].data["last_seq"] == evicted[-1]
    assert all(r.data["bytes_freed"] > 0 for r in reports)
    for r in reports:
        assert r.priority == 2 and r.seq in remaining
    # seq strictly increasing over everything committed, reports included
    all_seqs = sorted([e.seq for e in appended] + [r.seq for r in reports])
    assert all_seqs == list(range(1, len(all_seqs) + 1))
    store.close()


def test_over_quota_with_only_alerts_keeps_them_and_says_so(db_path, factory, make):
    store = Store(db_path, make_event=factory.make, quota_bytes=64 * 1024)
    done = []
    for _ in range(40):
        done += store.append([make("alert.raised", 1, pad="a" * 400) for _ in range(5)])
    assert store.depth()[1] == 200
    assert store.used_bytes() > 64 * 1024
    assert store.get_state("store.over_quota")["quota_bytes"] == 64 * 1024
    assert read_status(db_path)["state"]["store.over_quota"] is not None
    store.forget([e.id for e in done])
    store.append([make()])
    assert store.get_state("store.over_quota") is None
    store.close()


# --- corruption -------------------------------------------------------------------------------

def reset_events(store):
    return [d for d in store.take_batch() if d["type"] == "store.reset"]


def test_a_garbage_file_is_moved_aside_and_a_fresh_store_reports_it(db_path, factory, make):
    db_path.parent.mkdir(parents=True)
    garbage = b"this is not sqlite at all\n" * 400
    db_path.write_bytes(garbage)
    Path(str(db_path) + "-wal").write_bytes(b"junk wal")
    store = Store(db_path, make_event=factory.make)
    [reset] = reset_events(store)
    assert reset["priority"] == 2 and reset["seq"] == 1
    moved = Path(reset["data"]["moved_to"])
    assert moved.read_bytes() == garbage
    # SQLite itself discards a -wal that belongs to no database; nothing of it is left in place
    assert b"junk wal" not in Path(str(db_path) + "-wal").read_bytes()
    assert "not a database" in reset["data"]["reason"]
    assert store.append([make()])[0].seq == 2
    store.close()
    again = Store(db_path, make_event=factory.make)   # healthy now: no second reset
    assert len(reset_events(again)) == 1
    again.close()


def test_a_truncated_database_is_moved_aside(db_path, factory, make):
    store = Store(db_path, make_event=factory.make)
    for _ in range(20):
        store.append([make(pad="p" * 300) for _ in range(20)])
    store.close()
    size = db_path.stat().st_size
    with open(db_path, "r+b") as f:
        f.truncate(size // 2)
    store = Store(db_path, make_event=factory.make)
    [reset] = reset_events(store)
    assert Path(reset["data"]["moved_to"]).stat().st_size == size // 2
    assert store.depth() == {1: 0, 2: 1, 3: 0}
    store.close()


def test_a_schema_from_newer_software_is_moved_aside_not_crash_looped(db_path, factory):
    Store(db_path, make_event=factory.make).close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {migrations.SCHEMA_VERSION + 1}")
    conn.close()
    store = Store(db_path, make_event=factory.make)
    [reset] = reset_events(store)
    assert "newer" in reset["data"]["reason"]
    store.close()


def test_schema_is_migrated_once(db_path, factory):
    Store(db_path, make_event=factory.make).close()
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == migrations.SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert indexes == {"events_by_priority", "sqlite_autoindex_events_1"}
    conn.close()
    Store(db_path, make_event=factory.make).close()


# --- threads and crashes ----------------------------------------------------------------------

def test_the_store_refuses_other_threads(store, make):
    store.append([make()])
    errors = []

    def other():
        try:
            store.depth()
        except StoreError as exc:
            errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join(5)
    assert errors and "thread" in str(errors[0])
    # and sqlite3's own guard is still on underneath
    raw = []
    t = threading.Thread(target=lambda: raw.append(_raw_use(store)))
    t.start()
    t.join(5)
    assert raw == ["refused"]


def _raw_use(store):
    try:
        store._conn.execute("SELECT 1")
    except sqlite3.ProgrammingError:
        return "refused"
    return "allowed"


WRITER = """
import sys
from datetime import datetime, timezone
from hub.clock import ManualClock
from hub.events import EventFactory
from offline_queue.store import Store
f = EventFactory("h", "r", ManualClock(datetime(2026, 1, 1, tzinfo=timezone.utc)), boot_id="b")
s = Store(sys.argv[1], make_event=f.make)
while True:
    s.append([f.make("vitals.minute", {"pad": "x" * 300}) for _ in range(50)])
    print("committed", flush=True)
"""


def test_a_killed_writer_never_leaves_a_partial_batch(db_path, factory):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db_path)], stdout=subprocess.PIPE,
                            env=env, text=True)
    try:
        for _ in range(5):
            assert proc.stdout.readline() == "committed\n"
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
    store = Store(db_path, make_event=factory.make)
    count = store.depth()[3]
    assert count >= 250 and count % 50 == 0
    assert seqs(store) == list(range(1, count + 1))
    assert not reset_events(store)
    store.close()


# --- read_status --------------------------------------------------------------------------------

def test_read_status_reads_beside_a_live_store(store, db_path, make):
    done = store.append([make(), make("alert.raised", 1, alert_id="a"), make()])
    store.dead_letter([(done[0].id, "bad")])
    store.put_state("sync.last_success", "2026-11-23T22:00:00.000Z")
    status = read_status(db_path)
    assert status["depth"] == {1: 1, 2: 0, 3: 1}
    assert status["last_seq"] == 3
    assert status["dead_letter_count"] == 1
    assert status["dead_letters"][0]["reason"] == "bad"
    assert [r["seq"] for r in status["recent"]] == [3, 2, 1]
    assert status["state"]["sync.last_success"] == "2026-11-23T22:00:00.000Z"
    # the writer is not blocked by the reader having looked
    assert store.append([make()])[0].seq == 4
    assert read_status(db_path)["last_seq"] == 4


def test_read_status_after_the_daemon_closed(db_path, factory, make):
    store = Store(db_path, make_event=factory.make)
    store.append([make()])
    store.close()
    assert read_status(db_path)["depth"][3] == 1


def test_read_status_of_a_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="no store at"):
        read_status(tmp_path / "nothing.db")
