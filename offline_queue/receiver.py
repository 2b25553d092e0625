"""The reference community-server endpoint of the sync protocol (spec section 4).

For installation checks, demos and the hub's own tests: it checks the token and the signature,
takes gzip bodies, validates every event against the envelope, stores each (hub_id, id) once in
its own SQLite file and answers with per-event results, ``server_time`` and staff ``acks``.
A programmable queue of faults (``server.faults``) lets tests play a misbehaving server.

Python use::

    server = make_server("127.0.0.1", 0, "receiver.db", token)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ...
    server.shutdown(); server.server_close()
"""

from __future__ import annotations

import argparse
import hmac
import html
import json
import logging
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
    if given), ``"delay"`` (store, then wait ``delay_s`` before answering: a client timeout),
    ``"reset"`` (store, then cut the connection mid-response), ``"malformed"`` (store, answer
    200 with a body that is not JSON), ``"missing_results"`` (store, answer 200 without
    ``results``), ``"partial_results"`` (store, answer 200 with only the first half of them).
    """

    kind: str
    status: int = 503
    retry_after: str | None = None
    delay_s: float = 0.0

    KINDS = ("status", "delay", "reset", "malformed", "missing_results", "partial_results")

    def __post_init__(self):
        if self.kind not in self.KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r} (use one of: {', '.join(self.KINDS)})")


def parse_fault(spec: str) -> Fault:
    """``503``, ``429,retry-after=30``, ``503,retry-after=Wed, 21 Oct 2026 07:28:00 GMT``,
    ``delay=35``, ``reset``, ``malformed``, ``missing-results``, ``partial-results``."""
    text = spec.strip()
    head, _, rest = text.partition(",")
    head = head.strip().lower()
    if head.isdigit():
        status = int(head)
        if not 100 <= status <= 599:
            raise ValueError(f"fault {spec!r}: {status} is not an HTTP status")
        retry_after = None
        if rest:
            key, _, value = rest.partition("=")
            if key.strip().lower() != "retry-after" or not value.strip():
                raise ValueError(f"fault {spec!r}: after the status only retry-after=SECONDS|HTTP-DATE is allowed")
            retry_after = value.strip()
        return Fault("status", status=status, retry_after=retry_after)
    if head.startswith("delay="):
        try:
            return Fault("delay", delay_s=float(head[6:]))
        except ValueError:
            raise ValueError(f"fault {spec!r}: delay=SECONDS, e.g. delay=35") from None
    kind = head.replace("-", "_")
    if kind in ("reset", "malformed", "missing_results", "partial_results") and not rest:
        return Fault(kind)
    raise ValueError(
        f"fault {spec!r} is not understood (use STATUS[,retry-after=S|DATE], delay=S, reset, "
        "malformed, missing-results or partial-results)"
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
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _rfc3339(v) -> bool:
    if not isinstance(v, str) or "T" not in v:
        return False
    try:
        return datetime.fromisoformat(v.replace("Z", "+00:00")).tzinfo is not None
    except ValueError:
        return False


_CHECKS = (
    ("id", lambda v: isinstance(v, str) and 0 < len(v) <= 128, "a string of 1-128 characters"),
    ("seq", lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
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
        return f"hub_id {event['hub_id']!r} does not match the URL's {hub_id!r}"
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
                    if reason:
                        results.append({"id": ev_id, "status": "rejected", "reason": reason})
                        continue
                    data = ev["data"]
                    alert_id = data.get("alert_id") if isinstance(data.get("alert_id"), str) else None
                    cur = self._conn.execute(
                        "INSERT OR IGNORE INTO events (hub_id, id, seq, type, priority, occurred_at,"
                        " alert_id, received_at, body) VALUES (?,?,?,?,?,?,?,?,?)",
                        (hub_id, ev["id"], ev["seq"], ev["type"], ev["priority"], ev["occurred_at"],
                         alert_id, received_at, json.dumps(ev, separators=(",", ":"))),
                    )
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


class ReceiverServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that holds the database, the token, the clock and the faults."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address, db: ReceiverDB, token: str, now: Callable[[], datetime]):
        self.db = db
        self.token = token
        self.now = now
        self.faults = FaultQueue()
        self.stopping = threading.Event()
        self.requests_seen = 0  # event uploads, faulted or not (benchmarks count these)
        self._count_lock = threading.Lock()
        super().__init__(address, ReceiverHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"

    def events(self, hub_id: str | None = None) -> list[dict]:
        return self.db.events(hub_id)

    def ack(self, alert_id: str, by: str = "staff", hub_id: str | None = None) -> dict | None:
        return self.db.ack(alert_id, by, format_utc(self.now()), hub_id)

    def count_request(self) -> None:
        with self._count_lock:
            self.requests_seen += 1

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
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj, separators=(",", ":")).encode(), "application/json", headers)

    def _error(self, status: int, message: str, headers: dict | None = None) -> None:
        self._json(status, {"error": message}, headers)

    def _read_body(self, limit: int) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise _BadRequest(411, "Content-Length is required")
        n = int(length)
        if n > limit:
            self.close_connection = True
            if n <= 16 * limit:  # drain it so the client can read the answer instead of a broken pipe
                while n > 0:
                    n -= len(self.rfile.read(min(n, 65536)) or b"x" * n)
            raise _BadRequest(413, f"body of {length} bytes is over the limit of {limit}")
        return self.rfile.read(n)

    # -- routes --
    def do_GET(self):
        path = urlsplit(self.path).path
        db = self.server.db
        if path == "/":
            return self._send(200, _html_view(db.alerts(), db.hubs()).encode(), "text/html; charset=utf-8")
        if path == "/v1/alerts":
            return self._json(200, {"alerts": db.alerts()})
        if path == "/v1/hubs":
            return self._json(200, {"hubs": db.hubs()})
        self._error(404, f"no such resource: {path}")

    do_HEAD = do_GET

    def do_POST(self):
        path = urlsplit(self.path).path
        try:
            m = EVENTS_PATH_RE.match(path)
            if m:
                return self._upload(m.group(1))
            m = ACK_PATH_RE.match(path)
            if m:
                return self._ack(m.group(1))
            self._error(404, f"no such resource: {path}")
        except _BadRequest as e:
            self._error(e.status, str(e), e.headers)

    def _authorised(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.server.token.encode())

    def _bearer(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[7:].strip() if auth.startswith("Bearer ") else None

    def _check_signature(self, body: bytes) -> None:
        ts = self.headers.get("X-CareHub-Timestamp", "")
        sig = self.headers.get("X-CareHub-Signature", "")
        if not ts.lstrip("-").isdigit():
            raise _BadRequest(401, "X-CareHub-Timestamp is missing or not integer unix seconds")
        skew = int(ts) - self.server.now().timestamp()
        if abs(skew) > SIGNATURE_TOLERANCE_S:
            raise _BadRequest(401, f"X-CareHub-Timestamp is {skew:+.0f} s from the server's clock"
                                   f" (allowed ±{SIGNATURE_TOLERANCE_S} s)")
        if not hmac.compare_digest(sig.encode(), sign(self.server.token, ts, body).encode()):
            raise _BadRequest(401, "X-CareHub-Signature does not match the body")

    def _upload(self, hub_id: str) -> None:
        if not HUB_ID_RE.fullmatch(hub_id):
            raise _BadRequest(404, "hub id must be 1-64 characters of [A-Za-z0-9._-]")
        raw = self._read_body(MAX_BODY_BYTES)  # a compressed body is never larger than its source
        self.server.count_request()
        fault = self.server.faults.next()
        if fault is not None and fault.kind == "status":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
            return self._error(fault.status, f"injected fault {fault.status}", headers)
        if not self._authorised(self._bearer()):
            raise _BadRequest(401, "missing or wrong bearer token")
        self._check_signature(raw)
        body = self._decode(raw)
        try:
            doc = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _BadRequest(400, f"body is not JSON: {e}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
            raise _BadRequest(400, 'body must be {"hub_id": "...", "events": [...]}')
        if doc.get("hub_id") != hub_id:
            raise _BadRequest(400, f"body hub_id {doc.get('hub_id')!r} does not match the URL's {hub_id!r}")
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
            raise _BadRequest(415, f"Content-Encoding {encoding!r} is not supported (use gzip)")
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

    def _ack(self, alert_id: str) -> None:
        raw = self._read_body(64 * 1024)
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype == "application/x-www-form-urlencoded":
            form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
            token, is_form = form.get("token"), True
        else:
            try:
                form = json.loads(raw or b"{}")
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise _BadRequest(400, "body must be JSON or a form") from None
            if not isinstance(form, dict):
                raise _BadRequest(400, "body must be a JSON object")
            token, is_form = self._bearer(), False
        if not self._authorised(token):
            raise _BadRequest(401, "acknowledging needs the receiver's token")
        by = str(form.get("by") or "staff")[:64]
        hub_id = form.get("hub_id") or None
        got = self.server.ack(alert_id, by, hub_id if isinstance(hub_id, str) else None)
        if got is None:
            raise _BadRequest(404, f"no alert {alert_id!r} has been received")
        if is_form:
            self.send_response(303)
            self.send_header("Location", "/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._json(200, got)


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


def make_server(host: str, port: int, db_path, token: str, *,
                now: Callable[[], datetime] | None = None) -> ReceiverServer:
    """A bound, not yet serving receiver; ``now`` is the server's wall clock (tests inject it)."""
    if not token or not token.strip():
        raise ValueError("the receiver needs a non-empty token")
    db = ReceiverDB(db_path)
    try:
        return ReceiverServer((host, port), db, token.strip(), now or (lambda: datetime.now(timezone.utc)))
    except BaseException:
        db.close()
        raise


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `carehub receiver` (hub/cli.py and ``main`` share them)."""
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port; 0 picks a free one (default 8080)")
    p.add_argument("--db", default="carehub-receiver.db", help="SQLite file (default ./carehub-receiver.db)")
    p.add_argument("--token-file", help="file whose first line is the shared token"
                                        " (default: a new random token, printed)")
    p.add_argument("--fault", action="append", default=[], metavar="SPEC",
                   help="misbehave on the next uploads, in order: STATUS[,retry-after=S|DATE],"
                        " delay=S, reset, malformed, missing-results, partial-results")


def main(argv: list[str] | None = None) -> int:
    """``carehub receiver [--host H] [--port P] [--db PATH] [--token-file F] [--fault SPEC ...]``."""
    p = argparse.ArgumentParser(prog="carehub receiver", description=main.__doc__)
    add_arguments(p)
    return run(p.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    try:
        faults = [parse_fault(s) for s in args.fault]
    except ValueError as e:
        print(f"carehub receiver: {e}", file=sys.stderr)
        return 2
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().splitlines()[0].strip()
        except (OSError, IndexError) as e:
            print(f"carehub receiver: cannot read a token from {args.token_file}: {e}", file=sys.stderr)
            return 2
    else:
        import secrets

        token = secrets.token_urlsafe(24)
        print(f"token: {token}", flush=True)
    try:
        server = make_server(args.host, args.port, args.db, token)
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
