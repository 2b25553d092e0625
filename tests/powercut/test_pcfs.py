"""pcfs itself: it keeps what was fsynced, forgets what was not, and SQLite runs on it.

A file system that never forgot anything would make the power-cut test pass whatever the store
does; these tests show that it forgets exactly the un-synced part.
"""

from __future__ import annotations

import errno
import os
import sqlite3

import pytest

from tests.powercut.harness import Mount

pytestmark = pytest.mark.usefixtures("fuse_ok")


@pytest.fixture
def disk(tmp_path):
    """mount() -> Mount over tmp_path/disk; every mount is unmounted at the end."""
    mounts = []

    def mount(**kw):
        m = Mount(tmp_path / "disk", tmp_path / "mnt", tmp_path / "pcfs.sock", **kw)
        mounts.append(m)
        return m

    yield mount
    for m in mounts:
        m.unmount()


def reboot(disk, m, **kw):
    m.cut()
    m.unmount()
    return disk(**kw)


def test_fsynced_bytes_survive_a_cut_and_unsynced_ones_do_not(disk, tmp_path):
    m = disk()
    f = tmp_path / "mnt" / "f"
    fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"A" * 5000)
    os.fsync(fd)
    os.pwrite(fd, b"B" * 10, 4090)      # across a page boundary
    os.write(fd, b"C" * 3000)           # grows the file
    assert os.pread(fd, 20, 4085) == b"AAAAA" + b"B" * 10 + b"AAAAA", "reads see the overlay"
    assert os.fstat(fd).st_size == 8000
    os.close(fd)
    m = reboot(disk, m)
    assert f.read_bytes() == b"A" * 5000


def test_a_truncate_is_undone_by_a_cut_unless_synced(disk, tmp_path):
    m = disk()
    f = tmp_path / "mnt" / "f"
    fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"x" * 9000)
    os.fsync(fd)
    os.ftruncate(fd, 100)
    os.ftruncate(fd, 6000)              # the bytes past 100 read as zeros now
    assert os.pread(fd, 10, 4096) == bytes(10)
    os.close(fd)
    m = reboot(disk, m)
    assert f.read_bytes() == b"x" * 9000
    fd = os.open(f, os.O_RDWR)
    os.ftruncate(fd, 100)
    os.ftruncate(fd, 6000)
    os.fdatasync(fd)
    os.close(fd)
    m = reboot(disk, m)
    assert f.read_bytes() == b"x" * 100 + bytes(5900)


def test_a_torn_cut_keeps_some_unsynced_sectors_and_never_invents_bytes(disk, tmp_path):
    m = disk()
    f = tmp_path / "mnt" / "f"
    fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"a" * 16 * 4096)
    os.fsync(fd)
    os.pwrite(fd, b"b" * 16 * 4096, 0)
    os.close(fd)
    m.cut(tear_seed=7)
    m.unmount()
    m = disk()
    data = f.read_bytes()
    assert len(data) == 16 * 4096
    pages = [data[i:i + 4096] for i in range(0, len(data), 4096)]
    for page in pages:  # each page: some 512-byte sectors of the new data, then the old
        new = len(page) - len(page.lstrip(b"b"))
        assert new % 512 == 0 and page[new:] == b"a" * (4096 - new)
    assert b"a" * 4096 in pages and b"b" * 4096 in pages, "some pages made it, some did not"


def test_after_the_cut_the_disk_is_frozen(disk, tmp_path):
    m = disk()
    fd = os.open(tmp_path / "mnt" / "f", os.O_RDWR | os.O_CREAT, 0o644)
    m.cut()
    with pytest.raises(OSError) as e:
        os.write(fd, b"late")
        os.fsync(fd)
    assert e.value.errno == errno.EIO
    os.close(fd)


def test_a_lying_fsync_keeps_nothing(disk, tmp_path):
    m = disk(lie_fsync=True)
    f = tmp_path / "mnt" / "f"
    fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"promised")
    os.fsync(fd)
    os.close(fd)
    m = reboot(disk, m)
    assert f.read_bytes() == b""


def commit_rows(db, synchronous: str, n: int) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")   # normal locking: the -shm mmap must work
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA wal_autocheckpoint = 20")  # cuts also meet checkpoints
    conn.execute("CREATE TABLE IF NOT EXISTS t (i INTEGER)")
    for i in range(n):
        conn.execute("INSERT INTO t VALUES (?)", (i,))
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(1000)])
    conn.execute("COMMIT")
    return conn  # still open: the power goes while it is


@pytest.mark.parametrize("synchronous, kept", [("FULL", 1300), ("NORMAL", None)])
def test_sqlite_wal_keeps_its_commits_only_with_synchronous_full(disk, tmp_path, synchronous, kept):
    m = disk()
    db = tmp_path / "mnt" / "t.db"
    conn = commit_rows(db, synchronous, 300)
    stats = m.command("stats")
    m.cut()
    conn.close()  # on a frozen disk: nothing it does now reaches the backing directory
    m.unmount()
    m = disk()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        count = conn.execute("SELECT count(*) FROM t").fetchone()[0] if conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = 't'").fetchone()[0] else 0
    finally:
        conn.close()
    if kept is None:
        assert count < 1300, "NORMAL does not sync each commit: a cut must cost commits"
    else:
        assert count == kept
        assert stats["fdatasync -wal"] >= 301, "FULL syncs the WAL on every commit"
