"""Reading what can still be read out of a corrupt store file, before a fresh one replaces it.

A page of garbage costs the rows on that page, not the whole queue: the rows are found through
every b-tree that names them (the table itself, the ``(priority, seq)`` index, the ``id`` index)
and then read one by one, so a bad page fails only the lookups that pass through it. Every read
here tolerates errors; nothing is written to the old file (it is opened read-only and stays as it
was found, for the technician).

Pure reading, no policy: ``offline_queue.store`` decides what goes into the new store.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

LOGGER = logging.getLogger(__name__)

# After an unreadable stretch of the table, how far ahead (in seq) the scan probes for the next
# readable row before relying on the indexes alone.
MAX_SKIP = 1 << 20


@dataclass
class Salvage:
    """What came out of the old file. ``rows`` are ``(seq, id, priority, type, body bytes)``."""

    rows: list[tuple] = field(default_factory=list)
    dead_letters: list[tuple] = field(default_factory=list)
    state: dict[str, str] = field(default_factory=dict)
    known_seqs: set[int] = field(default_factory=set)   # queued events seen in any b-tree
    high_water: int = 0                                   # highest seq the old file shows
    sequence_read: bool = False                           # sqlite_sequence itself was readable
    complete: bool = True                                 # every b-tree was read to its end

    @property
    def lost(self) -> int:
        return len(self.known_seqs - {r[0] for r in self.rows})


def _tolerant(conn: sqlite3.Connection, sql: str, args=()) -> tuple[list, bool]:
    """All rows ``sql`` yields before an error; and whether it ran to the end."""
    out = []
    try:
        for row in conn.execute(sql, args):
            out.append(row)
    except sqlite3.Error:
        return out, False
    return out, True


def salvage(path: Path) -> Salvage:
    result = Salvage()
    try:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True,
                               isolation_level=None, timeout=1.0)
    except sqlite3.Error as exc:
        LOGGER.warning("cannot open %s to salvage it: %s", path, exc)
        result.complete = False
        return result
    try:
        _salvage_into(conn, result)
    finally:
        conn.close()
    return result


def _salvage_into(conn: sqlite3.Connection, result: Salvage) -> None:
    rows, ok = _tolerant(conn, "SELECT seq FROM sqlite_sequence WHERE name = 'events'")
    if rows:
        result.high_water = int(rows[0][0] or 0)
        result.sequence_read = True
    for table in ("recent", "dead_letters"):
        rows, _ = _tolerant(conn, f"SELECT max(seq) FROM {table}")
        if rows and rows[0][0] is not None:
            result.high_water = max(result.high_water, int(rows[0][0]))

    # which seqs were queued: every b-tree that can tell
    for sql in ("SELECT seq FROM events INDEXED BY events_by_priority ORDER BY priority, seq",
                "SELECT seq FROM events INDEXED BY sqlite_autoindex_events_1 ORDER BY id"):
        seqs, ok = _tolerant(conn, sql)
        result.known_seqs.update(s for (s,) in seqs if isinstance(s, int))
        result.complete &= ok

    # the table, in order, stepping over unreadable stretches
    got: dict[int, tuple] = {}
    select = "SELECT seq, id, priority, type, CAST(body AS BLOB) FROM events NOT INDEXED"
    after = 0
    while True:
        rows, ok = _tolerant(conn, f"{select} WHERE seq > ? ORDER BY seq", (after,))
        for row in rows:
            got[row[0]] = row
        if rows:
            after = rows[-1][0]
        if ok:
            break
        result.complete = False
        step, resumed = 1, False
        while step <= MAX_SKIP:           # probe ahead for the next readable row
            probe, probe_ok = _tolerant(conn, f"{select} WHERE seq > ? ORDER BY seq LIMIT 1",
                                        (after + step,))
            if probe_ok:
                if probe:
                    after = after + step   # resume from here; the indexes cover the skipped seqs
                    resumed = True
                break
            step *= 2
        if not resumed:
            break
    # rows the indexes know of but the scan stepped over: one lookup each
    for seq in sorted(result.known_seqs - got.keys()):
        rows, _ = _tolerant(conn, f"{select} WHERE seq = ?", (seq,))
        if rows:
            got[seq] = rows[0]
    result.known_seqs.update(got)
    result.rows = [got[s] for s in sorted(got)]
    if result.rows:
        result.high_water = max(result.high_water, result.rows[-1][0])

    rows, ok = _tolerant(conn, "SELECT seq, id, priority, type, CAST(body AS BLOB), reason, dead_at"
                               " FROM dead_letters ORDER BY seq")
    result.dead_letters = rows
    rows, _ = _tolerant(conn, "SELECT key, value FROM state")
    for key, value in rows:
        try:
            json.loads(value)
        except (TypeError, ValueError):
            continue
        result.state[key] = value
