"""Store-and-forward to the community server (spec section 4).

At-least-once transport plus the server's de-duplication by (hub_id, id): an event leaves the
store only after a 200 whose results name it accepted, duplicate or rejected (dead letters), so a
crash at any point can re-send but never lose; ids never change, so a re-send is a duplicate.

One request in flight, batches in priority-then-seq order. Failures back off exponentially with
full jitter, honour Retry-After, and the next attempt survives a restart (``sync.next_attempt_at``).
A committed priority-1 event wakes the loop at once, even during a backoff.

The hub never gives an event up on its own: only a per-event ``rejected`` makes a dead letter.
A 413 halves the batch down to one event; an event refused alone is held back (kept in the store,
skipped for ``too_large_backoff_s``) while the rest flows, and the state ``payload_too_large``
is reported once.

The client believes only what it was configured with: redirects are not followed (a redirect is
an error), the CA bundle is ``ca_file`` or the system store whatever ``REQUESTS_CA_BUNDLE`` or
``CURL_CA_BUNDLE`` say (``Session.trust_env`` is off; proxies are still taken from
``HTTPS_PROXY``/``NO_PROXY``, resolved once here), and a reply is read up to ``max_reply_bytes``
(after decompression) and no further.

Requests run on a worker thread with one ``requests.Session``; the event loop never waits on the
network. The thread is a daemon thread of its own rather than ``asyncio.to_thread``'s pool: the
pool is joined when the loop and the interpreter shut down, so a request hanging on a dead link
would hold ``carehub run`` past its 5-second stop for up to ``timeout_s``. ``stop()`` abandons an
in-flight request instead (nothing was forgotten yet, so at worst it is re-sent: a duplicate).
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import http.client
import inspect
import json
import logging
import random
import re
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable
from urllib.parse import quote

import requests
from urllib3.exceptions import HTTPError as TransportError, ReadTimeoutError

from offline_queue.envelope import format_utc, kernel_clock_synced, read_boot_id
from offline_queue.errors import ServerConfigError
from offline_queue.wire import MAX_BODY_BYTES, MAX_EVENTS, SIGNATURE_TOLERANCE_S, check_url, sign  # noqa: F401

LOGGER = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
AUTH_STATUS = frozenset({401, 403})
STATE_NEXT = "sync.next_attempt_at"
STATE_LAST_SUCCESS = "sync.last_success"
STATE_LAST_ERROR = "sync.last_error"
STATE_ACKS_SEEN = "sync.acks_seen"
STATE_SYNC = "sync.state"  # the current state, for `carehub status`
ACKS_REMEMBERED = 200
MAX_REPLY_BYTES = 1024 * 1024  # a reply to 500 events is ~40 KB; anything past this is not read
HELD_MAX = MAX_EVENTS  # events held back after a lone 413, remembered at once

ONLINE, OFFLINE, UNAUTHORISED = "online", "offline", "unauthorised"
TOO_LARGE, REDIRECTED = "payload_too_large", "redirected"


class ReplyError(Exception):
    """A reply the hub will not read: too large, too slow, or in an encoding it did not ask for."""


def parse_retry_after(value: str | None, server_now: datetime | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None.

    An HTTP-date is measured against the server's own Date header when there is one, so a hub
    clock that is wrong does not distort it.
    """
    if not value:
        return None
    value = value.strip(" \t")
    if _DELAY_SECONDS.fullmatch(value):  # ASCII only: str.isdigit() takes '١٢' and '²'
        return float(value)
    if not any(form.fullmatch(value) for form in _HTTP_DATE_FORMS):
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    ref = server_now or datetime.now(timezone.utc)
    return max(0.0, (when - ref).total_seconds())


_DELAY_SECONDS = re.compile(r"[0-9]+", re.ASCII)
# RFC 9110 section 5.6.7: IMF-fixdate, and the obsolete RFC 850 and asctime forms a recipient must take.
_DAY, _MON = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)", r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_HTTP_DATE_FORMS = (
    re.compile(rf"{_DAY}, [0-9]{{2}} {_MON} [0-9]{{4}} [0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}} GMT", re.ASCII),
    re.compile(r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), "
               rf"[0-9]{{2}}-{_MON}-[0-9]{{2}} [0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}} GMT", re.ASCII),
    re.compile(rf"{_DAY} {_MON} [ 0-9][0-9] [0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}} [0-9]{{4}}", re.ASCII),
)


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return when.replace(tzinfo=timezone.utc) if when and when.tzinfo is None else when


def _rfc3339(value) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else None


@dataclass
class SyncResult:
    """What one ``sync_once`` did. ``delay_s`` is how long until the next attempt is due."""

    outcome: str  # "idle", "held", "sent", "failed", "unauthorised", "too_large"
    status: int | None = None
    sent: int = 0
    delivered: int = 0  # accepted + duplicate, forgotten
    duplicates: int = 0
    rejected: int = 0
    kept: int = 0  # "retry" or missing from the results
    acks: int = 0
    delay_s: float = 0.0
    error: str = ""
    body_bytes: int = 0  # as sent on the wire (after gzip)
    raw_bytes: int = 0  # before compression
    extra: dict = field(default_factory=dict)


@dataclass
class _Response:
    status: int
    headers: dict
    content: bytes


class Uploader:
    """Sends the store's events to ``{url}/v1/hubs/{hub_id}/events`` until ``stop()``.

    ``clock`` gives ``monotonic()`` for every duration and ``now()`` for signatures and the
    persisted wall-clock deadline. ``sleep`` is how the loop waits (tests pass one that advances a
    ManualClock). ``on_ack(alert_id, by, at)`` and ``on_status(state, detail)`` may be plain or
    async callables. ``clock_synced`` says whether the wall clock is NTP-good; while it is not,
    signatures use the server's time as learnt from its replies (``clock_offset_s``).
    ``make_event(type, data, priority)``, when given, makes the ``device.status`` event (device
    ``"server"``) committed on each change of the sync state.
    """

    def __init__(self, store, *, url: str, hub_id: str, token: str, ca_file: str | None = None,
                 timeout_s: float = 30, batch_max: int = 500, gzip_min_bytes: int = 1024,
                 backoff_base_s: float = 5, backoff_max_s: float = 1800, auth_backoff_s: float = 1800,
                 interval_s: float = 60, clock, rng: random.Random | None = None,
                 on_ack: Callable | None = None, on_status: Callable | None = None,
                 sleep: Callable[[float], Awaitable[Any]] | None = None,
                 clock_synced: Callable[[], bool] = kernel_clock_synced, boot_id: str | None = None,
                 jitter: bool = True, max_body_bytes: int = MAX_BODY_BYTES,
                 too_large_backoff_s: float = 1800, max_reply_bytes: int = MAX_REPLY_BYTES,
                 make_event: Callable[[str, dict, int], Any] | None = None):
        if not token or not token.strip():
            raise ServerConfigError(["server.token_file: the token is empty"])
        self.store = store
        self.url = check_url(url)
        self.hub_id = hub_id
        self.endpoint = f"{self.url}/v1/hubs/{quote(hub_id, safe='')}/events"
        self._token = token.strip()
        self.timeout_s = float(timeout_s)
        self.batch_max = max(1, min(int(batch_max), MAX_EVENTS))
        self.gzip_min_bytes = int(gzip_min_bytes)
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_max_s = float(backoff_max_s)
        self.auth_backoff_s = float(auth_backoff_s)
        self.interval_s = float(interval_s)
        self.max_body_bytes = int(max_body_bytes)
        self.too_large_backoff_s = float(too_large_backoff_s)
        self.max_reply_bytes = int(max_reply_bytes)
        self.make_event = make_event
        self.clock = clock
        self.rng = rng or random.Random()
        self.jitter = jitter
        self.on_ack = on_ack
        self.on_status = on_status
        self._sleep = sleep or asyncio.sleep
        self._clock_synced = clock_synced
        self.boot_id = boot_id if boot_id is not None else read_boot_id()

        # trust_env would let REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace ca_file (and .netrc the
        # token): off. verify and proxies are then passed with every request, explicitly.
        self._session = requests.Session()
        self._session.trust_env = False
        self._verify = ca_file or True
        self._proxies = requests.utils.get_environ_proxies(self.endpoint)
        self._session.headers["User-Agent"] = "carehub-hub/1"
        self._session.headers["Accept-Encoding"] = "gzip"

        self.state: str | None = None  # ONLINE / OFFLINE / UNAUTHORISED once known
        self.clock_offset_s: float | None = None  # server wall clock minus ours, while unsynchronised
        self.failures = 0
        self.batch_limit = self.batch_max
        self._due_mono = clock.monotonic()
        self._loaded = False
        self._acks_seen: list[str] = []
        self._wake = asyncio.Event()
        self._urgent = False
        self._skew_retried = False
        self._backoff_saved = False
        self._store_failing = False
        self._held: dict[str, tuple[float, int]] = {}  # id -> (eligible again at, bytes): lone 413s
        self._in_flight: asyncio.Future | None = None
        self._stopping = False
        self._unsubscribe = None

    # --- lifecycle ------------------------------------------------------------------------
    async def run(self) -> None:
        """Syncs until ``stop()``: at once after progress, every ``interval_s`` when idle,
        after the backoff on failure, and at once when a priority-1 event is committed."""
        self._unsubscribe = self.store.subscribe(self._on_commit)
        try:
            while not self._stopping:
                try:
                    if not self._loaded:
                        await self._load()  # a persisted backoff applies before the first attempt
                        continue
                    wait_s = self._due_mono - self.clock.monotonic()
                    if wait_s > 0 and not self._urgent:
                        await self._wait(wait_s)
                        continue
                    self._urgent = False
                    await self.sync_once()
                    self._store_failing = False
                except asyncio.CancelledError:
                    if self._stopping:  # stop() abandoned the request in flight
                        break
                    raise
                except Exception as e:  # the store failed (disk): keep the loop, try again later
                    if not self._store_failing:
                        LOGGER.exception("sync paused: the store failed (%s); retrying", e)
                    self._store_failing = True
                    self.failures += 1
                    delay = self.backoff_s()
                    self._due_mono = self.clock.monotonic() + delay
                    await self._wait(delay)  # also before a retried _load
        finally:
            if callable(self._unsubscribe):
                self._unsubscribe()
            self._session.close()

    def stop(self) -> None:
        self._stopping = True
        if self._in_flight is not None and not self._in_flight.done():
            self._in_flight.cancel()
        self._wake.set()

    def _on_commit(self, event) -> None:
        if event.priority == 1:
            self._urgent = True
            self._wake.set()

    async def _wait(self, seconds: float) -> None:
        self._wake.clear()
        if self._urgent or self._stopping:
            return
        waker = asyncio.ensure_future(self._wake.wait())
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        try:
            await asyncio.wait({waker, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waker, sleeper):
                task.cancel()
            await asyncio.gather(waker, sleeper, return_exceptions=True)

    @property
    def due_in_s(self) -> float:
        return max(0.0, self._due_mono - self.clock.monotonic())

    # --- persisted schedule ---------------------------------------------------------------
    async def _load(self) -> None:
        """Restores the failure count and the next attempt from the store.

        The Pi has no RTC: the wall clock after a reboot may be stale (fake-hwclock) or jump
        when NTP syncs. So: within the same boot, the saved CLOCK_BOOTTIME deadline is exact;
        across a reboot, the wall-clock deadline is used but clamped to [0, the delay chosen
        when it was saved], so a wrong clock can make us retry early (one harmless request)
        but never wait longer than the backoff asked for.
        """
        if self._loaded:
            return
        seen = await self.store.get_state(STATE_ACKS_SEEN)
        if isinstance(seen, list):
            self._acks_seen = [s for s in seen if isinstance(s, str)][-ACKS_REMEMBERED:]
        saved = await self.store.get_state(STATE_NEXT)
        self._loaded = True
        if not isinstance(saved, dict):
            return
        self._backoff_saved = True
        try:
            self.failures = int(saved.get("failures", 0))
            delay_s = float(saved["delay_s"])
            if saved.get("boot_id") == self.boot_id:
                remaining = float(saved["due_mono"]) - self.clock.monotonic()
            else:
                remaining = float(saved["due_wall"]) - self.clock.now().timestamp()
            self._due_mono = self.clock.monotonic() + min(max(remaining, 0.0), delay_s)
            self.state = saved.get("state") or None
        except (KeyError, TypeError, ValueError):
            LOGGER.warning("ignoring an unreadable %s: %r", STATE_NEXT, saved)

    async def _schedule_failure(self, delay_s: float, state: str, error: str) -> None:
        self._due_mono = self.clock.monotonic() + delay_s
        self._backoff_saved = True
        await self.store.put_state(STATE_NEXT, {
            "failures": self.failures, "delay_s": delay_s, "due_mono": self._due_mono,
            "boot_id": self.boot_id, "due_wall": self.clock.now().timestamp() + delay_s,
            "due_at": format_utc(datetime.fromtimestamp(self.clock.now().timestamp() + delay_s, timezone.utc)),
            "state": state,
        })
        await self.store.put_state(STATE_LAST_ERROR, {"at": format_utc(self.clock.now()), "error": error})

    def backoff_s(self) -> float:
        """Full jitter: uniform(0, min(cap, base * 2**(failures-1)))."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** max(0, min(self.failures - 1, 40)))
        return self.rng.uniform(0, ceiling) if self.jitter else ceiling

    # --- status ---------------------------------------------------------------------------
    async def _set_state(self, state: str, detail: str) -> None:
        if state == self.state:
            return
        previous, self.state = self.state, state
        if state == ONLINE:
            LOGGER.info("community server %s at %s", "reachable again" if previous else "reached", self.url)
        elif state == UNAUTHORISED:
            LOGGER.error("community server refuses this hub's token (%s); keeping every event,"
                         " retrying every %.0f s — check server.token_file", detail, self.auth_backoff_s)
        elif state == TOO_LARGE:
            LOGGER.error("community server (or a proxy before it) refuses an event as too large (%s);"
                         " keeping it and retrying every %.0f s, the rest flows — its body limit must be"
                         " at least 1 MiB", detail, self.too_large_backoff_s)
        elif state == REDIRECTED:
            LOGGER.error("community server answered with a redirect (%s); not followed, every event"
                         " kept — set server.url to the final address", detail)
        else:
            LOGGER.warning("community server unreachable (%s); keeping events and retrying", detail)
        if self.on_status is not None:
            await _call(self.on_status, state, detail)
        LOGGER.debug("sync state %s -> %s", previous, state)
        since = format_utc(self.clock.now())
        await self.store.put_state(STATE_SYNC, {"state": state, "detail": detail, "since": since,
                                                "held_back": len(self._held)})
        if self.make_event is not None and not (previous is None and state == ONLINE):
            await self.store.commit(self.make_event(
                "device.status", {"device": "server", "state": state, "reason": detail, "url": self.url}, 3))

    # --- one attempt ----------------------------------------------------------------------
    async def sync_once(self) -> SyncResult:
        """Takes one batch, sends it, applies the results and schedules the next attempt."""
        await self._load()
        batch = await self._take()
        if not batch:
            now = self.clock.monotonic()
            waiting = [due for due, _ in self._held.values() if due > now]
            delay = min([self.interval_s] + [due - now for due in waiting])
            self._due_mono = now + delay
            return SyncResult("held" if waiting else "idle", delay_s=delay, kept=len(waiting))
        # JSON and gzip of up to 1 MiB take tens of ms on a Pi: off the loop, like the request.
        batch, raw_len, payload, headers = await self._in_thread(self._build, batch)
        result = SyncResult("sent", sent=len(batch), body_bytes=len(payload), raw_bytes=raw_len)
        try:
            resp = await self._in_thread(self._post, payload, headers)
        except requests.exceptions.SSLError as e:
            return await self._fail(result, None, f"TLS failed (certificate not trusted?): {_short(e)}", None)
        except (requests.RequestException, http.client.HTTPException, OSError, ReplyError) as e:
            if isinstance(e, ReplyError):
                kind = str(e)
            elif isinstance(e, requests.Timeout):
                kind = f"timeout: {type(e).__name__}"
            else:
                kind = f"connection error: {type(e).__name__}"
            return await self._fail(result, None, kind, None)
        result.status = resp.status
        server_now = _http_date(resp.headers.get("date"))
        if resp.status == 200:
            return await self._handle_200(result, batch, resp, server_now)
        if resp.status in AUTH_STATUS:
            return await self._handle_auth(result, resp, server_now, headers)
        if resp.status == 413:
            return await self._handle_413(result, batch, raw_len)
        self._learn_offset(server_now)
        if 300 <= resp.status < 400:
            where = resp.headers.get("location", "")[:200]
            what = f"HTTP {resp.status} redirect to {where!r}, not followed"
            return await self._fail(result, resp, what, server_now, state=REDIRECTED)
        what = f"HTTP {resp.status}" + ("" if resp.status in RETRYABLE_STATUS else " (unexpected)")
        return await self._fail(result, resp, what, server_now)

    async def _take(self) -> list[dict]:
        """The next batch, without the events held back after a lone 413 until they are due."""
        now = self.clock.monotonic()
        waiting = {i: size for i, (due, size) in self._held.items() if due > now}
        limit = self.batch_limit + len(waiting)
        raw = await self.store.take_batch(limit=limit,
                                          max_bytes=self.max_body_bytes - 256 + sum(waiting.values()))
        if self._held and len(raw) < limit:  # the whole queue was seen: forget ids no longer in it
            present = {e["id"] for e in raw}
            self._held = {i: v for i, v in self._held.items() if i in present}
        return [e for e in raw if e["id"] not in waiting][: self.batch_limit]

    def _build(self, batch: list[dict]) -> tuple[list[dict], int, bytes, dict]:
        raw = self._encode(batch)
        while len(raw) > self.max_body_bytes and len(batch) > 1:
            batch = batch[: len(batch) // 2]
            raw = self._encode(batch)
        payload, headers = self._prepare(raw)
        return batch, len(raw), payload, headers

    def _encode(self, batch: list[dict]) -> bytes:
        doc = {"hub_id": self.hub_id, "events": batch}
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()

    def _wall_now(self) -> datetime:
        now = self.clock.now()
        if self.clock_offset_s is not None and not self._clock_synced():
            return datetime.fromtimestamp(now.timestamp() + self.clock_offset_s, timezone.utc)
        return now

    def _prepare(self, raw: bytes) -> tuple[bytes, dict]:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self._token}"}
        payload = raw
        if len(raw) >= self.gzip_min_bytes:
            payload = gzip.compress(raw, compresslevel=6, mtime=0)
            headers["Content-Encoding"] = "gzip"
        timestamp = int(self._wall_now().timestamp())
        headers["X-CareHub-Timestamp"] = str(timestamp)
        headers["X-CareHub-Signature"] = sign(self._token, timestamp, payload)
        return payload, headers

    async def _in_thread(self, fn, *args):
        """``fn(*args)`` on a daemon thread; the loop awaits its future (see the module docstring)."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def settle(ok: bool, value) -> None:
            if fut.done():  # cancelled by stop()
                return
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

        def work() -> None:
            try:
                value, ok = fn(*args), True
            except BaseException as e:  # handed to the loop, raised there
                value, ok = e, False
            try:
                loop.call_soon_threadsafe(settle, ok, value)
            except RuntimeError:  # the loop is gone: the daemon is stopping, nothing to report to
                pass

        threading.Thread(target=work, name="carehub-upload", daemon=True).start()
        self._in_flight = fut
        try:
            return await fut
        finally:
            self._in_flight = None

    def _post(self, payload: bytes, headers: dict) -> _Response:
        """On the worker thread: the whole exchange, body read included."""
        started, complete = time.monotonic(), False
        r = self._session.post(self.endpoint, data=payload, headers=headers,
                               timeout=(min(self.timeout_s, 10.0), self.timeout_s),
                               allow_redirects=False, stream=True, verify=self._verify, proxies=self._proxies)
        try:
            headers = {k.lower(): v for k, v in r.headers.items()}
            try:
                content = _read_capped(r.raw, headers.get("content-encoding", ""), self.max_reply_bytes,
                                       deadline=started + self.timeout_s)
            except ReadTimeoutError as e:  # reading r.raw directly: urllib3's errors, not requests'
                raise requests.Timeout(e) from e
            except TransportError as e:
                raise requests.ConnectionError(e) from e
            complete = True
            return _Response(r.status_code, headers, content)
        finally:
            if not complete:  # the rest of a body we will not read: drop the connection
                r.raw.close()
            r.close()  # back to the pool (keep-alive) when the body was read to its end

    def _learn_offset(self, server_now: datetime | None, sent_at: datetime | None = None) -> None:
        if server_now is None:
            return
        local = sent_at or self.clock.now()
        self.clock_offset_s = (server_now - local).total_seconds()

    async def _handle_200(self, result, batch, resp, server_now) -> SyncResult:
        try:
            doc = json.loads(resp.content)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return await self._fail(result, None, "malformed JSON in a 200 reply", server_now)
        if not isinstance(doc, dict):
            return await self._fail(result, None, "a 200 reply that is not an object", server_now)
        precise = _rfc3339(doc.get("server_time"))
        self._learn_offset(precise or server_now)
        sent = {ev["id"] for ev in batch}
        verdicts: dict[str, tuple[str, str]] = {}
        for item in doc.get("results") if isinstance(doc.get("results"), list) else ():
            if isinstance(item, dict) and item.get("id") in sent and item.get("status") in (
                    "accepted", "duplicate", "rejected", "retry"):
                verdicts[item["id"]] = (item["status"], str(item.get("reason") or ""))
        delivered = [i for i, (s, _) in verdicts.items() if s in ("accepted", "duplicate")]
        rejected = [(i, r or "rejected by the server") for i, (s, r) in verdicts.items() if s == "rejected"]
        for i, _ in verdicts.items():
            if verdicts[i][0] != "retry":
                self._held.pop(i, None)
        if delivered:
            await self.store.forget(delivered)
        if rejected:
            await self.store.dead_letter(rejected)
            LOGGER.warning("server rejected %d event(s) for good, kept as dead letters; first: %s: %s",
                           len(rejected), rejected[0][0], rejected[0][1])
        result.delivered = len(delivered)
        result.duplicates = sum(1 for s, _ in verdicts.values() if s == "duplicate")
        result.rejected = len(rejected)
        result.kept = len(batch) - len(delivered) - len(rejected)
        result.acks = await self._deliver_acks(doc.get("acks"))
        if not delivered and not rejected:
            return await self._fail(result, None, "a 200 reply without usable results", server_now)
        self.failures = 0
        self.batch_limit = min(self.batch_max, self.batch_limit * 2)
        if self._held:
            await self._set_state(TOO_LARGE, f"{len(self._held)} event(s) held back after HTTP 413")
        else:
            await self._set_state(ONLINE, "HTTP 200")
        await self._record_success(len(delivered))
        # Progress made: go again at once (an all-"retry" remainder would have failed above).
        self._due_mono = self.clock.monotonic()
        result.delay_s = 0.0
        return result

    async def _record_success(self, delivered: int) -> None:
        if self._backoff_saved:
            await self.store.delete_state(STATE_NEXT)
            self._backoff_saved = False
        await self.store.put_state(STATE_LAST_SUCCESS, {
            "at": format_utc(self.clock.now()), "clock_synced": bool(self._clock_synced()),
            "delivered": delivered,
        })

    async def _deliver_acks(self, acks) -> int:
        if not isinstance(acks, list) or self.on_ack is None:
            return 0
        fresh = 0
        for ack in acks:
            if not isinstance(ack, dict) or not isinstance(ack.get("alert_id"), str):
                continue
            if ack["alert_id"] in self._acks_seen:
                continue
            try:
                await _call(self.on_ack, ack["alert_id"], str(ack.get("by") or "staff"), ack.get("at"))
            except Exception:  # the alert engine's problem must not stop the sync
                LOGGER.exception("on_ack failed for alert %s", ack["alert_id"])
                continue
            self._acks_seen = (self._acks_seen + [ack["alert_id"]])[-ACKS_REMEMBERED:]
            fresh += 1
        if fresh:
            await self.store.put_state(STATE_ACKS_SEEN, self._acks_seen)
        return fresh

    async def _handle_auth(self, result, resp, server_now, headers) -> SyncResult:
        # A hub with no RTC may sign with a stale clock: if the server's Date says our timestamp
        # was outside its tolerance, learn the offset and try again at once instead of waiting.
        sent_ts = int(headers["X-CareHub-Timestamp"])
        skewed = server_now is not None and abs(server_now.timestamp() - sent_ts) > SIGNATURE_TOLERANCE_S - 30
        retried, self._skew_retried = self._skew_retried, False
        if skewed and not retried:
            if not self._clock_synced():
                self._skew_retried = True
                self._learn_offset(server_now)
                LOGGER.warning("hub clock differs from the server's by %.0f s; signing with the server's time",
                               self.clock_offset_s)
                result.outcome = "failed"
                result.error = "clock skew"
                self._due_mono = self.clock.monotonic()
                return result
        self.failures += 1
        delay = self.auth_backoff_s * (0.5 + self.rng.random() / 2 if self.jitter else 1.0)
        detail = f"HTTP {resp.status}: {_reason(resp.content)}"
        result.outcome, result.error, result.delay_s = "unauthorised", detail, delay
        await self._set_state(UNAUTHORISED, detail)
        await self._schedule_failure(delay, UNAUTHORISED, detail)
        return result

    async def _handle_413(self, result, batch, raw_len: int) -> SyncResult:
        if len(batch) > 1:
            self.batch_limit = max(1, len(batch) // 2)
            LOGGER.debug("server says the batch is too large; sending %d events at a time", self.batch_limit)
            result.outcome = "too_large"
            self._due_mono = self.clock.monotonic()
            return result
        # Refused alone: a proxy's body limit, not the event's fault (each is within the spec's
        # 1 MiB). Keep it, hold it back for a long while, let the rest flow after a short backoff
        # (which grows if every event is refused: a proxy that answers 413 to everything).
        event_id = batch[0]["id"]
        hold_s = self.too_large_backoff_s * (0.5 + self.rng.random() / 2 if self.jitter else 1.0)
        if len(self._held) >= HELD_MAX and event_id not in self._held:
            self._held.pop(min(self._held, key=lambda i: self._held[i][0]))
        self._held[event_id] = (self.clock.monotonic() + hold_s, raw_len)
        self.failures += 1
        delay = self.backoff_s()
        detail = (f"HTTP 413 for event {event_id} alone ({raw_len} bytes); kept, retried in {hold_s:.0f} s;"
                  f" {len(self._held)} event(s) held back")
        result.outcome, result.error, result.delay_s, result.kept = "too_large", detail, delay, 1
        await self._set_state(TOO_LARGE, detail)
        await self._schedule_failure(delay, TOO_LARGE, detail)
        return result

    async def _fail(self, result, resp, what: str, server_now, state: str = OFFLINE) -> SyncResult:
        self.failures += 1
        delay = self.backoff_s()
        retry_after = parse_retry_after(resp.headers.get("retry-after") if resp else None, server_now)
        if retry_after is not None:
            # Honour the server's minimum, spread a little so a fleet does not return as one.
            retry_after = min(retry_after, self.backoff_max_s)
            spread = max(1.0, 0.1 * retry_after)
            delay = retry_after + (self.rng.uniform(0, spread) if self.jitter else 0.0)
        result.outcome, result.error, result.delay_s = "failed", what, delay
        result.kept = result.sent - result.delivered - result.rejected
        await self._set_state(state, what)
        await self._schedule_failure(delay, state, what)
        return result


def _read_capped(raw, encoding: str, cap: int, deadline: float) -> bytes:
    """At most ``cap`` bytes of body, decoded; ReplyError past that or past ``deadline``.

    The raw stream is read without urllib3's decoding so that a small gzip body cannot expand
    to gigabytes in one read: decompression is bounded here too.
    """
    encoding = encoding.strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
        raise ReplyError(f"reply in Content-Encoding {encoding!r}, which the hub did not ask for")
    chunks, total = [], 0
    while True:
        chunk = raw.read(64 * 1024, decode_content=False)
        if not chunk:
            break
        total += len(chunk)
        if total > cap:
            raise ReplyError(f"reply over {cap} bytes, not read further")
        if time.monotonic() > deadline:
            raise ReplyError("reply took longer than server.timeout to read")
        chunks.append(chunk)
    body = b"".join(chunks)
    if encoding in ("", "identity"):
        return body
    d = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib, detected from the header
    try:
        out = d.decompress(body, cap + 1)
    except zlib.error as e:
        raise ReplyError(f"reply is not valid {encoding}: {e}") from None
    if len(out) > cap or d.unconsumed_tail:
        raise ReplyError(f"reply over {cap} bytes once decompressed, not read further")
    return out


def _short(e: Exception) -> str:
    text = str(e)
    for marker in ("certificate verify failed", "CERTIFICATE_VERIFY_FAILED"):
        if marker in text:
            return "certificate verify failed" + text.split(marker, 1)[1].split(")", 1)[0]
    return text[:160]


def _reason(content: bytes) -> str:
    try:
        doc = json.loads(content)
        return str(doc.get("error") or doc)[:200] if isinstance(doc, dict) else str(doc)[:200]
    except (UnicodeDecodeError, json.JSONDecodeError):
        return content[:200].decode("utf-8", "replace")


async def _call(fn, *args):
    out = fn(*args)
    if inspect.isawaitable(out):
        await out
