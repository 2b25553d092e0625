"""The reference community-server endpoint of the sync protocol (spec section 4).

For installation checks, demos and the hub's own tests: it checks the token and the signature,
takes gzip bodies, validates every event against the envelope, stores each (hub_id, id) once in
its own SQLite file and answers with per-event results, ``server_time`` and staff ``acks``.
A programmable queue of faults (``server.faults``) lets tests play a misbehaving server.

Safe to start from: every path needs a token (a hub's own for uploads, the staff token for the
views and acks), each socket read times out, connections are bounded, and hostile input gets a
400 or a per-event rejection, never a traceback (docs/sync-protocol.md, section 9).

Python use::

    server = make_server("127.0.0.1", 0, "receiver.db", token)            # one token, any hub id
    server = make_server("127.0.0.1", 0, "receiver.db", tokens={"home-1": t1}, staff_token=s)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ...
    server.shutdown(); server.server_close()
"""

from __future__ import annotations

import argparse
import base64
import functools
import hmac
import html
import json
import logging
import math
import os
import re
import socket
import sqlite3
import struct
import sys
import threading
import zlib
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from offline_queue.envelope import format_utc
from offline_queue.wire import MAX_BODY_BYTES, MAX_EVENTS, SIGNATURE_TOLERANCE_S, sign  # noqa: F401

LOGGER = logging.getLogger(__name__)

HUB_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
EVENTS_PATH_RE = re.compile(r"^/v1/hubs/([^/]+)/events$")
ACK_PATH_RE = re.compile(r"^/v1/alerts/([^/]+)/ack$")
TIMESTAMP_RE = re.compile(r"-?[0-9]{1,12}", re.ASCII)
MAX_SEQ = 2**63 - 1  # SQLite's INTEGER
MAX_DEPTH = 32  # nesting of an event's data
# An alert stops being offered as acknowledged once the hub reports one of these for it.
ACK_CLOSING_TYPES = ("alert.acknowledged", "alert.resolved", "alert.cancelled")

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    arrival     INTEGER PRIMARY KEY AUTOINCREMENT,
    hub_id      TEXT NOT NULL,
    id          TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    type        TEXT NOT NULL,
    priority    INTEGER NOT NULL,
    occurred_at TEXT NOT NULL,
    alert_id    TEXT,
    received_at TEXT NOT NULL,
    body        TEXT NOT NULL,
    UNIQUE (hub_id, id)
);
CREATE INDEX IF NOT EXISTS events_alert ON events (hub_id, alert_id) WHERE alert_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS acks (
    hub_id   TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    by       TEXT NOT NULL,
    at       TEXT NOT NULL,
    PRIMARY KEY (hub_id, alert_id)
);
CREATE TABLE IF NOT EXISTS hubs (
    hub_id    TEXT PRIMARY KEY,
    last_seen TEXT NOT NULL,
    requests  INTEGER NOT NULL DEFAULT 0
);
"""


# --- faults --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One way to misbehave on the next request.

    ``kind``: ``"status"`` (answer ``status`` without storing anything, with ``retry_after``
    and ``location`` headers if given), ``"delay"`` (store, then wait ``delay_s`` before
    answering: a client timeout), ``"reset"`` (store, then cut the connection mid-response),
    ``"malformed"`` (store, answer 200 with a body that is not JSON), ``"missing_results"``
    (store, answer 200 without ``results``), ``"partial_results"`` (store, answer 200 with only
    the first half of them), ``"body_limit"`` (a reverse proxy's body limit: 413 for a body over
    ``limit_bytes`` as sent, else as usual; meant to be held), ``"huge_reply"`` (store, answer
    200 with ``size_bytes`` of body, gzip-compressed on the wire when ``gzip``).
    Faults apply only to requests that passed the token and signature checks.
    """

    kind: str
    status: int = 503
    retry_after: str | None = None
    delay_s: float = 0.0
    location: str | None = None
    limit_bytes: int = 0
    size_bytes: int = 0
    gzip: bool = False

    KINDS = ("status", "delay", "reset", "malformed", "missing_results", "partial_results",
             "body_limit", "huge_reply")

    def __post_init__(self):
        if self.kind not in self.KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r} (use one of: {', '.join(self.KINDS)})")


def parse_fault(spec: str) -> Fault:
    """``503``, ``429,retry-after=30``, ``503,retry-after=Wed, 21 Oct 2026 07:28:00 GMT``,
    ``307,location=URL``, ``delay=35``, ``reset``, ``malformed``, ``missing-results``,
    ``partial-results``, ``body-limit=BYTES``, ``huge-reply=BYTES``."""
    text = spec.strip()
    head, _, rest = text.partition(",")
    head = head.strip().lower()
    if head.isascii() and head.isdigit():
        status = int(head)
        if not 100 <= status <= 599:
            raise ValueError(f"fault {spec!r}: {status} is not an HTTP status")
        extra = {}
        if rest:
            key, _, value = rest.partition("=")
            key = key.strip().lower().replace("-", "_")
            if key not in ("retry_after", "location") or not value.strip():
                raise ValueError(f"fault {spec!r}: after the status only retry-after=SECONDS|HTTP-DATE"
                                 " or location=URL is allowed")
            extra[key] = value.strip()
        return Fault("status", status=status, **extra)
    if head.startswith("delay="):
        try:
            return Fault("delay", delay_s=float(head[6:]))
        except ValueError:
            raise ValueError(f"fault {spec!r}: delay=SECONDS, e.g. delay=35") from None
    for prefix, field in (("body-limit=", "limit_bytes"), ("huge-reply=", "size_bytes")):
        if head.startswith(prefix) and not rest:
            number = head[len(prefix):]
            if not (number.isascii() and number.isdigit()):
                raise ValueError(f"fault {spec!r}: {prefix}BYTES, e.g. {prefix}65536")
            return Fault(prefix[:-1].replace("-", "_"), **{field: int(number)})
    kind = head.replace("-", "_")
    if kind in ("reset", "malformed", "missing_results", "partial_results") and not rest:
        return Fault(kind)
    raise ValueError(
        f"fault {spec!r} is not understood (use STATUS[,retry-after=S|DATE|,location=URL], delay=S,"
        " reset, malformed, missing-results, partial-results, body-limit=BYTES or huge-reply=BYTES)"
    )


class FaultQueue:
    """Faults applied to the next event uploads, in order; ``hold`` repeats one until cleared."""

    def __init__(self):
        self._lock = threading.Lock()
        self._queue: deque[Fault] = deque()
        self._held: Fault | None = None

    def push(self, *faults: Fault) -> None:
        with self._lock:
            self._queue.extend(faults)

    def hold(self, fault: Fault) -> None:
        with self._lock:
            self._held = fault

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
            self._held = None

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def next(self) -> Fault | None:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            return self._held


# --- validation ----------------------------------------------------------------------------


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _rfc3339(v) -> bool:
    if not isinstance(v, str) or "T" not in v:
        return False
    try:
        return datetime.fromisoformat(v.replace("Z", "+00:00")).tzinfo is not None
    except ValueError:
        return False


_CHECKS = (
    ("id", lambda v: isinstance(v, str) and 0 < len(v) <= 128, "a string of 1-128 characters"),
    ("seq", lambda v: _is_int(v) and 0 <= v <= MAX_SEQ, "a non-negative integer below 2^63"),
    ("type", lambda v: isinstance(v, str) and 0 < len(v) <= 64, "a string of 1-64 characters"),
    ("priority", lambda v: _is_int(v) and v in (1, 2, 3), "1, 2 or 3"),
    ("occurred_at", _rfc3339, "an RFC 3339 time with its offset"),
    ("clock_synced", lambda v: isinstance(v, bool), "true or false"),
    ("boot_id", lambda v: isinstance(v, str), "a string"),
    ("uptime_s", lambda v: _is_number(v) and v >= 0, "a non-negative number"),
    ("hub_id", lambda v: isinstance(v, str), "a string"),
    ("resident_id", lambda v: isinstance(v, str), "a string"),
    ("data", lambda v: isinstance(v, dict), "an object"),
)


def validate_event(event, hub_id: str) -> str | None:
    """The reason the envelope is unacceptable, or None when it is fine."""
    if not isinstance(event, dict):
        return "event is not a JSON object"
    for name, ok, what in _CHECKS:
        if name not in event:
            return f"{name} is missing"
        if not ok(event[name]):
            return f"{name} must be {what}"
    if event["hub_id"] != hub_id:
        return f"hub_id {event['hub_id'][:80]!r} does not match the URL's {hub_id!r}"
    return _check_values(event["data"])


def _check_values(data) -> str | None:
    """Nesting within MAX_DEPTH and no NaN or Infinity (not JSON; a server could not store them)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"data is nested deeper than {MAX_DEPTH} levels"
        if isinstance(value, float) and not math.isfinite(value):
            return "data holds NaN or Infinity, which JSON does not have"
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return None


# --- storage -------------------------------------------------------------------------------


class ReceiverDB:
    """The receiver's own SQLite file; one connection guarded by a lock (handlers are threads)."""

    def __init__(self, path):
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def store(self, hub_id: str, events: list, received_at: str) -> list[dict]:
        """Validates and stores each event once; returns the per-event results in order."""
        results = []
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for ev in events:
                    ev_id = ev.get("id") if isinstance(ev, dict) and isinstance(ev.get("id"), str) else None
                    reason = validate_event(ev, hub_id)
                    if reason is None:
                        try:
                            body = json.dumps(ev, separators=(",", ":"), allow_nan=False)
                        except (ValueError, RecursionError) as e:
                            reason = f"event cannot be stored: {str(e)[:80]}"
                    if reason:
                        results.append({"id": ev_id, "status": "rejected", "reason": reason})
                        continue
                    data = ev["data"]
                    alert_id = data.get("alert_id") if isinstance(data.get("alert_id"), str) else None
                    try:
                        cur = self._conn.execute(
                            "INSERT OR IGNORE INTO events (hub_id, id, seq, type, priority, occurred_at,"
                            " alert_id, received_at, body) VALUES (?,?,?,?,?,?,?,?,?)",
                            (hub_id, ev["id"], ev["seq"], ev["type"], ev["priority"], ev["occurred_at"],
                             alert_id, received_at, body),
                        )
                    except (UnicodeError, OverflowError) as e:  # e.g. a lone surrogate in a text field
                        results.append({"id": ev_id, "status": "rejected",
                                        "reason": f"event cannot be stored: {type(e).__name__}"})
                        continue
                    results.append({"id": ev["id"], "status": "accepted" if cur.rowcount else "duplicate"})
                self._conn.execute(
                    "INSERT INTO hubs (hub_id, last_seen, requests) VALUES (?, ?, 1) ON CONFLICT (hub_id)"
                    " DO UPDATE SET last_seen = excluded.last_seen, requests = requests + 1",
                    (hub_id, received_at),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return results

    def pending_acks(self, hub_id: str) -> list[dict]:
        """Acks the hub has not yet confirmed (no acknowledged/resolved/cancelled event for the alert)."""
        marks = ",".join("?" * len(ACK_CLOSING_TYPES))
        with self._lock:
            rows = self._conn.execute(
                "SELECT alert_id, by, at FROM acks a WHERE hub_id = ? AND NOT EXISTS (SELECT 1 FROM"
                f" events e WHERE e.hub_id = a.hub_id AND e.alert_id = a.alert_id AND e.type IN ({marks}))"
                " ORDER BY at",
                (hub_id, *ACK_CLOSING_TYPES),
            ).fetchall()
        return [dict(r) for r in rows]

    def ack(self, alert_id: str, by: str, at: str, hub_id: str | None = None) -> dict | None:
        """Records a staff acknowledgement; None when no such alert was received."""
        with self._lock:
            row = self._conn.execute(
                "SELECT hub_id FROM events WHERE alert_id = ? AND type = 'alert.raised'"
                + (" AND hub_id = ?" if hub_id else "") + " ORDER BY arrival DESC LIMIT 1",
                (alert_id, hub_id) if hub_id else (alert_id,),
            ).fetchone()
            if row is None:
                return None
            self._conn.execute(
                "INSERT OR IGNORE INTO acks (hub_id, alert_id, by, at) VALUES (?,?,?,?)",
                (row["hub_id"], alert_id, by, at),
            )
            got = self._conn.execute(
                "SELECT hub_id, alert_id, by, at FROM acks WHERE hub_id = ? AND alert_id = ?",
                (row["hub_id"], alert_id),
            ).fetchone()
        return dict(got)

    def events(self, hub_id: str | None = None) -> list[dict]:
        """Every stored event in arrival order (tests check order and exactly-once with this)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT body FROM events" + (" WHERE hub_id = ?" if hub_id else "") + " ORDER BY arrival",
                (hub_id,) if hub_id else (),
            ).fetchall()
        return [json.loads(r["body"]) for r in rows]

    def alerts(self, limit: int = 100) -> list[dict]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT e.hub_id, e.alert_id, e.occurred_at, e.received_at, e.body, a.by AS ack_by,"
                " a.at AS ack_at, (SELECT c.type FROM events c WHERE c.hub_id = e.hub_id AND"
                " c.alert_id = e.alert_id AND c.type IN ('alert.resolved', 'alert.cancelled')"
                " ORDER BY c.arrival DESC LIMIT 1) AS closed_by"
                " FROM events e LEFT JOIN acks a ON a.hub_id = e.hub_id AND a.alert_id = e.alert_id"
                " WHERE e.type = 'alert.raised' ORDER BY e.arrival DESC LIMIT ?",
                (limit,),
            ).fetchall()
        out = []
        for r in rows:
            data = json.loads(r["body"])["data"]
            out.append({
                "hub_id": r["hub_id"], "alert_id": r["alert_id"], "rule": data.get("rule"),
                "priority": data.get("priority"), "message": data.get("message"),
                "occurred_at": r["occurred_at"], "received_at": r["received_at"],
                "ack": {"by": r["ack_by"], "at": r["ack_at"]} if r["ack_by"] else None,
                "state": (r["closed_by"] or "").removeprefix("alert.") or ("acknowledged" if r["ack_by"] else "open"),
            })
        return out

    def hubs(self) -> list[dict]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT h.hub_id, h.last_seen, h.requests, (SELECT COUNT(*) FROM events e WHERE"
                " e.hub_id = h.hub_id) AS events, (SELECT MAX(seq) FROM events e WHERE e.hub_id ="
                " h.hub_id) AS last_seq FROM hubs h ORDER BY h.hub_id"
            ).fetchall()
        return [dict(r) for r in rows]


# --- HTTP ----------------------------------------------------------------------------------


class _BadRequest(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


# Paths and the methods each takes; any other method on them is a 405 with Allow.
_VIEW_PATHS = ("/", "/v1/alerts", "/v1/hubs")
_BUSY_REPLY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
               b"Content-Length: 46\r\nRetry-After: 5\r\nConnection: close\r\n\r\n"
               b'{"error":"too many connections; retry later"}\n')


class ReceiverServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that holds the database, the tokens, the clock and the faults.

    ``tokens`` maps hub_id -> token (a hub may post only as itself); ``shared_token`` instead
    lets any hub id post with one token (a one-hub installation, the demo). ``staff_token``
    opens the views and the acknowledge call. At most ``max_connections`` are served at once
    (the next get a 503 at once); each socket read waits at most ``timeout_s``.
    """

    daemon_threads = True
    block_on_close = False
    request_queue_size = 16

    def __init__(self, address, db: ReceiverDB, *, tokens: dict[str, str] | None = None,
                 shared_token: str | None = None, staff_token: str, now: Callable[[], datetime],
                 timeout_s: float = 15.0, max_connections: int = 32, ssl_context=None):
        self.db = db
        self.tokens = dict(tokens or {})
        self.shared_token = shared_token
        self.staff_token = staff_token
        self.now = now
        self.timeout_s = float(timeout_s)
        self.faults = FaultQueue()
        self.stopping = threading.Event()
        self.requests_seen = 0  # event uploads, faulted or not (benchmarks count these)
        self.refused_busy = 0  # connections answered 503 because max_connections were busy
        self._count_lock = threading.Lock()
        self.max_connections = max(1, int(max_connections))
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self._active = 0
        super().__init__(address, ReceiverHandler)
        self.ssl_context = ssl_context
        if ssl_context is not None:  # the handshake runs on the handler's thread, under its timeout
            self.socket = ssl_context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    @property
    def token(self) -> str | None:
        """The one shared token, when there is one (tests and the demo sign with it)."""
        return self.shared_token

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.ssl_context else 'http'}://{host}:{port}"

    def hub_token(self, hub_id: str) -> str | None:
        return self.shared_token if self.shared_token is not None else self.tokens.get(hub_id)

    def token_of_another_hub(self, token: str, hub_id: str) -> bool:
        return any(hmac.compare_digest(token.encode(), t.encode()) for h, t in self.tokens.items() if h != hub_id)

    def events(self, hub_id: str | None = None) -> list[dict]:
        return self.db.events(hub_id)

    def ack(self, alert_id: str, by: str = "staff", hub_id: str | None = None) -> dict | None:
        return self.db.ack(alert_id, by, format_utc(self.now()), hub_id)

    def count_request(self) -> None:
        with self._count_lock:
            self.requests_seen += 1

    # -- bounded connections --
    def crowded(self) -> bool:
        """Past half the connections: answer and close, so idle keep-alives do not hold slots."""
        return self._active * 2 >= self.max_connections

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            with self._count_lock:
                self.refused_busy += 1
            try:
                request.settimeout(1.0)
                if self.ssl_context is None:  # a TLS client would first need a handshake: just close
                    request.sendall(_BUSY_REPLY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        with self._count_lock:
            self._active += 1
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._count_lock:
            self._active -= 1
        self._slots.release()

    def handle_error(self, request, client_address):
        # A client that went away or stalled is not news; anything else is a bug worth one line.
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, TimeoutError)):
            LOGGER.debug("connection from %s ended: %r", client_address, exc)
        else:
            LOGGER.error("request from %s failed: %r", client_address, exc, exc_info=exc)

    def shutdown(self) -> None:
        self.stopping.set()  # ends injected delays at once
        super().shutdown()

    def server_close(self) -> None:
        super().server_close()
        self.db.close()


class ReceiverHandler(BaseHTTPRequestHandler):
    server: ReceiverServer
    server_version = "carehub-receiver/1"
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms delayed-ACK stall

    def setup(self):
        self.timeout = self.server.timeout_s  # every socket read, the request line and headers too
        super().setup()
        if self.server.ssl_context is not None:
            self.connection.do_handshake()

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        LOGGER.debug("%s %s", self.address_string(), format % args)

    def date_time_string(self, timestamp=None):
        return format_datetime(self.server.now().astimezone(timezone.utc), usegmt=True)

    # -- responses --
    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection or self.server.crowded():
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj, separators=(",", ":")).encode(), "application/json", headers)

    def _error(self, status: int, message: str, headers: dict | None = None) -> None:
        self._json(status, {"error": message}, headers)

    def _read_body(self, limit: int) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            raise _BadRequest(411, "Content-Length is required")
        length = length.strip()
        if not (length.isascii() and length.isdigit()) or len(length) > 12:
            self.close_connection = True
            raise _BadRequest(400, "Content-Length must be a number of bytes")
        n = int(length)
        if n > limit:
            self.close_connection = True
            if n <= 16 * limit:  # drain it so the client can read the answer instead of a broken pipe
                while n > 0:
                    chunk = self.rfile.read(min(n, 65536))
                    if not chunk:
                        break
                    n -= len(chunk)
            raise _BadRequest(413, f"body of {length} bytes is over the limit of {limit}")
        body = self.rfile.read(n)
        if len(body) < n:
            self.close_connection = True
            raise _BadRequest(400, "the body ended before Content-Length bytes")
        return body

    # -- dispatch --
    def _allowed(self, path: str) -> str | None:
        """The methods ``path`` takes, or None when there is no such resource."""
        if path in _VIEW_PATHS:
            return "GET, HEAD"
        if EVENTS_PATH_RE.match(path) or ACK_PATH_RE.match(path):
            return "POST"
        return None

    def _dispatch(self, route) -> None:
        try:
            route(urlsplit(self.path).path)
        except _BadRequest as e:
            self._error(e.status, str(e), e.headers)
        except (TimeoutError, ConnectionError):
            self.close_connection = True  # the client stalled or went away mid-request
        except Exception as e:  # a bug: one answer and one log line, never a dropped connection
            LOGGER.error("%s %s failed: %r", self.command, self.path[:200], e, exc_info=e)
            self.close_connection = True
            self._headers_buffer = []  # drop a half-made response
            try:
                self._error(500, "internal error")
            except OSError:
                pass

    def __getattr__(self, name: str):
        # BaseHTTPRequestHandler answers 501 for a method without do_<METHOD>; a method the
        # resource does not take is a 405 (RFC 9110 section 15.5.6).
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        path = urlsplit(self.path).path
        allowed = self._allowed(path)
        self.close_connection = True  # a body we did not read may follow
        if allowed is None:
            return self._error(404, f"no such resource: {path}")
        self._error(405, f"{self.command} is not allowed here (use {allowed})", {"Allow": allowed})

    def do_GET(self):
        self._dispatch(self._get)

    do_HEAD = do_GET

    def do_POST(self):
        self._dispatch(self._post)

    def _get(self, path: str) -> None:
        if path not in _VIEW_PATHS:
            if self._allowed(path):
                raise _BadRequest(405, f"{self.command} is not allowed here (use POST)", {"Allow": "POST"})
            raise _BadRequest(404, f"no such resource: {path}")
        self._require_staff(basic_ok=True)
        db = self.server.db
        if path == "/":
            return self._send(200, _html_view(db.alerts(), db.hubs()).encode(), "text/html; charset=utf-8",
                              {"Cache-Control": "no-store"})
        if path == "/v1/alerts":
            return self._json(200, {"alerts": db.alerts()})
        return self._json(200, {"hubs": db.hubs()})

    def _post(self, path: str) -> None:
        m = EVENTS_PATH_RE.match(path)
        if m:
            return self._upload(m.group(1))
        m = ACK_PATH_RE.match(path)
        if m:
            return self._ack(m.group(1))
        if path in _VIEW_PATHS:
            self.close_connection = True
            raise _BadRequest(405, "POST is not allowed here (use GET, HEAD)", {"Allow": "GET, HEAD"})
        self.close_connection = True
        raise _BadRequest(404, f"no such resource: {path}")

    # -- authentication --
    def _bearer(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[7:].strip() if auth.startswith("Bearer ") else None

    def _is_staff(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.server.staff_token.encode())

    def _require_staff(self, *, basic_ok: bool) -> None:
        """The staff token as a Bearer header or, for a browser on the views, as the Basic password."""
        token = self._bearer()
        auth = self.headers.get("Authorization", "")
        if token is None and basic_ok and auth.startswith("Basic "):
            try:
                token = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8").partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                token = None
        if not self._is_staff(token):
            raise _BadRequest(401, "the receiver's staff token is needed",
                              {"WWW-Authenticate": 'Basic realm="carehub receiver", charset="UTF-8"'}
                              if basic_ok else None)

    def _check_hub(self, hub_id: str, body: bytes) -> str:
        """401 unless the bearer token is this hub's and the signature over ``body`` is good."""
        token, expected = self._bearer(), self.server.hub_token(hub_id)
        if not token:
            raise _BadRequest(401, "missing bearer token")
        if expected is None or not hmac.compare_digest(token.encode(), expected.encode()):
            if self.server.token_of_another_hub(token, hub_id):
                raise _BadRequest(403, f"this token belongs to another hub; it may not upload for {hub_id!r}")
            raise _BadRequest(401, "wrong bearer token")
        ts = self.headers.get("X-CareHub-Timestamp")
        sig = self.headers.get("X-CareHub-Signature", "")
        if ts is None:
            raise _BadRequest(401, "X-CareHub-Timestamp is missing")
        if not TIMESTAMP_RE.fullmatch(ts):
            raise _BadRequest(400, "X-CareHub-Timestamp must be integer unix seconds")
        skew = int(ts) - self.server.now().timestamp()
        if abs(skew) > SIGNATURE_TOLERANCE_S:
            raise _BadRequest(401, f"X-CareHub-Timestamp is {skew:+.0f} s from the server's clock"
                                   f" (allowed ±{SIGNATURE_TOLERANCE_S} s)")
        if not hmac.compare_digest(sig.encode("utf-8", "replace"), sign(expected, ts, body).encode()):
            raise _BadRequest(401, "X-CareHub-Signature does not match the body")
        return expected

    # -- the upload --
    def _upload(self, hub_id: str) -> None:
        if not HUB_ID_RE.fullmatch(hub_id):
            self.close_connection = True
            raise _BadRequest(404, "hub id must be 1-64 characters of [A-Za-z0-9._-]")
        raw = self._read_body(MAX_BODY_BYTES)  # a compressed body is never larger than its source
        self.server.count_request()
        self._check_hub(hub_id, raw)
        fault = self.server.faults.next()  # only an authenticated client meets a fault
        if fault is not None and fault.kind == "body_limit":
            if len(raw) > fault.limit_bytes:
                return self._error(413, f"injected proxy body limit of {fault.limit_bytes} bytes")
            fault = None
        if fault is not None and fault.kind == "status":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            if fault.location:
                headers["Location"] = fault.location
            return self._error(fault.status, f"injected fault {fault.status}", headers)
        body = self._decode(raw)
        doc = parse_json(body)
        if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
            raise _BadRequest(400, 'body must be {"hub_id": "...", "events": [...]}')
        if doc.get("hub_id") != hub_id:
            raise _BadRequest(400, f"body hub_id {str(doc.get('hub_id'))[:80]!r} does not match the URL's {hub_id!r}")
        if len(doc["events"]) > MAX_EVENTS:
            raise _BadRequest(413, f"{len(doc['events'])} events in one request; at most {MAX_EVENTS}")
        now = format_utc(self.server.now())
        results = self.server.db.store(hub_id, doc["events"], now)
        reply = {"results": results, "server_time": now, "acks": self.server.db.pending_acks(hub_id)}
        self._reply_upload(reply, fault)

    def _decode(self, raw: bytes) -> bytes:
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding == "identity":
            return raw
        if encoding != "gzip":
            raise _BadRequest(415, f"Content-Encoding {encoding[:40]!r} is not supported (use gzip)")
        d = zlib.decompressobj(wbits=31)
        try:
            out = d.decompress(raw, MAX_BODY_BYTES + 1)
        except zlib.error as e:
            raise _BadRequest(400, f"body is not valid gzip: {e}") from None
        if len(out) > MAX_BODY_BYTES:
            raise _BadRequest(413, f"body is over {MAX_BODY_BYTES} bytes once decompressed")
        if not d.eof:
            raise _BadRequest(400, "gzip body is truncated")
        return out

    def _reply_upload(self, reply: dict, fault: Fault | None) -> None:
        kind = fault.kind if fault else None
        if kind == "delay":
            self.server.stopping.wait(fault.delay_s)
        elif kind == "malformed":
            return self._send(200, b'{"results": [{"id": ', "application/json")
        elif kind == "missing_results":
            reply = {k: v for k, v in reply.items() if k != "results"}
        elif kind == "partial_results":
            reply = dict(reply, results=reply["results"][: len(reply["results"]) // 2])
        elif kind == "reset":
            return self._reset(json.dumps(reply).encode())
        elif kind == "huge_reply":
            return self._huge_reply(fault)
        try:
            self._json(200, reply)
        except (BrokenPipeError, ConnectionResetError):
            LOGGER.debug("client went away before the reply (it timed out)")

    def _reset(self, body: bytes) -> None:
        """Headers and half the body, then a TCP reset: the events are stored, the hub never knows."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _huge_reply(self, fault: Fault) -> None:
        """``size_bytes`` of reply streamed from one small buffer (the receiver holds no copy)."""
        self.close_connection = True
        chunk = _HUGE_CHUNK
        body_len = fault.size_bytes if not fault.gzip else _gzip_len(fault.size_bytes)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(body_len))
        if fault.gzip:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        try:
            if fault.gzip:
                for part in _gzip_stream(fault.size_bytes):
                    self.wfile.write(part)
            else:
                left = fault.size_bytes
                while left > 0:
                    self.wfile.write(chunk[:left])
                    left -= len(chunk)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            LOGGER.debug("client stopped reading the huge reply")

    # -- staff acknowledgement --
    def _ack(self, alert_id: str) -> None:
        raw = self._read_body(64 * 1024)
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype == "application/x-www-form-urlencoded":
            # The form's token field: a cross-site page cannot know it (browsers would attach
            # Basic credentials on their own, so those are not taken here).
            form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
            if not self._is_staff(form.get("token")):
                raise _BadRequest(401, "acknowledging needs the receiver's staff token")
            is_form = True
        elif ctype == "application/json":
            if not self._is_staff(self._bearer()):
                raise _BadRequest(401, "acknowledging needs the receiver's staff token (Bearer)")
            form = parse_json(raw or b"{}")
            if not isinstance(form, dict):
                raise _BadRequest(400, "body must be a JSON object")
            is_form = False
        else:
            raise _BadRequest(415, "send application/json (with the Bearer token) or the HTML form")
        by = form.get("by") if isinstance(form.get("by"), str) and form.get("by") else "staff"
        hub_id = form.get("hub_id") if isinstance(form.get("hub_id"), str) and form.get("hub_id") else None
        got = self.server.ack(alert_id, by[:64], hub_id)
        if got is None:
            raise _BadRequest(404, f"no alert {alert_id[:80]!r} has been received")
        if is_form:
            self.send_response(303)
            self.send_header("Location", "/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._json(200, got)


def parse_json(body: bytes):
    """The body as JSON, or a 400 that says why (deep nesting and huge numbers included: never a
    traceback). NaN and Infinity parse here and are rejected per event (validate_event)."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _BadRequest(400, f"body is not JSON: {e}") from None
    except RecursionError:
        raise _BadRequest(400, "body is nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise _BadRequest(400, f"body is not acceptable JSON: {str(e)[:120]}") from None


_HUGE_CHUNK = b" " * (1024 * 1024)


def _gzip_stream(size: int):
    """gzip of ``size`` spaces, a piece at a time and fast: one full-flushed deflate block of
    1 MiB is self-contained, so the same bytes repeat (about 1 KB per MB on the wire)."""
    whole, rest = divmod(size, len(_HUGE_CHUNK))
    yield b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # gzip header, no name, no mtime
    crc = 0
    for piece, times in ((_HUGE_CHUNK, whole), (_HUGE_CHUNK[:rest], 1 if rest else 0)):
        if not times:
            continue
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        block = c.compress(piece) + c.flush(zlib.Z_FULL_FLUSH)
        for _ in range(times):
            crc = zlib.crc32(piece, crc)
            yield block
    yield zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # the final, empty block
    yield struct.pack("<II", crc, size & 0xFFFFFFFF)


@functools.lru_cache(maxsize=8)
def _gzip_len(size: int) -> int:
    return sum(len(p) for p in _gzip_stream(size))


def _html_view(alerts: list[dict], hubs: list[dict]) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(a['hub_id'])}</td><td>{e(str(a['rule']))}</td><td>{e(str(a['message'] or ''))}</td>"
        f"<td>{e(a['occurred_at'])}</td><td>{e(a['state'])}</td><td>"
        + (f"{e(a['ack']['by'])} at {e(a['ack']['at'])}" if a["ack"] else
           f"<form method='post' action='/v1/alerts/{e(a['alert_id'])}/ack'>"
           f"<input type='hidden' name='hub_id' value='{e(a['hub_id'])}'>"
           "<input name='by' value='staff' size='8'><input name='token' type='password' placeholder='token'"
           " size='10'><button>Acknowledge</button></form>")
        + "</td></tr>"
        for a in alerts
    )
    hub_rows = "".join(
        f"<tr><td>{e(h['hub_id'])}</td><td>{e(h['last_seen'])}</td><td>{h['events']}</td><td>{h['requests']}</td></tr>"
        for h in hubs
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>CareHub receiver</title></head><body>"
        "<h1>CareHub receiver</h1><h2>Recent alerts</h2><table border='1'><tr><th>hub</th><th>rule</th>"
        f"<th>message</th><th>occurred</th><th>state</th><th>ack</th></tr>{rows}</table>"
        "<h2>Hubs</h2><table border='1'><tr><th>hub</th><th>last seen</th><th>events</th><th>requests</th></tr>"
        f"{hub_rows}</table></body></html>"
    )


# --- construction and CLI ------------------------------------------------------------------


def make_server(host: str, port: int, db_path, token: str | None = None, *,
                tokens: dict[str, str] | None = None, staff_token: str | None = None,
                now: Callable[[], datetime] | None = None, timeout_s: float = 15.0,
                max_connections: int = 32, ssl_context=None) -> ReceiverServer:
    """A bound, not yet serving receiver; ``now`` is the server's wall clock (tests inject it).

    Either ``token`` (one token any hub id may post with: one hub, the demo; it also opens the
    views) or ``tokens`` (hub_id -> token: each hub posts only as itself; the views need
    ``staff_token``).
    """
    if (token is None) == (tokens is None):
        raise ValueError("give the receiver either one token or a hub_id -> token map")
    if token is not None and not token.strip():
        raise ValueError("the receiver needs a non-empty token")
    for hub_id, t in (tokens or {}).items():
        if not HUB_ID_RE.fullmatch(hub_id) or not t or not t.strip():
            raise ValueError(f"hub {hub_id!r}: a hub id of [A-Za-z0-9._-] and a non-empty token are needed")
    shared = token.strip() if token is not None else None
    staff = (staff_token or "").strip() or shared
    if not staff:
        raise ValueError("with per-hub tokens the receiver needs a staff token for its views")
    db = ReceiverDB(db_path)
    try:
        return ReceiverServer((host, port), db, tokens={h: t.strip() for h, t in (tokens or {}).items()},
                              shared_token=shared, staff_token=staff,
                              now=now or (lambda: datetime.now(timezone.utc)), timeout_s=timeout_s,
                              max_connections=max_connections, ssl_context=ssl_context)
    except BaseException:
        db.close()
        raise


def read_token_file(path) -> str:
    """The token: the file's first line, stripped (ValueError naming the file otherwise)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if not lines or not lines[0].strip():
        raise ValueError(f"{path}:1: the first line must be the token")
    return lines[0].strip()


def read_tokens_file(path) -> dict[str, str]:
    """Per-hub tokens: one ``HUB_ID TOKEN`` per line; blank lines and ``#`` comments are skipped.

    ValueError with ``FILE:LINE: problem`` for anything else (a duplicated hub id, a line that
    is not two fields, a hub id outside [A-Za-z0-9._-], the same token for two hubs).
    """
    tokens: dict[str, str] = {}
    owner: dict[str, str] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.split()
        if len(fields) != 2:
            raise ValueError(f"{path}:{n}: expected 'HUB_ID TOKEN', got {len(fields)} field(s)")
        hub_id, token = fields
        if not HUB_ID_RE.fullmatch(hub_id):
            raise ValueError(f"{path}:{n}: {hub_id!r} is not a hub id (1-64 of [A-Za-z0-9._-])")
        if hub_id in tokens:
            raise ValueError(f"{path}:{n}: hub {hub_id!r} is listed twice")
        if token in owner:
            raise ValueError(f"{path}:{n}: hub {hub_id!r} has the same token as {owner[token]!r}")
        tokens[hub_id], owner[token] = token, hub_id
    if not tokens:
        raise ValueError(f"{path}: no 'HUB_ID TOKEN' line")
    return tokens


def _private(path) -> str | None:
    """A warning when a secrets file can be read by group or others."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & 0o077:
        return f"{path} is readable by others (mode {mode & 0o777:o}); chmod 600 it"
    return None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `carehub receiver` (hub/cli.py and ``main`` share them)."""
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port; 0 picks a free one (default 8080)")
    p.add_argument("--db", default="carehub-receiver.db", help="SQLite file (default ./carehub-receiver.db)")
    p.add_argument("--token-file", help="file whose first line is the one token (any hub id may post"
                                        " with it; it also opens the views); default: a new random"
                                        " token, printed")
    p.add_argument("--tokens-file", help="per-hub tokens instead, one 'HUB_ID TOKEN' per line:"
                                         " each hub may post only as itself")
    p.add_argument("--staff-token-file", help="file whose first line opens the views and the"
                                              " acknowledge call (default with --tokens-file: a new"
                                              " random token, printed)")
    p.add_argument("--fault", action="append", default=[], metavar="SPEC",
                   help="misbehave on the next authenticated uploads, in order:"
                        " STATUS[,retry-after=S|DATE|,location=URL], delay=S, reset, malformed,"
                        " missing-results, partial-results, body-limit=BYTES, huge-reply=BYTES")


def main(argv: list[str] | None = None) -> int:
    """``carehub receiver [--host H] [--port P] [--db PATH] [--token-file F | --tokens-file F]
    [--staff-token-file F] [--fault SPEC ...]``."""
    p = argparse.ArgumentParser(prog="carehub receiver", description=main.__doc__)
    add_arguments(p)
    return run(p.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    import secrets

    def fail(message: str) -> int:
        print(f"carehub receiver: {message}", file=sys.stderr)
        return 2

    try:
        faults = [parse_fault(s) for s in args.fault]
    except ValueError as e:
        return fail(str(e))
    token_file = getattr(args, "token_file", None)
    tokens_file = getattr(args, "tokens_file", None)
    staff_file = getattr(args, "staff_token_file", None)
    if token_file and tokens_file:
        return fail("give --token-file (one token) or --tokens-file (one per hub), not both")
    token = tokens = staff = None
    try:
        for path in filter(None, (token_file, tokens_file, staff_file)):
            warning = _private(path)
            if warning:
                print(f"carehub receiver: warning: {warning}", file=sys.stderr)
        if tokens_file:
            tokens = read_tokens_file(tokens_file)
        elif token_file:
            token = read_token_file(token_file)
        if staff_file:
            staff = read_token_file(staff_file)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return fail(f"cannot read the tokens: {e}")
    if token is None and tokens is None:
        token = secrets.token_urlsafe(24)
        print(f"token: {token}", flush=True)
    if tokens is not None and staff is None:
        staff = secrets.token_urlsafe(24)
        print(f"staff token: {staff}", flush=True)
    try:
        server = make_server(args.host, args.port, args.db, token, tokens=tokens, staff_token=staff)
    except (OSError, ValueError, sqlite3.Error) as e:
        print(f"carehub receiver: cannot start on {args.host}:{args.port} with {args.db}: {e}", file=sys.stderr)
        return 1
    server.faults.push(*faults)
    print(f"listening on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
