"""The durable event store: every event is committed here before anything else happens to it.

``Store`` is synchronous and belongs to the thread that opened it (sqlite3's
``check_same_thread`` stays on, and the store says so clearly if it is misused). ``AsyncStore`` is
the one bridge to asyncio: a single worker thread owns the ``Store``; the event loop never waits
on SQLite. ``read_status`` is for ``carehub status`` in another process, read-only.

Durability: WAL with ``synchronous=FULL``, so a commit has been fsynced when it returns; each
call that writes is exactly one transaction, so a crash never leaves part of a batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import math
import os
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from offline_queue.envelope import Event, format_utc, kernel_clock_synced, new_id, read_boot_id
from offline_queue.errors import StoreError
from offline_queue import migrations

LOGGER = logging.getLogger(__name__)

DEFAULT_QUOTA_BYTES = 64 * 2**20
# After an eviction the store is this fraction of its quota, so it does not evict on every append.
EVICT_TO_FRACTION = 0.9
# 4 KiB pages match the ext4 block and the kernel page: a smaller page saves nothing on the card.
PAGE_SIZE = 4096
# The WAL is checkpointed at 1000 pages (SQLite's default) and cut back to this size afterwards,
# so the same file blocks are reused in place instead of the file growing and being reallocated.
JOURNAL_SIZE_LIMIT = 4 * 2**20
# Result codes that mean "this file is not a healthy database" (primary codes).
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 10, 11, 14, 26
_DAMAGED = {_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_CANTOPEN, _SQLITE_NOTADB}

STATUS_STATE_KEYS = ("sync.last_success", "sync.last_attempt", "sync.next_attempt_at",
                     "sync.last_error", "store.over_quota")

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


def _is_damage(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in _DAMAGED


def _now_text() -> str:
    return format_utc(datetime.now(timezone.utc))


def _dead_row(row) -> dict:
    seq, id_, priority, type_, body, reason, dead_at = row
    return {"seq": seq, "id": id_, "priority": priority, "type": type_, "reason": reason,
            "dead_at": dead_at, "event": json.loads(body)}


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


def _used_bytes(conn: sqlite3.Connection) -> int:
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    return (pages - free) * size


def _get_state(conn: sqlite3.Connection, key: str, default: Any = None) -> Any:
    row = conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
    return default if row is None else json.loads(row[0])


class Store:
    """The event queue on one SQLite file; synchronous, one owning thread.

    ``make_event(type, data, priority) -> Event`` creates the events the store raises itself
    (``store.reset``, ``store.evicted``); the daemon passes ``EventFactory.make``.
    """

    def __init__(self, path: str | os.PathLike, *, quota_bytes: int = DEFAULT_QUOTA_BYTES,
                 make_event: MakeEvent | None = None):
        self.path = Path(path)
        self.quota_bytes = int(quota_bytes)
        self._make_event = make_event or _default_make_event()
        self._owner = threading.get_ident()
        self._listeners: list[CommitListener] = []
        self._over_quota = False
        self._conn: sqlite3.Connection | None = None
        self.reset_report: Event | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the state directory {self.path.parent}: {exc}") from exc
        reset = None
        try:
            self._conn = self._open()
        except (sqlite3.DatabaseError, migrations.SchemaTooNew) as exc:
            if isinstance(exc, sqlite3.Error) and not _is_damage(exc):
                raise StoreError(f"cannot open the store {self.path}: {exc}") from exc
            reset = {"moved_to": self._move_aside(), "reason": str(exc) or type(exc).__name__}
            LOGGER.error("store %s was unusable (%s); moved to %s, starting a fresh store",
                         self.path, reset["reason"], reset["moved_to"])
            try:
                self._conn = self._open()
            except sqlite3.Error as again:
                raise StoreError(f"cannot create a fresh store at {self.path}: {again}") from again
        self._over_quota = bool(_get_state(self._conn, "store.over_quota"))
        if reset is not None:
            self.reset_report = self._append([self._make_event("store.reset", reset, 2)])[0]

    # --- opening -----------------------------------------------------------------------------
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
            conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT:d}")
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
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: {exc}") from exc
        return result

    def _read(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        conn = self._db()
        try:
            return work(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: {exc}") from exc

    # --- writing -----------------------------------------------------------------------------
    def append(self, events: Sequence[Event], *, state: Mapping[str, Any] | None = None) -> list[Event]:
        """Commit ``events`` (and optionally ``state`` keys) in one durable transaction.

        Returns each event with its ``seq``. An id already in the queue is not inserted again;
        its existing copy (with its original seq) is returned instead.
        """
        return self._append(list(events), state)

    def _append(self, events: list[Event], state: Mapping[str, Any] | None = None) -> list[Event]:
        committed: list[Event] = []

        def work(conn):
            next_seq = _last_seq(conn) + 1
            seen: dict[str, Event] = {}
            result = []
            for event in events:
                if event.id in seen:
                    result.append(seen[event.id])
                    continue
                row = conn.execute("SELECT body FROM events WHERE id = ?", (event.id,)).fetchone()
                if row is not None:
                    done = Event.from_dict(json.loads(row[0]))
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
            committed.extend(self._enforce_quota(conn, next_seq))
            return result

        result = self._transaction(work)
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

    def _enforce_quota(self, conn: sqlite3.Connection, next_seq: int) -> list[Event]:
        """Evict the oldest priority-3 events until under ``EVICT_TO_FRACTION`` of the quota.

        Runs inside the appending transaction; returns the ``store.evicted`` report it committed.
        Priority 1 and 2 are never evicted: if only they remain, the store stays over quota.
        """
        used = _used_bytes(conn)
        if used <= self.quota_bytes:
            if self._over_quota:
                self._over_quota = False
                conn.execute("DELETE FROM state WHERE key = 'store.over_quota'")
                LOGGER.warning("store is back under its quota (%d of %d bytes)", used, self.quota_bytes)
            return []
        target = int(self.quota_bytes * EVICT_TO_FRACTION)
        before = used
        count, first_seq, last_seq = 0, None, None
        while used > target:
            rows_total = conn.execute("SELECT count(*) FROM events").fetchone()[0]
            per_row = used / max(rows_total, 1)
            want = max(1, math.ceil((used - target) / per_row))
            rows = conn.execute(
                "SELECT seq FROM events WHERE priority = 3 ORDER BY seq LIMIT ?", (want,)).fetchall()
            if not rows:
                break
            conn.execute("DELETE FROM events WHERE priority = 3 AND seq <= ?", (rows[-1][0],))
            count += len(rows)
            first_seq = rows[0][0] if first_seq is None else first_seq
            last_seq = rows[-1][0]
            used = _used_bytes(conn)
        reports = []
        if count:
            data = {"count": count, "first_seq": first_seq, "last_seq": last_seq,
                    "bytes_freed": before - used}
            LOGGER.warning("store over quota: evicted %d priority-3 events (seq %d..%d, %d bytes)",
                           count, first_seq, last_seq, before - used)
            report = self._make_event("store.evicted", data, 2).with_seq(next_seq)
            body = report.to_json()
            conn.execute(
                "INSERT INTO events (seq, id, priority, type, size, body) VALUES (?,?,?,?,?,?)",
                (report.seq, report.id, report.priority, report.type, len(body.encode()), body))
            reports.append(report)
            used = _used_bytes(conn)
        if used > target and not self._over_quota:
            self._over_quota = True
            self._put_state(conn, "store.over_quota",
                            {"used_bytes": used, "quota_bytes": self.quota_bytes, "since": _now_text()})
            LOGGER.error("store is over its quota (%d of %d bytes) with only priority 1-2 events "
                         "left; keeping them all", used, self.quota_bytes)
        return reports

    def forget(self, ids: Iterable[str]) -> int:
        """Delete delivered events in one statement; returns how many were deleted."""
        ids = list(ids)
        if not ids:
            return 0
        return self._transaction(lambda conn: conn.execute(
            "DELETE FROM events WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(ids),)).rowcount)

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
        oversized event cannot stall the queue (the server's 413 then decides its fate).
        """
        def work(conn):
            batch, total = [], 0
            for body, size in conn.execute(
                    "SELECT body, size FROM events ORDER BY priority, seq LIMIT ?", (int(limit),)):
                total += size + 1
                if batch and total > max_bytes:
                    break
                batch.append(json.loads(body))
            return batch

        return self._read(work)

    def depth(self) -> dict[int, int]:
        return self._read(_depth)

    def dead_letter_count(self) -> int:
        return self._read(lambda conn: conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0])

    def dead_letters(self, limit: int = 20) -> list[dict]:
        return self._read(lambda conn: [_dead_row(r) for r in conn.execute(
            "SELECT seq, id, priority, type, body, reason, dead_at FROM dead_letters"
            " ORDER BY seq DESC LIMIT ?", (int(limit),))])

    def recent(self, limit: int = 20) -> list[dict]:
        """The last committed events (newest first), kept after delivery."""
        return self._read(lambda conn: [_recent_row(r) for r in conn.execute(
            "SELECT seq, type, priority, occurred_at FROM recent ORDER BY seq DESC LIMIT ?",
            (int(limit),))])

    def last_seq(self) -> int:
        return self._read(_last_seq)

    def used_bytes(self) -> int:
        """Bytes in use by the database (pages not on the free list)."""
        return self._read(_used_bytes)

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
                 batch_max: int = 100, now: Callable[[], float] | None = None):
        self.path = Path(path)
        self._quota_bytes = quota_bytes
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
            store = Store(self.path, quota_bytes=self._quota_bytes, make_event=self._make_event)
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
        state with the alert it raised).
        """
        batch = self._take_buffer()
        try:
            done = await self._call("append", batch + [event], state=state)
        except BaseException:
            self._restore_buffer(batch)
            raise
        return done[-1]

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
                "used_bytes": _used_bytes(conn),
                "dead_letter_count": conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0],
                "dead_letters": [_dead_row(r) for r in conn.execute(
                    "SELECT seq, id, priority, type, body, reason, dead_at FROM dead_letters"
                    " ORDER BY seq DESC LIMIT ?", (limit,))],
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
