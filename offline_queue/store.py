"""The durable event store: every event is committed here before anything else happens to it.

``Store`` is synchronous and belongs to the thread that opened it (sqlite3's
``check_same_thread`` stays on, and the store says so clearly if it is misused). ``AsyncStore`` is
the one bridge to asyncio: a single worker thread owns the ``Store``; the event loop never waits
on SQLite. ``read_status`` is for ``carehub status`` in another process, read-only.

Durability: WAL with ``synchronous=FULL``, so a commit has been fsynced when it returns; each
call that writes is exactly one transaction, so a crash never leaves part of a batch.

Faults (docs/reliability.md, "Store"): a row whose body no longer parses is moved to the dead
letters ("damaged in store") and the queue flows on; only real corruption sets the file aside,
and then every readable event is salvaged into the fresh store; a permission problem raises
``StoreAccessDenied`` and a lasting transient error ``StoreUnavailable`` (both leave the file
alone); the quota counts the WAL, free space is checked with a reserve, priority 3 goes first,
and a priority-1/2 commit that cannot fit raises the retryable ``StoreFull``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import math
import os
import pwd
import grp
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from offline_queue.envelope import Event, format_utc, kernel_clock_synced, new_id, read_boot_id
from offline_queue.errors import StoreError
from offline_queue import migrations, salvage

LOGGER = logging.getLogger(__name__)

DEFAULT_QUOTA_BYTES = 64 * 2**20
# After an eviction the store is this fraction of its quota, so it does not evict on every append.
EVICT_TO_FRACTION = 0.9
# 4 KiB pages match the ext4 block and the kernel page: a smaller page saves nothing on the card.
PAGE_SIZE = 4096
# The WAL is checkpointed at its budget (an eighth of the quota, at most this: about SQLite's
# default 1000 pages) and cut back to that size afterwards, so the same file blocks are reused in
# place instead of the file growing and being reallocated; it counts towards the quota.
JOURNAL_SIZE_LIMIT = 4 * 2**20
# Free space the store leaves on its filesystem: priority 3 never uses it, priority 1-2 may
# (down to RESERVE_FLOOR_FRACTION of it), and deliveries and checkpoints always have room.
DEFAULT_RESERVE_BYTES = 16 * 2**20
RESERVE_FLOOR_FRACTION = 0.25
# Under disk pressure the WAL is checkpointed and truncated before a commit once it exceeds this
# (and after every commit).
WAL_PRESSURE_BYTES = 64 * 1024
# seq is reserved in blocks in a small file beside the store, written durably before a block is
# used: if the store is ever unreadable, the fresh one continues above it (spec: strictly increasing).
SEQ_RESERVE_BLOCK = 10_000
SEQ_FILE_SUFFIX = ".seq"
# Opening is retried for transient errors (busy, I/O error, no space) with these pauses (~30 s).
OPEN_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
DAMAGED_REASON = "damaged in store"

# Primary result codes: what an error on open means.
_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_CORRUPT, _SQLITE_FULL = 3, 8, 11, 13
_SQLITE_CANTOPEN, _SQLITE_AUTH, _SQLITE_NOTADB = 14, 23, 26
_CORRUPT = {_SQLITE_CORRUPT, _SQLITE_NOTADB}
_ACCESS = {_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_CANTOPEN, _SQLITE_AUTH}

OVER_QUOTA_KEY = "store.over_quota"  # a state key: set while the store is over its limit
STATUS_STATE_KEYS = ("sync.last_success", "sync.last_attempt", "sync.next_attempt_at",
                     "sync.last_error", OVER_QUOTA_KEY)

EX_IOERR = 74   # sysexits.h: StoreUnavailable
EX_NOPERM = 77  # sysexits.h: StoreAccessDenied


class StoreFull(StoreError):
    """No room for this priority-1/2 commit even after dropping priority 3; nothing was written.

    Retry it (the uploader frees space as it delivers); the store itself is healthy.
    """

    retryable = True


class StoreAccessDenied(StoreError):
    """The service user may not read and write the store's files: a setup fault, not damage."""

    exit_code = EX_NOPERM


class StoreUnavailable(StoreError):
    """Opening kept failing for a transient reason (locked, I/O error, no space); file untouched."""

    exit_code = EX_IOERR

MakeEvent = Callable[[str, Mapping, int], Event]
CommitListener = Callable[[list[Event]], None]


def _default_make_event() -> MakeEvent:
    """Without the hub's factory (tools, tests): envelopes stamped with this boot's facts."""
    boot_id = read_boot_id()

    def make(type_: str, data: Mapping, priority: int) -> Event:
        return Event(id=new_id(), type=type_, priority=priority,
                     occurred_at=format_utc(datetime.now(timezone.utc)),
                     clock_synced=kernel_clock_synced(), boot_id=boot_id,
                     uptime_s=round(time.clock_gettime(time.CLOCK_BOOTTIME), 3),
                     hub_id="unknown", resident_id="unknown", data=data or {})
    return make


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: no implicit BEGIN; every transaction here is explicit.
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=True, timeout=5.0)
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def _parse_body(body: Any, seq: int, id_: str) -> tuple[dict | None, str | None]:
    """The stored envelope, or why it is damaged (bit rot that passed quick_check)."""
    try:
        if isinstance(body, (bytes, bytearray, memoryview)):
            body = bytes(body).decode("utf-8")
        envelope = json.loads(body)
    except (TypeError, ValueError) as exc:
        return None, f"body does not parse ({type(exc).__name__})"
    if not isinstance(envelope, dict):
        return None, "body is not an event envelope"
    if envelope.get("id") != id_ or envelope.get("seq") != seq:
        return None, "body belongs to another event"
    return envelope, None


def _wal_bytes(path: Path) -> int:
    try:
        return os.stat(str(path) + "-wal").st_size
    except OSError:
        return 0


def _free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def _now_text() -> str:
    return format_utc(datetime.now(timezone.utc))


def _dead_row(row) -> dict:
    seq, id_, priority, type_, body, reason, dead_at = row
    event, _ = _parse_body(body, seq, id_)
    return {"seq": seq, "id": id_, "priority": priority, "type": type_, "reason": reason,
            "dead_at": dead_at, "event": event}


_DEAD_COLUMNS = "seq, id, priority, type, CAST(body AS BLOB), reason, dead_at"


def _recent_row(row) -> dict:
    seq, type_, priority, occurred_at = row
    return {"seq": seq, "type": type_, "priority": priority, "occurred_at": occurred_at}


def _depth(conn: sqlite3.Connection) -> dict[int, int]:
    depth = {1: 0, 2: 0, 3: 0}
    for priority, count in conn.execute(
            "SELECT priority, count(*) FROM events GROUP BY priority"):
        depth[priority] = count
    return depth


def _last_seq(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    return row[0] if row else 0


def _db_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of database pages in use (not on the free list)."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    return (pages - free) * size


def _used_bytes(conn: sqlite3.Connection, path: Path) -> int:
    """What the quota counts: pages in use plus the WAL file."""
    return _db_bytes(conn) + _wal_bytes(path)


def _get_state(conn: sqlite3.Connection, key: str, default: Any = None) -> Any:
    row = conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
    return default if row is None else json.loads(row[0])


class Store:
    """The event queue on one SQLite file; synchronous, one owning thread.

    ``make_event(type, data, priority) -> Event`` creates the events the store raises itself
    (``store.reset``, ``store.evicted``, ``store.damaged``); the daemon passes ``EventFactory.make``.
    ``reserve_bytes`` of the filesystem are left free for priority 1-2 and deliveries.
    Opening raises ``StoreAccessDenied`` or ``StoreUnavailable``, never moving a file for those;
    ``sleep`` is the pause between open attempts (injectable for tests).
    """

    def __init__(self, path: str | os.PathLike, *, quota_bytes: int = DEFAULT_QUOTA_BYTES,
                 make_event: MakeEvent | None = None, reserve_bytes: int = DEFAULT_RESERVE_BYTES,
                 open_retry_delays_s: Sequence[float] = OPEN_RETRY_DELAYS_S,
                 sleep: Callable[[float], Any] = time.sleep):
        self.path = Path(path)
        self.quota_bytes = int(quota_bytes)
        self.reserve_bytes = int(reserve_bytes)
        # The WAL is part of the quota: it is checkpointed at an eighth of it (at most SQLite's
        # usual ~4 MiB) and cut back to that size afterwards.
        self._wal_budget = max(4 * PAGE_SIZE, min(JOURNAL_SIZE_LIMIT, self.quota_bytes // 8))
        self._make_event = make_event or _default_make_event()
        self._owner = threading.get_ident()
        self._listeners: list[CommitListener] = []
        self._over_quota = False
        self._full = False
        self._dropped = 0            # priority-3 events not stored for lack of space, not yet reported
        self._evicted_unreported: list = [0, None, None]   # count, first_seq, last_seq
        self._conn: sqlite3.Connection | None = None
        self._seq_file = Path(str(self.path) + SEQ_FILE_SUFFIX)
        self._db_name, self._wal_name = str(self.path), str(self.path) + "-wal"
        self._dir_name = str(self.path.parent)
        self._space_now: tuple[int, int, int] = (2**62, 0, 0)   # free, footprint, wal: this append
        self._seq_reserved = 0
        self._seq_file_failed = False
        self.reset_report: Event | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except PermissionError as exc:
            raise StoreAccessDenied(self._access_message(self.path.parent, str(exc))) from exc
        except OSError as exc:
            raise StoreError(f"cannot create the state directory {self.path.parent}: {exc}") from exc
        self._seq_reserved = self._read_seq_file()
        existed = os.path.lexists(self.path)
        reset = self._open_with_retries(list(open_retry_delays_s), sleep)
        self._over_quota = bool(_get_state(self._conn, "store.over_quota"))
        if reset is not None:
            self.reset_report = self._append([self._make_event("store.reset", reset, 2)])[0]
        elif not existed and self._seq_reserved:
            # a new file where a store was before (deleted by hand): seq continues above it
            self._transaction(lambda conn: self._set_last_seq(conn, self._seq_reserved))

    # --- opening -----------------------------------------------------------------------------
    def _open_with_retries(self, delays: list[float], sleep) -> dict | None:
        """Open the store; returns the ``store.reset`` data if it had to be set aside.

        Only corruption sets a file aside. A permission problem raises ``StoreAccessDenied`` at
        once; anything else (busy, I/O error, no space) is retried, then ``StoreUnavailable``.
        """
        first = True
        while True:
            problem = self._access_problem()
            if problem is not None:
                raise StoreAccessDenied(self._access_message(*problem))
            try:
                self._conn = self._open()
                return None
            except migrations.SchemaTooNew as exc:
                return self._reset(str(exc))
            except sqlite3.Error as exc:
                code = _code(exc)
                if code in _CORRUPT:
                    return self._reset(str(exc) or type(exc).__name__)
                problem = self._access_problem()
                if problem is not None or code in (_SQLITE_PERM, _SQLITE_AUTH):
                    target, why = problem or (self.path, str(exc))
                    raise StoreAccessDenied(self._access_message(target, why)) from exc
                if not delays:
                    raise StoreUnavailable(
                        f"cannot open the store {self.path}: {exc} (kept trying; the file was "
                        f"left as it is — check the disk: free space, `dmesg` for I/O errors)") from exc
                if first:
                    LOGGER.warning("cannot open the store %s yet (%s); retrying", self.path, exc)
                    first = False
                sleep(delays.pop(0))

    def _access_problem(self) -> tuple[Path, str] | None:
        """The first store file (or its directory) this process may not read and write."""
        eff = os.access in os.supports_effective_ids
        directory = self.path.parent
        try:
            if os.statvfs(directory).f_flag & os.ST_RDONLY:
                return directory, "the filesystem is mounted read-only"
        except OSError as exc:
            return directory, str(exc)
        if not os.access(directory, os.W_OK | os.X_OK, effective_ids=eff):
            return directory, "the directory is not writable"
        for p in (self.path, Path(str(self.path) + "-wal"), Path(str(self.path) + "-shm")):
            if os.path.lexists(p) and not os.access(p, os.R_OK | os.W_OK, effective_ids=eff):
                return p, "not readable and writable"
        return None

    def _access_message(self, target: Path, why: str) -> str:
        uid = os.geteuid()
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
        owner = ""
        try:
            st = os.stat(target)
            try:
                owner = f"{pwd.getpwuid(st.st_uid).pw_name}:{grp.getgrgid(st.st_gid).gr_name}"
            except KeyError:
                owner = f"{st.st_uid}:{st.st_gid}"
            owner = f"; it belongs to {owner}, mode {st.st_mode & 0o7777:04o}"
        except OSError:
            pass
        return (f"cannot open the store {self.path}: permission denied on {target} ({why}) for user "
                f"{user}{owner}. Fix: chown -R {user}: {self.path.parent} (and run carehub as {user})")

    def _open(self) -> sqlite3.Connection:
        conn = _connect(self.path)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
            if rows != [("ok",)]:
                problems = "; ".join(r[0] for r in rows[:3])
                raise sqlite3.DatabaseError(f"quick_check failed: {problems}")
            if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
                conn.execute(f"PRAGMA page_size = {PAGE_SIZE:d}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"{self.path}: cannot use WAL (journal_mode is {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute(f"PRAGMA journal_size_limit = {self._wal_budget:d}")
            conn.execute(f"PRAGMA wal_autocheckpoint = {self._wal_budget // PAGE_SIZE:d}")
            migrations.migrate(conn)
        except sqlite3.DatabaseError as exc:
            if not hasattr(exc, "sqlite_errorcode"):
                exc.sqlite_errorcode = _SQLITE_CORRUPT  # our own quick_check verdict
            conn.close()
            raise
        except BaseException:
            conn.close()
            raise
        return conn

    def _reset(self, reason: str) -> dict:
        """Set the corrupt file aside, salvage what it still holds into a fresh store."""
        moved_to = self._move_aside()
        LOGGER.error("store %s is corrupt (%s); moved to %s, salvaging what is readable into a "
                     "fresh store", self.path, reason, moved_to)
        found = salvage.salvage(Path(moved_to))
        try:
            self._conn = self._open()
        except sqlite3.Error as again:
            raise StoreUnavailable(f"cannot create a fresh store at {self.path}: {again}") from again
        high_water = max(found.high_water, 0 if found.sequence_read else self._seq_reserved)
        kept, damaged = [], []
        for seq, id_, priority, type_, body in found.rows:
            envelope, problem = _parse_body(body, seq, id_)
            if problem is None and priority in (1, 2, 3):
                kept.append((seq, id_, priority, type_, body))
            else:
                damaged.append((seq, id_, priority, type_, body))
        now = _now_text()

        def work(conn):
            for seq, id_, priority, type_, body in kept:
                text = bytes(body).decode("utf-8")
                conn.execute("INSERT INTO events (seq, id, priority, type, size, body)"
                             " VALUES (?,?,?,?,?,?)", (seq, id_, priority, type_, len(body), text))
            for seq, id_, priority, type_, body in damaged:
                conn.execute("INSERT OR IGNORE INTO dead_letters (seq, id, priority, type, body,"
                             " reason, dead_at) VALUES (?,?,?,?,?,?,?)",
                             (seq, id_, priority or 0, type_ or "?", body, DAMAGED_REASON, now))
            for row in found.dead_letters:
                conn.execute("INSERT OR IGNORE INTO dead_letters (seq, id, priority, type, body,"
                             " reason, dead_at) VALUES (?,?,?,?,?,?,?)", row)
            for key, value in found.state.items():
                conn.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, value))
            self._set_last_seq(conn, high_water)

        self._transaction(work)
        lost = found.lost
        LOGGER.error("salvaged %d events from %s, %d lost%s; seq continues after %d",
                     len(kept), moved_to, lost, "" if found.complete else " (or more: parts were"
                     " unreadable)", high_water)
        return {"moved_to": moved_to, "reason": reason, "salvaged": len(kept), "lost": lost,
                "complete": found.complete, "resumed_after_seq": high_water}

    # --- seq high-water mark ---------------------------------------------------------------
    def _read_seq_file(self) -> int:
        try:
            return int(json.loads(self._seq_file.read_text())["reserved_through"])
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            LOGGER.warning("ignoring unreadable %s: %s", self._seq_file, exc)
            return 0

    def _reserve_seq(self, needed_through: int) -> None:
        """Durably note that seq up to a block beyond ``needed_through`` may be used."""
        if needed_through <= self._seq_reserved:
            return
        through = needed_through + SEQ_RESERVE_BLOCK
        tmp = self._seq_file.with_name(self._seq_file.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, json.dumps({"reserved_through": through}).encode() + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self._seq_file)
            dfd = os.open(self._seq_file.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            if not self._seq_file_failed:
                LOGGER.error("cannot write %s (%s): seq may repeat if this store is ever reset",
                             self._seq_file, exc)
            self._seq_file_failed = True
            return
        self._seq_file_failed = False
        self._seq_reserved = through

    @staticmethod
    def _set_last_seq(conn: sqlite3.Connection, seq: int) -> None:
        if seq > _last_seq(conn):
            if conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'events'",
                            (seq,)).rowcount == 0:
                conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)", (seq,))

    def _move_aside(self) -> str:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        try:
            os.replace(self.path, target)
            for suffix in ("-wal", "-shm"):
                side = Path(str(self.path) + suffix)
                if side.exists():
                    os.replace(side, Path(str(target) + suffix))
        except OSError as exc:
            raise StoreError(f"{self.path} is unusable and could not be moved aside: {exc}") from exc
        return str(target)

    # --- guards ------------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        if threading.get_ident() != self._owner:
            raise StoreError("the Store is used from a thread that did not open it; use AsyncStore")
        if self._conn is None:
            raise StoreError("the store is closed")
        return self._conn

    def add_commit_listener(self, listener: CommitListener) -> None:
        """``listener(events)`` runs in the owning thread after each transaction that committed events."""
        self._listeners.append(listener)

    def _transaction(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        conn = self._db()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        LOGGER.exception("rollback failed")
                raise
        except sqlite3.Error as exc:
            if _code(exc) == _SQLITE_FULL:
                raise StoreFull(f"store {self.path}: the disk is full ({exc}); nothing was "
                                "written, retry") from exc
            raise StoreError(f"store {self.path}: {exc}") from exc
        return result

    def _read(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        conn = self._db()
        try:
            return work(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: {exc}") from exc

    # --- space ---------------------------------------------------------------------------------
    def _space(self) -> tuple[int, int]:
        """(free bytes on the filesystem, bytes the store's files take on it); also remembers
        the WAL's size. One statvfs and two stats: measured once per append."""
        try:
            st = os.statvfs(self._dir_name)
            free = st.f_bavail * st.f_frsize
        except OSError:
            free = 2**62
        sizes = []
        for name in (self._db_name, self._wal_name):
            try:
                sizes.append(os.stat(name).st_size)
            except OSError:
                sizes.append(0)
        self._space_now = (free, sizes[0] + sizes[1], sizes[1])
        return free, sizes[0] + sizes[1]

    def _capacity(self, free: int, footprint: int) -> int:
        """What the store may use for priority 3: the quota, or what the disk has above the reserve."""
        return min(self.quota_bytes, footprint + free - self.reserve_bytes)

    def _under_pressure(self, free: int) -> bool:
        return free < self.reserve_bytes + self._wal_budget

    def _give_back_wal(self, above: int = WAL_PRESSURE_BYTES) -> None:
        """Fold the WAL into the database and truncate it, if larger than ``above`` (outside a
        transaction): under disk pressure, or when one big transaction grew it past its budget."""
        conn = self._db()
        try:
            if os.stat(self._wal_name).st_size <= above:
                return
        except OSError:
            return
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            LOGGER.debug("checkpoint under disk pressure failed: %s", exc)

    def _evict_for_space(self) -> int:
        """Evict the oldest priority-3 events to make room on a full disk (own transaction)."""
        def work(conn):
            rows = conn.execute("SELECT seq FROM events WHERE priority = 3 ORDER BY seq LIMIT 64").fetchall()
            if not rows:
                return 0
            conn.execute("DELETE FROM events WHERE priority = 3 AND seq <= ?", (rows[-1][0],))
            return rows[0][0], rows[-1][0], len(rows)
        try:
            done = self._transaction(work)
        except StoreError:
            return 0
        if not done:
            return 0
        first, last, count = done
        pending = self._evicted_unreported
        pending[0] += count
        pending[1] = first if pending[1] is None else pending[1]
        pending[2] = last
        return count

    # --- writing -----------------------------------------------------------------------------
    def append(self, events: Sequence[Event], *, state: Mapping[str, Any] | None = None) -> list[Event]:
        """Commit ``events`` (and optionally ``state`` keys) in one durable transaction.

        Returns each event with its ``seq``. An id already in the queue is not inserted again;
        its existing copy (with its original seq) is returned instead. On a full disk, priority-3
        events that do not fit are dropped (left out of the result, counted in the next
        ``store.evicted``); if the priority-1/2 events still do not fit, ``StoreFull`` is raised
        and nothing was written.
        """
        return self._append(list(events), state)

    def _need_bytes(self, events: list[Event]) -> int:
        """Disk bytes a commit of ``events`` may take: WAL frames, and database growth beyond
        the free pages (a generous estimate; it only matters on a nearly full disk)."""
        body = sum(len(e.to_json()) for e in events)
        pages = math.ceil(2 * body / PAGE_SIZE) + 8
        free_pages = self._read(lambda conn: conn.execute("PRAGMA freelist_count").fetchone()[0])
        # frames already in the WAL may extend the database when they are checkpointed
        pending = math.ceil(_wal_bytes(self.path) / PAGE_SIZE)
        return (pages + max(0, pages + pending - free_pages)) * PAGE_SIZE

    def _fits(self, events: list[Event], floor: int) -> bool:
        free, _ = self._space()
        return free - self._need_bytes(events) >= floor

    def _append(self, events: list[Event], state: Mapping[str, Any] | None = None) -> list[Event]:
        free, _ = self._space()
        pressure = self._under_pressure(free)
        if self._space_now[2] > self._wal_budget:     # e.g. after a big delivery
            self._give_back_wal(above=self._wal_budget)
            free, _ = self._space()
        dropped = 0
        if pressure:
            # Nearly full: priority 3 may not go below the reserve, priority 1-2 not below the
            # floor that keeps deliveries (deletes) and checkpoints possible.
            self._give_back_wal()
            floor = int(self.reserve_bytes * RESERVE_FLOOR_FRACTION)
            if any(e.priority == 3 for e in events) and not self._make_room(events, self.reserve_bytes):
                keep = [e for e in events if e.priority != 3]
                dropped, events = len(events) - len(keep), keep
            if events and not self._make_room(events, floor):
                self._report_full()
                raise StoreFull(f"store {self.path}: the disk is full ({self._space()[0]} bytes "
                                "free, the rest is kept for deliveries); nothing was written, retry")
        try:
            result = self._commit_or_drop(events, state, dropped)
        except StoreFull:
            self._report_full()
            raise
        if self._full:
            self._full = False
            LOGGER.warning("store %s: commits fit on the disk again", self.path)
        # The WAL never stays above its budget (it is part of the quota); on a nearly full
        # disk it is given back after every commit.
        self._give_back_wal(above=0 if pressure else self._wal_budget)
        return result

    def _make_room(self, events: list[Event], floor: int) -> bool:
        """Whether ``events`` fit above ``floor`` free bytes, after evicting old priority 3 if not."""
        if self._fits(events, floor):
            return True
        if self._evict_for_space():
            self._give_back_wal()
        return self._fits(events, floor)

    def _commit_or_drop(self, events: list[Event], state, dropped: int) -> list[Event]:
        """Commit; if the disk fills under us (another writer), make room and retry once, then
        once more without this batch's priority 3. ``dropped`` priority-3 events are counted
        in the ``store.evicted`` report of the transaction that commits."""
        attempts = [events, events]
        keep = [e for e in events if e.priority != 3]
        if len(keep) < len(events):
            attempts.append(keep)
        for n, batch in enumerate(attempts):
            lost = dropped + len(events) - len(batch)
            if not batch and state is None:
                self._count_dropped(lost)
                return []
            self._dropped += lost
            try:
                return self._append_once(batch, state)
            except StoreFull:
                self._dropped -= lost
                if n == len(attempts) - 1:
                    raise
                self._give_back_wal(above=0)
                if self._evict_for_space():
                    self._give_back_wal(above=0)
        raise AssertionError("unreachable")

    def _count_dropped(self, count: int) -> None:
        """Priority-3 events dropped with nothing else to commit: reported by the next commit."""
        if count and not self._dropped:
            LOGGER.warning("store %s: the disk is nearly full; dropping new priority-3 events "
                           "(counted in the next store.evicted)", self.path)
        self._dropped += count

    def _report_full(self) -> None:
        if not self._full:
            free, size = self._space()
            LOGGER.error("store %s: the disk is full (%d bytes free, store %d bytes); priority 1-2 "
                         "commits are refused until the uploader frees space", self.path, free, size)
        self._full = True

    def _append_once(self, events: list[Event], state: Mapping[str, Any] | None) -> list[Event]:
        committed: list[Event] = []
        free, footprint, wal = self._space_now

        def work(conn):
            next_seq = _last_seq(conn) + 1
            self._reserve_seq(next_seq + len(events) + 1)
            seen: dict[str, Event] = {}
            result = []
            for event in events:
                if event.id in seen:
                    result.append(seen[event.id])
                    continue
                row = conn.execute("SELECT seq, CAST(body AS BLOB) FROM events WHERE id = ?",
                                   (event.id,)).fetchone()
                envelope = None
                if row is not None:
                    envelope, problem = _parse_body(row[1], row[0], event.id)
                    if problem is not None:
                        committed.extend(self._set_aside(conn, [(row[0], problem)], next_seq))
                        next_seq += 1
                if envelope is not None:
                    done = Event.from_dict(envelope)
                else:
                    done = event.with_seq(next_seq)
                    next_seq += 1
                    try:
                        body = done.to_json()
                    except (TypeError, ValueError) as exc:
                        raise StoreError(f"event {done.type} {done.id} is not JSON-serialisable: "
                                         f"{exc}; nothing of this batch was stored") from exc
                    conn.execute(
                        "INSERT INTO events (seq, id, priority, type, size, body) VALUES (?,?,?,?,?,?)",
                        (done.seq, done.id, done.priority, done.type, len(body.encode()), body))
                    committed.append(done)
                seen[event.id] = done
                result.append(done)
            for key, value in (state or {}).items():
                self._put_state(conn, key, value)
            committed.extend(self._enforce_quota(conn, next_seq, free, footprint, wal))
            return result

        pending = list(self._evicted_unreported)
        try:
            result = self._transaction(work)
        except BaseException:
            self._evicted_unreported = pending   # the report was rolled back with the rest
            raise
        if any(e.type == "store.evicted" for e in committed):
            self._dropped = 0
        self._notify(committed)
        return result

    def _notify(self, committed: list[Event]) -> None:
        if not committed:
            return
        for listener in self._listeners:
            try:
                listener(committed)
            except Exception:
                LOGGER.exception("store commit listener %r failed", listener)

    def _insert_report(self, conn: sqlite3.Connection, type_: str, data: dict, seq: int) -> Event:
        report = self._make_event(type_, data, 2).with_seq(seq)
        body = report.to_json()
        conn.execute(
            "INSERT INTO events (seq, id, priority, type, size, body) VALUES (?,?,?,?,?,?)",
            (report.seq, report.id, report.priority, report.type, len(body.encode()), body))
        return report

    def _enforce_quota(self, conn: sqlite3.Connection, next_seq: int, free: int,
                       footprint: int, wal: int) -> list[Event]:
        """Evict the oldest priority-3 events until under ``EVICT_TO_FRACTION`` of the capacity.

        The capacity is the quota, or less when the disk has less room above the reserve; the
        WAL counts (at least its budget). Runs inside the appending transaction; returns the
        ``store.evicted`` report it committed. Priority 1 and 2 are never evicted: if only they
        remain, the store stays over its capacity (and says so).
        """
        capacity = self._capacity(free, footprint)
        wal = max(wal, self._wal_budget)
        in_use = _db_bytes(conn)
        used = in_use + wal
        pending = self._evicted_unreported
        if used <= capacity and not self._dropped and not pending[0]:
            if self._over_quota:
                self._over_quota = False
                conn.execute("DELETE FROM state WHERE key = 'store.over_quota'")
                LOGGER.warning("store is back under its quota (%d of %d bytes)", used, capacity)
            return []
        target = int(capacity * EVICT_TO_FRACTION)
        before = in_use
        count, first_seq, last_seq = pending
        while in_use + wal > target:
            rows_total = conn.execute("SELECT count(*) FROM events").fetchone()[0]
            per_row = in_use / max(rows_total, 1)
            want = max(1, math.ceil((in_use + wal - target) / per_row))
            rows = conn.execute(
                "SELECT seq FROM events WHERE priority = 3 ORDER BY seq LIMIT ?", (want,)).fetchall()
            if not rows:
                break
            conn.execute("DELETE FROM events WHERE priority = 3 AND seq <= ?", (rows[-1][0],))
            count += len(rows)
            first_seq = rows[0][0] if first_seq is None else first_seq
            last_seq = rows[-1][0]
            in_use = _db_bytes(conn)
        reports = []
        if count or self._dropped:
            self._evicted_unreported = [0, None, None]
            reason = "quota" if capacity >= self.quota_bytes else "disk"
            data = {"count": count, "first_seq": first_seq, "last_seq": last_seq,
                    "bytes_freed": before - in_use, "reason": reason, "dropped": self._dropped}
            LOGGER.warning("store over its %s: evicted %d priority-3 events (seq %s..%s, %d bytes)%s",
                           "quota" if reason == "quota" else "share of the disk", count, first_seq,
                           last_seq, before - in_use,
                           f", dropped {self._dropped} new ones" if self._dropped else "")
            reports.append(self._insert_report(conn, "store.evicted", data, next_seq))
            in_use = _db_bytes(conn)
        if in_use + wal > target and not self._over_quota:
            self._over_quota = True
            self._put_state(conn, "store.over_quota",
                            {"used_bytes": in_use + wal, "quota_bytes": self.quota_bytes,
                             "limit_bytes": capacity, "free_bytes": free, "since": _now_text()})
            LOGGER.error("store is over its %s (%d of %d bytes) with only priority 1-2 events "
                         "left; keeping them all", "quota" if capacity >= self.quota_bytes
                         else "share of the disk", in_use + wal, capacity)
        return reports

    def _set_aside(self, conn: sqlite3.Connection, damaged: list[tuple[int, str]],
                   next_seq: int) -> list[Event]:
        """Move damaged rows to the dead letters and commit one ``store.damaged`` report."""
        dead_at = _now_text()
        seqs, ids, priorities = [], [], []
        for seq, problem in damaged:
            row = conn.execute("SELECT id, priority FROM events WHERE seq = ?", (seq,)).fetchone()
            if row is None:
                continue
            conn.execute(
                "INSERT OR REPLACE INTO dead_letters (seq, id, priority, type, body, reason, dead_at)"
                " SELECT seq, id, priority, type, body, ?, ? FROM events WHERE seq = ?",
                (DAMAGED_REASON, dead_at, seq))
            conn.execute("DELETE FROM events WHERE seq = ?", (seq,))
            LOGGER.error("event seq %d (%s, priority %s) is damaged in the store: %s; moved to the "
                         "dead letters", seq, row[0], row[1], problem)
            seqs.append(seq)
            ids.append(row[0])
            priorities.append(row[1])
        if not seqs:
            return []
        return [self._insert_report(conn, "store.damaged",
                                    {"count": len(seqs), "seqs": seqs, "ids": ids,
                                     "priorities": priorities}, next_seq)]

    def forget(self, ids: Iterable[str]) -> int:
        """Delete delivered events in one statement; returns how many were deleted."""
        ids = list(ids)
        if not ids:
            return 0

        def work(conn):
            return conn.execute("DELETE FROM events WHERE id IN (SELECT value FROM json_each(?))",
                                (json.dumps(ids),)).rowcount
        try:
            return self._transaction(work)
        except StoreFull:
            pass
        # A full disk must not stop deliveries from freeing it: small deletes, each folded
        # back into the database so the WAL never needs more than a few pages.
        deleted = 0
        for start in range(0, len(ids), 2):
            self._give_back_wal(above=0)
            chunk = json.dumps(ids[start:start + 2])
            deleted += self._transaction(lambda conn: conn.execute(
                "DELETE FROM events WHERE id IN (SELECT value FROM json_each(?))", (chunk,)).rowcount)
        self._give_back_wal(above=0)
        return deleted

    def dead_letter(self, items: Iterable[tuple[str, str]]) -> int:
        """Move events the server rejected (``(id, reason)``) aside, in one transaction."""
        items = [(str(i), str(r)) for i, r in items]
        if not items:
            return 0
        dead_at = _now_text()

        def work(conn):
            moved = 0
            for event_id, reason in items:
                moved += conn.execute(
                    "INSERT OR IGNORE INTO dead_letters (seq, id, priority, type, body, reason, dead_at)"
                    " SELECT seq, id, priority, type, body, ?, ? FROM events WHERE id = ?",
                    (reason, dead_at, event_id)).rowcount
                conn.execute("DELETE FROM events WHERE id = ?", (event_id,))
            return moved

        return self._transaction(work)

    # --- reading -----------------------------------------------------------------------------
    def take_batch(self, limit: int = 500, max_bytes: int = 1_000_000) -> list[dict]:
        """The next envelopes to send: priority, then seq; at most ``limit`` and ``max_bytes``.

        The first event is always returned even when it alone exceeds ``max_bytes``, so one
        oversized event cannot stall the queue (the server's 413 then decides its fate). A row
        whose body no longer parses is moved to the dead letters ("damaged in store", reported
        by a ``store.damaged`` event) on the way, so it cannot stall the queue either.
        """
        def work(conn):
            batch, total, damaged = [], 0, []
            for seq, id_, body, size in conn.execute(
                    "SELECT seq, id, CAST(body AS BLOB), size FROM events ORDER BY priority, seq"
                    " LIMIT ?", (int(limit),)):
                envelope, problem = _parse_body(body, seq, id_)
                if problem is not None:
                    damaged.append((seq, problem))
                    continue
                total += size + 1
                if batch and total > max_bytes:
                    break
                batch.append(envelope)
            return batch, damaged

        while True:
            batch, damaged = self._read(work)
            if not damaged:
                return batch
            committed = self._transaction(
                lambda conn: self._set_aside(conn, damaged, _last_seq(conn) + 1))
            self._notify(committed)

    def depth(self) -> dict[int, int]:
        return self._read(_depth)

    def dead_letter_count(self) -> int:
        return self._read(lambda conn: conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0])

    def dead_letters(self, limit: int = 20) -> list[dict]:
        return self._read(lambda conn: [_dead_row(r) for r in conn.execute(
            f"SELECT {_DEAD_COLUMNS} FROM dead_letters ORDER BY seq DESC LIMIT ?", (int(limit),))])

    def recent(self, limit: int = 20) -> list[dict]:
        """The last committed events (newest first), kept after delivery."""
        return self._read(lambda conn: [_recent_row(r) for r in conn.execute(
            "SELECT seq, type, priority, occurred_at FROM recent ORDER BY seq DESC LIMIT ?",
            (int(limit),))])

    def last_seq(self) -> int:
        return self._read(_last_seq)

    def used_bytes(self) -> int:
        """Bytes the quota counts: database pages in use (not on the free list) plus the WAL."""
        return self._read(lambda conn: _used_bytes(conn, self.path))

    # --- state -------------------------------------------------------------------------------
    @staticmethod
    def _put_state(conn: sqlite3.Connection, key: str, value: Any) -> None:
        try:
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"state {key!r} is not JSON-serialisable: {exc}") from exc
        conn.execute("INSERT INTO state (key, value) VALUES (?, ?)"
                     " ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, text))

    def get_state(self, key: str, default: Any = None) -> Any:
        return self._read(lambda conn: _get_state(conn, key, default))

    def put_state(self, key: str, value: Any) -> None:
        self._transaction(lambda conn: self._put_state(conn, key, value))

    def delete_state(self, key: str) -> None:
        self._transaction(lambda conn: conn.execute("DELETE FROM state WHERE key = ?", (key,)))

    def close(self) -> None:
        if self._conn is not None:
            conn = self._db()
            self._conn = None
            conn.close()


class AsyncStore:
    """The asyncio face of the store: one dedicated thread owns the ``Store``.

    ``commit`` is durable when it returns. ``enqueue`` buffers priority-3 events (bulk vitals)
    and commits them as one transaction when ``batch_max`` are waiting, ``batch_interval_s``
    after the first one (loop time), or before any ``commit``/``flush``/``close``; this keeps
    seq in creation order and spares the SD card. ``now`` is the monotonic time source
    (default: the running loop's clock), injectable for tests.
    """

    MAX_BUFFER = 10_000  # if the disk keeps failing, the oldest buffered vitals go first

    def __init__(self, path: str | os.PathLike, *, quota_bytes: int = DEFAULT_QUOTA_BYTES,
                 make_event: MakeEvent | None = None, batch_interval_s: float = 60.0,
                 batch_max: int = 100, now: Callable[[], float] | None = None,
                 reserve_bytes: int = DEFAULT_RESERVE_BYTES):
        self.path = Path(path)
        self._quota_bytes = quota_bytes
        self._reserve_bytes = reserve_bytes
        self._make_event = make_event
        self.batch_interval_s = float(batch_interval_s)
        self.batch_max = int(batch_max)
        self._now_source = now
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._store: Store | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: list[Callable[[Event], Any]] = []
        self._buffer: list[Event] = []
        self._first_buffered_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._flush_failed = False
        self.thread_ident: int | None = None
        # Transactions that committed events (for status and tests), counted on the loop.
        self.committed_transactions = 0

    # --- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> "AsyncStore":
        self._loop = asyncio.get_running_loop()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="carehub-store")

        def opener():
            self.thread_ident = threading.get_ident()
            store = Store(self.path, quota_bytes=self._quota_bytes, make_event=self._make_event,
                          reserve_bytes=self._reserve_bytes)
            store.add_commit_listener(self._from_store_thread)
            return store

        try:
            self._store = await self._loop.run_in_executor(self._executor, opener)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        if self._store.reset_report is not None:
            self._committed([self._store.reset_report])
        return self

    async def close(self) -> None:
        """Commit anything buffered, then close the connection in its own thread."""
        if self._executor is None:
            return
        try:
            await self.flush()
        finally:
            self._cancel_timer()
            for task in list(self._tasks):
                task.cancel()
            store, self._store = self._store, None
            if store is not None:
                await self._loop.run_in_executor(self._executor, store.close)
            self._executor.shutdown(wait=True)
            self._executor = None

    async def __aenter__(self) -> "AsyncStore":
        return await self.open()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # --- plumbing ----------------------------------------------------------------------------
    def _now(self) -> float:
        return self._now_source() if self._now_source is not None else self._loop.time()

    async def _call(self, method: str, *args, **kwargs):
        if self._executor is None or self._store is None:
            raise StoreError("the store is not open")
        store = self._store
        return await self._loop.run_in_executor(
            self._executor, lambda: getattr(store, method)(*args, **kwargs))

    def _from_store_thread(self, events: list[Event]) -> None:
        self._loop.call_soon_threadsafe(self._committed, events)

    def _committed(self, events: list[Event]) -> None:
        self.committed_transactions += 1
        self._publish(events)

    def _publish(self, events: list[Event]) -> None:
        for event in events:
            for callback in list(self._subscribers):
                try:
                    callback(event)
                except Exception:
                    LOGGER.exception("store subscriber %r failed on %s", callback, event.type)

    def subscribe(self, callback: Callable[[Event], Any]) -> Callable[[], None]:
        """``callback(event)`` runs on the loop for every committed event; returns an unsubscribe."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    # --- writing -----------------------------------------------------------------------------
    def _take_buffer(self) -> list[Event]:
        batch, self._buffer = self._buffer, []
        self._first_buffered_at = None
        self._cancel_timer()
        return batch

    def _restore_buffer(self, batch: list[Event]) -> None:
        self._buffer = batch + self._buffer
        if len(self._buffer) > self.MAX_BUFFER:
            dropped = len(self._buffer) - self.MAX_BUFFER
            del self._buffer[:dropped]
            LOGGER.error("store buffer full while the disk fails: dropped the %d oldest "
                         "priority-3 events", dropped)
        if self._buffer and self._first_buffered_at is None:
            self._first_buffered_at = self._now()
            self._arm_timer()

    async def commit(self, event: Event, *, state: Mapping[str, Any] | None = None) -> Event:
        """Commit ``event`` durably (after anything buffered, in the same transaction).

        ``state`` keys, if given, are written in the same transaction (e.g. the rule engine's
        state with the alert it raised). Raises ``StoreFull`` (retryable, nothing written) when
        a priority-1/2 event does not fit on the disk; a priority-3 event dropped for lack of
        space comes back as it was, without a seq.
        """
        batch = self._take_buffer()
        try:
            done = await self._call("append", batch + [event], state=state)
        except BaseException:
            self._restore_buffer(batch)
            raise
        if done and done[-1].id == event.id:
            return done[-1]
        return event

    def enqueue(self, event: Event) -> None:
        """Buffer a priority-3 event; higher priorities are committed at once (not awaited)."""
        if self._executor is None:
            raise StoreError("the store is not open")
        self._buffer.append(event)
        if self._first_buffered_at is None:
            self._first_buffered_at = self._now()
            self._arm_timer()
        if (event.priority != 3 or len(self._buffer) >= self.batch_max
                or self._now() - self._first_buffered_at >= self.batch_interval_s):
            self._flush_soon()

    def _arm_timer(self) -> None:
        self._cancel_timer()
        remaining = self.batch_interval_s - (self._now() - self._first_buffered_at)
        self._timer = self._loop.call_later(max(0.0, remaining), self._timer_fired)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timer_fired(self) -> None:
        self._timer = None
        if not self._buffer:
            return
        if self._now() - self._first_buffered_at >= self.batch_interval_s:
            self._flush_soon()
        else:
            self._arm_timer()

    def _flush_soon(self) -> None:
        task = self._loop.create_task(self._background_flush())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _background_flush(self) -> None:
        try:
            await self.flush()
        except StoreError as exc:
            if not self._flush_failed:
                LOGGER.error("committing buffered events failed, will retry: %s", exc)
            self._flush_failed = True
        else:
            if self._flush_failed:
                LOGGER.warning("committing buffered events works again")
            self._flush_failed = False

    async def flush(self) -> list[Event]:
        """Commit everything buffered, in one transaction; returns when all earlier writes are done."""
        batch = self._take_buffer()
        if not batch:
            if self._executor is not None:
                # The worker runs jobs in order: an empty job is a barrier behind in-flight flushes.
                await self._loop.run_in_executor(self._executor, lambda: None)
            return []
        try:
            return await self._call("append", batch)
        except BaseException:
            self._restore_buffer(batch)
            raise

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    # --- the rest of the Store, off the loop ---------------------------------------------------
    async def take_batch(self, limit: int = 500, max_bytes: int = 1_000_000) -> list[dict]:
        return await self._call("take_batch", limit, max_bytes)

    async def forget(self, ids: Iterable[str]) -> int:
        return await self._call("forget", list(ids))

    async def dead_letter(self, items: Iterable[tuple[str, str]]) -> int:
        return await self._call("dead_letter", list(items))

    async def depth(self) -> dict[int, int]:
        return await self._call("depth")

    async def dead_letter_count(self) -> int:
        return await self._call("dead_letter_count")

    async def dead_letters(self, limit: int = 20) -> list[dict]:
        return await self._call("dead_letters", limit)

    async def recent(self, limit: int = 20) -> list[dict]:
        return await self._call("recent", limit)

    async def last_seq(self) -> int:
        return await self._call("last_seq")

    async def used_bytes(self) -> int:
        return await self._call("used_bytes")

    async def get_state(self, key: str, default: Any = None) -> Any:
        return await self._call("get_state", key, default)

    async def put_state(self, key: str, value: Any) -> None:
        await self._call("put_state", key, value)

    async def delete_state(self, key: str) -> None:
        await self._call("delete_state", key)


def read_status(path: str | os.PathLike, *, state_keys: Sequence[str] = STATUS_STATE_KEYS,
                limit: int = 10) -> dict:
    """What ``carehub status`` shows, read from another process without disturbing the daemon.

    Opens the file read-only (a WAL reader never blocks the writer) and reads in one short
    read transaction.
    """
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"no store at {path} (has `carehub run` started with this state_dir?)")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                               isolation_level=None, timeout=2.0)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the store {path} read-only: {exc}") from exc
    try:
        version = migrations.schema_version(conn)
        if version != migrations.SCHEMA_VERSION:
            raise StoreError(f"store {path} has schema v{version}, this software reads "
                             f"v{migrations.SCHEMA_VERSION}")
        conn.execute("BEGIN")
        try:
            status = {
                "path": str(path),
                "last_seq": _last_seq(conn),
                "depth": _depth(conn),
                "used_bytes": _used_bytes(conn, path),
                "free_bytes": _free_bytes(path.parent),
                "dead_letter_count": conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0],
                "damaged_count": conn.execute("SELECT count(*) FROM dead_letters WHERE reason = ?",
                                              (DAMAGED_REASON,)).fetchone()[0],
                "dead_letters": [_dead_row(r) for r in conn.execute(
                    f"SELECT {_DEAD_COLUMNS} FROM dead_letters ORDER BY seq DESC LIMIT ?", (limit,))],
                "recent": [_recent_row(r) for r in conn.execute(
                    "SELECT seq, type, priority, occurred_at FROM recent ORDER BY seq DESC LIMIT ?",
                    (limit,))],
                "state": {key: _get_state(conn, key) for key in state_keys},
            }
        finally:
            conn.execute("COMMIT")
        for dead in status["dead_letters"]:
            dead.pop("event")
        return status
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the store {path}: {exc}") from exc
    finally:
        conn.close()


def check_integrity(path: str | os.PathLike) -> list[str]:
    """``PRAGMA quick_check`` on a store, read-only, beside a running daemon; [] when healthy.

    For `carehub doctor`: the daemon runs the same check itself each time it opens the store.
    """
    try:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True,
                               isolation_level=None, timeout=5.0)
    except sqlite3.Error as exc:
        return [f"cannot open read-only: {exc}"]
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
        return [] if rows == [("ok",)] else [r[0] for r in rows]
    except sqlite3.Error as exc:
        return [str(exc)]
    finally:
        conn.close()
