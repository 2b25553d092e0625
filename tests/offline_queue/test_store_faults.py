"""The store under the faults of the field, on real SQLite files and real filesystems.

Damaged rows (bit rot that passes quick_check), permission problems (a process that really runs
as another user), transient I/O errors (a disk that is full when the hub starts), real corruption
(garbage over pages of the file) and a full disk (a small tmpfs mounted for the test).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pickle
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import pytest

from offline_queue.errors import StoreError
from offline_queue.store import (DAMAGED_REASON, Store, StoreAccessDenied, StoreFull,
                                 StoreUnavailable, read_status)
from tests.offline_queue import synckit

NOBODY_UID, NOGROUP_GID = 65534, 65534
IS_ROOT = os.geteuid() == 0
IN_CI = bool(os.environ.get("CI"))


def needs_root(what: str):
    """Root is needed to drop privileges or mount; CI runs as root, so there it never skips."""
    return pytest.mark.skipif(not IS_ROOT and not IN_CI, reason=f"{what} needs root (CI runs as root)")


def reset_events(store):
    return [d for d in store.take_batch(limit=10_000, max_bytes=10**9) if d["type"] == "store.reset"]


def raw(db_path, sql, args=()):
    """Another connection on the real file, as bit rot or a technician would touch it."""
    conn = sqlite3.connect(db_path)
    try:
        conn.execute(sql, args)
        conn.commit()
    finally:
        conn.close()


# --- 2. one damaged row never blocks the queue -----------------------------------------------

DAMAGE = {  # kind -> (SQL, args) applied to the row with seq 2
    "invalid JSON": ("UPDATE events SET body = ? WHERE seq = 2", ('{"id": "01J0", "type": "alert.rai',)),
    "invalid UTF-8": ("UPDATE events SET body = CAST(? AS TEXT) WHERE seq = 2", (b"\xff\xfe{\x80\x00",)),
    "bytes": ("UPDATE events SET body = ? WHERE seq = 2", (os.urandom(64),)),
    "not an envelope": ("UPDATE events SET body = ? WHERE seq = 2", ("[1, 2, 3]",)),
    "another event's body": ("UPDATE events SET body = (SELECT body FROM events WHERE seq = 1)"
                             " WHERE seq = 2", ()),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_row_is_set_aside_and_the_rest_flows(db_path, factory, make, kind):
    store = Store(db_path, make_event=factory.make)
    done = store.append([make(), make("alert.raised", 1, alert_id="a"), make(),
                         make("device.status", 2, device="belt", state="connected"), make()])
    raw(db_path, *DAMAGE[kind])
    # seq 2 is the alert: first in line, it used to stall every batch
    batch = store.take_batch()
    [report] = [d for d in batch if d["type"] == "store.damaged"]
    batch = [d for d in batch if d is not report]
    assert [d["seq"] for d in batch] == [4, 1, 3, 5]
    assert batch == [done[i].to_dict() for i in (3, 0, 2, 4)]
    [dead] = store.dead_letters()
    assert dead["seq"] == 2 and dead["id"] == done[1].id and dead["priority"] == 1
    assert dead["reason"] == DAMAGED_REASON
    assert store.depth() == {1: 0, 2: 2, 3: 3}   # the damaged row left; a store.damaged report came
    assert report["priority"] == 2 and report["seq"] == 6 and report["data"]["count"] == 1
    assert report["data"]["seqs"] == [2] and report["data"]["ids"] == [done[1].id]
    assert [d for d in store.take_batch() if d["type"] != "store.damaged"] == batch  # set aside once
    assert store.dead_letter_count() == 1
    status = read_status(db_path)
    assert status["damaged_count"] == 1 and status["dead_letter_count"] == 1
    store.close()


def test_re_appending_the_id_of_a_damaged_row_stores_the_good_copy(db_path, factory, make):
    store = Store(db_path, make_event=factory.make)
    alert = store.append([make("alert.raised", 1, alert_id="a")])[0]
    raw(db_path, "UPDATE events SET body = 'garbage' WHERE seq = 1")
    again = store.append([alert])[0]
    assert again.id == alert.id and again.seq > alert.seq
    assert [d["id"] for d in store.take_batch() if d["priority"] == 1] == [alert.id]
    assert store.dead_letters()[0]["reason"] == DAMAGED_REASON
    store.close()


def test_the_uploader_delivers_everything_around_a_damaged_row(tmp_path):
    """The real uploader against the reference receiver on 127.0.0.1."""
    clock = synckit.new_clock()
    factory = synckit.make_factory(clock)
    db = tmp_path / "state" / "events.db"

    async def main():
        with synckit.running_receiver(tmp_path, clock.now) as server:
            async with synckit.open_store(db, factory) as store:
                events = await synckit.commit_mix(store, factory, clock, n_vitals=8, n_alerts=2)
                alert = next(e for e in events if e.priority == 1)
                raw(db, "UPDATE events SET body = ? WHERE id = ?", (b"\x00\xffrot", alert.id))
                uploader = synckit.make_uploader(store, server, clock)
                await synckit.drain(uploader, clock)
                got = {e["id"] for e in server.events(synckit.HUB)}
                assert {e.id for e in events if e is not alert} <= got
                assert alert.id not in got
                report = [e for e in server.events(synckit.HUB) if e["type"] == "store.damaged"]
                assert report and report[0]["data"]["ids"] == [alert.id]
                assert await store.depth() == {1: 0, 2: 0, 3: 0}
                assert (await store.dead_letters())[0]["reason"] == DAMAGED_REASON

    asyncio.run(main())


def test_carehub_status_counts_damaged_rows(write_config, tmp_path, factory, make, capsys):
    from hub import cli
    config = write_config(minimal_config())
    db = tmp_path / "state" / "events.db"
    store = Store(db, make_event=factory.make)
    store.append([make("alert.raised", 1, alert_id="a"), make()])
    raw(db, "UPDATE events SET body = 'rot' WHERE seq = 1")
    store.take_batch()
    store.close()
    assert cli.main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "dead letters: 1 (1 damaged in store)" in out


def minimal_config() -> str:
    from tests.conftest import MINIMAL
    return MINIMAL


# --- 3. only real corruption moves a store aside ---------------------------------------------

def as_user(fn, uid=NOBODY_UID, gid=NOGROUP_GID):
    """Run ``fn()`` in a forked child that has really dropped to ``uid`` (chmod binds it, not root).

    Returns ``("ok", value)`` or ``("raised", type name, message, exit_code, traceback text)``.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no pytest machinery from here on, always os._exit
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            try:
                out = ("ok", fn())
            except BaseException as exc:
                out = ("raised", type(exc).__name__, str(exc), getattr(exc, "exit_code", None),
                       traceback.format_exc())
            os.write(w, pickle.dumps(out))
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return pickle.loads(data)


@pytest.fixture
def shared_dir():
    """A directory another user can reach (pytest's tmp_path is root-only)."""
    d = Path(tempfile.mkdtemp(prefix="carehub-perm-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def root_owned_store(state: Path, factory, make) -> list:
    """A state dir the service user owns, holding events.db left by a `sudo carehub run`."""
    state.mkdir()
    store = Store(state / "events.db", make_event=factory.make)
    alerts = store.append([make("alert.raised", 1, alert_id=f"a{i}") for i in range(3)])
    store.close()
    os.chown(state, NOBODY_UID, NOGROUP_GID)
    os.chmod(state / "events.db", 0o600)   # root's, unreadable to the service user
    return alerts


@needs_root("dropping to another user")
def test_a_store_the_service_user_cannot_open_is_not_set_aside(shared_dir, factory, make):
    state = shared_dir / "state"
    alerts = root_owned_store(state, factory, make)
    db = state / "events.db"
    result = as_user(lambda: Store(db, make_event=factory.make).close())
    assert result[0] == "raised", "the store was opened (a fresh one, with the alerts set aside?)"
    _, name, message, exit_code, _ = result
    assert name == StoreAccessDenied.__name__ and exit_code == 77
    assert str(db) in message and f"chown -R nobody: {state}" in message
    assert (state / "events.db").exists()
    assert not [p for p in state.iterdir() if ".corrupt-" in p.name]   # nothing moved aside
    store = Store(db, make_event=factory.make)   # as root: the alerts are all still there
    assert [d["id"] for d in store.take_batch()] == [a.id for a in alerts]
    store.close()


@needs_root("dropping to another user")
def test_carehub_run_as_the_wrong_user_exits_77_naming_the_file_and_the_fix(shared_dir, factory, make):
    from hub import app, cli, config, notify  # noqa: F401  imported before dropping privileges
    import drivers.belt.link  # noqa: F401
    import offline_queue.uploader  # noqa: F401
    state = shared_dir / "state"
    root_owned_store(state, factory, make)
    cfg = shared_dir / "config.toml"
    cfg.write_text(minimal_config().replace("{state_dir}", str(state)))
    os.chmod(cfg, 0o644)
    err = shared_dir / "stderr.txt"

    def run():
        fd = os.open(err, os.O_WRONLY | os.O_CREAT, 0o644)
        os.dup2(fd, 2)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        try:
            return cli.main(["run", "--config", str(cfg)])
        finally:
            sys.stderr.flush()

    os.chown(shared_dir, NOBODY_UID, NOGROUP_GID)
    result = as_user(run)
    text = err.read_text()
    assert result == ("ok", 77), (result, text)
    assert "Traceback" not in text
    assert str(state / "events.db") in text and f"chown -R nobody: {state}" in text
    assert not [p for p in state.iterdir() if ".corrupt-" in p.name]


@pytest.fixture
def small_fs():
    """A 2 MiB tmpfs mounted for the test: a disk that really fills."""
    d = Path(tempfile.mkdtemp(prefix="carehub-fs-"))
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(d)],
                       check=True, capture_output=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        os.rmdir(d)
        if IN_CI:
            raise
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    yield d
    if subprocess.run(["umount", str(d)], check=False).returncode != 0:
        subprocess.run(["umount", "-l", str(d)], check=False)
    shutil.rmtree(d, ignore_errors=True)


def fill(fs: Path) -> Path:
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


@needs_root("mounting a tmpfs")
def test_a_disk_full_at_start_is_retried_not_taken_for_corruption(small_fs, factory, make):
    db = small_fs / "state" / "events.db"
    store = Store(db, make_event=factory.make, reserve_bytes=64 * 1024)
    alerts = store.append([make("alert.raised", 1, alert_id=f"a{i}") for i in range(3)])
    store.close()
    filler = fill(small_fs)      # SQLite cannot even size its -shm now: SQLITE_IOERR on open
    slept = []

    def sleep(seconds):          # the backoff; meanwhile logrotate frees the disk
        slept.append(seconds)
        if len(slept) == 2:
            filler.unlink()

    store = Store(db, make_event=factory.make, sleep=sleep, reserve_bytes=64 * 1024)
    assert len(slept) == 2 and slept[1] > slept[0] > 0
    assert store.reset_report is None
    assert [d["id"] for d in store.take_batch()] == [a.id for a in alerts]
    assert not [p for p in db.parent.iterdir() if ".corrupt-" in p.name]
    store.close()


@needs_root("mounting a tmpfs")
def test_a_lasting_io_error_at_start_fails_with_exit_74_and_keeps_the_file(small_fs, factory, make):
    db = small_fs / "state" / "events.db"
    store = Store(db, make_event=factory.make, reserve_bytes=64 * 1024)
    alerts = store.append([make("alert.raised", 1, alert_id="a")])
    store.close()
    filler = fill(small_fs)
    slept = []
    with pytest.raises(StoreUnavailable) as info:
        Store(db, make_event=factory.make, sleep=slept.append)
    assert info.value.exit_code == 74 and str(db) in str(info.value)
    assert len(slept) >= 3
    assert not [p for p in db.parent.iterdir() if ".corrupt-" in p.name]
    filler.unlink()
    store = Store(db, make_event=factory.make, reserve_bytes=64 * 1024)
    assert [d["id"] for d in store.take_batch()] == [alerts[0].id]
    store.close()


def build_store(db_path, factory, make, n=240):
    store = Store(db_path, make_event=factory.make)
    events = []
    for i in range(0, n, 8):
        events += store.append([make("alert.raised" if (i + j) % 7 == 0 else "vitals.minute",
                                     1 if (i + j) % 7 == 0 else 3, n=i + j, pad="p" * 200)
                                for j in range(8)])
    return store, events


def test_garbage_over_pages_sets_the_file_aside_and_salvages_every_readable_event(db_path, factory, make):
    store, events = build_store(db_path, factory, make)
    delivered = events[-10:]
    store.forget([e.id for e in delivered])      # the newest are delivered: only seq keeps their mark
    store.close()
    pages = db_path.stat().st_size // 4096
    rng = random.Random(9)
    with open(db_path, "r+b") as f:            # garbage over three pages in the middle
        for page in (pages // 3, pages // 2, pages // 2 + 1):
            f.seek(page * 4096)
            f.write(bytes(rng.randrange(256) for _ in range(4096)))
    damaged_copy = hashlib.sha256(db_path.read_bytes()).hexdigest()

    store = Store(db_path, make_event=factory.make)
    report = store.reset_report
    assert report is not None and report.type == "store.reset"
    data = report.data
    queued = {e.id: e for e in events[:-10]}
    salvaged = [d for d in store.take_batch(limit=10_000, max_bytes=10**9) if d["id"] in queued]
    assert data["salvaged"] == len(salvaged) > len(queued) // 2
    assert data["salvaged"] + data["lost"] == len(queued)
    for d in salvaged:                          # same ids (the server de-duplicates), same seq
        assert d == queued[d["id"]].to_dict()
    assert report.seq > events[-1].seq          # seq never goes back, not even over delivered ones
    assert store.append([make()])[0].seq == report.seq + 1
    moved = Path(data["moved_to"])
    assert hashlib.sha256(moved.read_bytes()).hexdigest() == damaged_copy   # evidence kept as found
    store.close()


@pytest.mark.parametrize("how", ["garbage", "deleted"])
def test_seq_never_restarts_when_the_old_file_is_unreadable(db_path, factory, make, how):
    store = Store(db_path, make_event=factory.make)
    done = []
    for _ in range(30):
        done += store.append([make()])
    store.forget([e.id for e in done])
    store.close()
    if how == "garbage":
        db_path.write_bytes(os.urandom(db_path.stat().st_size))
    else:
        for p in db_path.parent.glob(db_path.name + "*"):
            if p.name in (db_path.name, db_path.name + "-wal", db_path.name + "-shm"):
                p.unlink()
    store = Store(db_path, make_event=factory.make)
    first = store.append([make()])[0]
    assert first.seq > done[-1].seq
    if how == "garbage":
        assert store.reset_report.seq > done[-1].seq and first.seq > store.reset_report.seq
        assert store.reset_report.data["salvaged"] == 0
    store.close()


# --- 7. a full disk loses nothing that matters -----------------------------------------------

def footprint(db_path) -> int:
    return sum(p.stat().st_size for p in (db_path, Path(str(db_path) + "-wal")) if p.exists())


def test_the_wal_is_counted_in_the_quota(db_path, factory, make):
    quota = 512 * 1024
    store = Store(db_path, make_event=factory.make, quota_bytes=quota)
    biggest = 0
    for i in range(150):
        store.append([make(pad="w" * 400) for _ in range(10)])
        biggest = max(biggest, footprint(db_path))
        assert store.used_bytes() <= quota
    assert biggest <= quota, f"database + WAL reached {biggest} bytes on a {quota}-byte quota"
    assert store.depth()[2] >= 1            # it evicted, and said so
    store.close()


@needs_root("mounting a tmpfs")
def test_a_full_disk_drops_priority_3_first_and_keeps_a_reserve_for_alerts(small_fs, factory, make):
    db = small_fs / "state" / "events.db"
    reserve = 384 * 1024
    store = Store(db, make_event=factory.make, reserve_bytes=reserve)   # quota 64 MiB: not the limit
    reports = []
    store.add_commit_listener(lambda evs: reports.extend(e for e in evs if e.type == "store.evicted"))
    vitals = []
    lowest_free = 2**40
    for _ in range(250):                      # ~2.5 MB of vitals onto a 2 MiB disk
        vitals += store.append([make(pad="v" * 700) for _ in range(10)])
        st = os.statvfs(small_fs)
        lowest_free = min(lowest_free, st.f_bavail * st.f_frsize)
    assert reports, "nothing was evicted"
    assert lowest_free >= reserve // 2, f"priority 3 ate into the reserve: {lowest_free} bytes free"
    kept = {d["id"] for d in store.take_batch(limit=100_000, max_bytes=10**9)}
    evicted = sum(r.data["count"] for r in reports)
    dropped = sum(r.data.get("dropped", 0) for r in reports)
    assert len([v for v in vitals if v.id in kept]) + evicted + dropped == len(vitals)
    # alerts still go in, into the reserve
    alerts = [store.append([make("alert.raised", 1, alert_id=f"a{i}", pad="a" * 400)])[0]
              for i in range(20)]
    assert all(a.seq for a in alerts)
    assert read_status(db)["state"]["store.over_quota"] is not None
    store.close()


@needs_root("mounting a tmpfs")
def test_when_not_even_an_alert_fits_the_store_raises_store_full_and_recovers(small_fs, factory, make):
    db = small_fs / "state" / "events.db"
    store = Store(db, make_event=factory.make, reserve_bytes=256 * 1024)
    alerts = []
    with pytest.raises(StoreFull) as info:
        for i in range(10_000):
            alerts += store.append([make("alert.raised", 1, alert_id=f"a{i}-{j}", pad="A" * 600)
                                    for j in range(5)])
    assert isinstance(info.value, StoreError) and info.value.retryable
    assert len(alerts) > 100
    # nothing committed was harmed, and the store works as soon as there is room again
    assert store.depth()[1] >= len(alerts)
    ids = {d["id"] for d in store.take_batch(limit=100_000, max_bytes=10**9)}
    assert {a.id for a in alerts} <= ids
    store.forget([a.id for a in alerts[: len(alerts) // 2]])
    late = store.append([make("alert.raised", 1, alert_id="late")])[0]
    assert late.seq > alerts[-1].seq
    store.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()
