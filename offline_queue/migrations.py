"""Schema of the durable event store, as explicit, ordered migrations.

Why ``PRAGMA user_version`` and not ``sqlite_utils.Migrations``: the version is one integer in the
database header, written in the same transaction as the step it records, so a power cut leaves
either the old schema and old number or the new schema and new number. It costs no extra table
and no extra index (each one is pages written on the SD card), needs no wall clock (the Pi has
no RTC), and a read-only ``carehub status`` can check it without writing. Steps are appended,
never edited: step N turns version N-1 into N.

Why this shape (SD-card wear): the queue is read by ``(priority, seq)`` and found by ``id``; those
are the only two indexes. ``recent`` is a ring of the last ``RECENT_KEEP`` committed events kept
by a trigger in the committing transaction, so ``carehub status`` shows history after delivery;
it touches one small page per commit.
"""

from __future__ import annotations

import logging
import sqlite3

LOGGER = logging.getLogger(__name__)

RECENT_KEEP = 20

# Each step: statements run in one transaction together with the new user_version.
STEPS: tuple[tuple[str, ...], ...] = (
    # 1: the queue, dead letters, small state, recent ring.
    (
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            priority INTEGER NOT NULL CHECK (priority IN (1, 2, 3)),
            type TEXT NOT NULL,
            size INTEGER NOT NULL,
            body TEXT NOT NULL
        )""",
        "CREATE INDEX events_by_priority ON events (priority, seq)",
        """CREATE TABLE dead_letters (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL,
            priority INTEGER NOT NULL,
            type TEXT NOT NULL,
            body TEXT NOT NULL,
            reason TEXT NOT NULL,
            dead_at TEXT NOT NULL
        )""",
        """CREATE TABLE state (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE recent (
            seq INTEGER PRIMARY KEY,
            type TEXT NOT NULL,
            priority INTEGER NOT NULL,
            occurred_at TEXT
        )""",
        f"""CREATE TRIGGER events_recent AFTER INSERT ON events BEGIN
            INSERT OR REPLACE INTO recent (seq, type, priority, occurred_at)
                VALUES (new.seq, new.type, new.priority, json_extract(new.body, '$.occurred_at'));
            DELETE FROM recent WHERE seq <= new.seq - {RECENT_KEEP};
        END""",
    ),
)

SCHEMA_VERSION = len(STEPS)


class SchemaTooNew(Exception):
    """The file was written by a newer CareHub than this one."""


def schema_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to ``SCHEMA_VERSION``, one transaction per step; returns the old version.

    ``conn`` must be in autocommit mode (``isolation_level=None``) so the transactions here are
    the only ones.
    """
    found = schema_version(conn)
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(f"store schema v{found} is newer than this software's v{SCHEMA_VERSION}")
    for version in range(found + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql in STEPS[version - 1]:
                conn.execute(sql)
            conn.execute(f"PRAGMA user_version = {version:d}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        LOGGER.info("store schema migrated to v%d", version)
    return found
