"""Bound phones in the running hub: committed alerts in, texts (and rings) out, "OK" replies in.

``hub/sms.py`` decides who is texted and what a reply means; ``drivers.modem.link`` moves the
bytes; this is the glue, in a task of its own so that a modem that is missing, silent, locked
or rebooting never holds up the pipeline, the store or the uploader. It hears every committed
event through ``AsyncStore.subscribe``, keeps its memory (``sms.state``) in the store, commits an
``alert.notified`` event for every attempt, and hands an acknowledging reply to the rules as the
same ``StaffAck`` a staff acknowledgement from the server becomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from datetime import datetime
from typing import Callable, Mapping

from hub import sms

LOGGER = logging.getLogger(__name__)

CLOSING = frozenset(("alert.resolved", "alert.cancelled"))
SEND_DEADLINE_S = 120.0   # one send_text's retries; then the alerts are planned again
REPLAN_S = 1.0            # held texts are looked at again this often (real seconds)
CALL_RETRY_S = 60.0       # a ring that could not start is tried again after this long


class PhoneNotifier:
    """``run()`` until ``stop()``; the link's ``on_message`` is ``self.incoming``."""

    def __init__(self, settings: sms.Settings, link, store, factory, clock, *,
                 on_ack: Callable[[str, str, str | None], None],
                 send_deadline_s: float = SEND_DEADLINE_S, replan_s: float = REPLAN_S):
        self.settings = settings
        self.link = link
        self.store = store
        self.factory = factory
        self.clock = clock
        self.on_ack = on_ack
        self.send_deadline_s = send_deadline_s
        self.replan_s = replan_s
        self.state = sms.new_state()
        self.raised_mono: dict[str, float] = {}   # alert_id -> the clock's monotonic at raising
        self._call_after: dict[tuple, float] = {}
        self._told: dict[tuple, str] = {}          # (alert, phone) -> the last result committed
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._loaded = False
        self._dirty = False                        # state changed by events, not yet saved
        self._early: list = []                     # events heard before the state was loaded
        self._lock = asyncio.Lock()                # state changes from the sender and the replies

    # --- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> None:
        self.state = sms.load_state(await self.store.get_state(sms.STATE_KEY))
        now_wall, now_mono = self.clock.now(), self.clock.monotonic()
        for alert_id, entry in self.state["alerts"].items():   # alerts open before a restart
            raised = sms._parse_time((entry.get("alert") or {}).get("raised_at"))
            age = (now_wall - raised).total_seconds() if raised else 0.0
            self.raised_mono[alert_id] = now_mono - max(0.0, age)
        self._loaded = True
        for event in self._early:
            self.committed(event)
        self._early.clear()
        link_task = asyncio.create_task(self.link.run(), name="modem")
        try:
            failing = None
            while not self._stopped.is_set():
                self._wake.clear()
                try:
                    await self._round()
                    failing = None
                except Exception as e:  # a store error: keep trying, tell it once
                    if repr(e) != failing:
                        LOGGER.exception("notifying bound phones failed, will retry")
                    failing = repr(e)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.replan_s)
        finally:
            self.link.stop()
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(link_task), 2.0)
            link_task.cancel()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        self.link.stop()

    # --- what the store commits --------------------------------------------------------------
    def committed(self, event) -> None:
        """An ``AsyncStore.subscribe`` listener: runs on the loop, never blocks."""
        if not event.type.startswith("alert."):
            return
        if not self._loaded:
            self._early.append(event)
            return
        data = event.data
        alert_id = data.get("alert_id")
        if not alert_id:
            return
        entries = self.state["alerts"]
        if event.type == "alert.raised":
            if alert_id in entries and entries[alert_id].get("alert"):
                return
            self.state = copy.deepcopy(self.state)
            entry = sms._alert_entry(self.state, alert_id)
            entry["alert"] = {**{k: _plain(data.get(k)) for k in ("alert_id", "rule", "priority",
                                                                  "message", "details")},
                              "raised_at": event.occurred_at}
            entry["event_id"] = event.id
            self.raised_mono[alert_id] = self.clock.monotonic()
        elif alert_id not in entries or not entries[alert_id].get("alert"):
            return
        elif event.type == "alert.escalated" and data.get("priority"):
            self.state = copy.deepcopy(self.state)
            self.state["alerts"][alert_id]["alert"]["priority"] = data["priority"]
        elif event.type == "alert.acknowledged":
            self.state = copy.deepcopy(self.state)
            self.state["alerts"][alert_id]["acked_by"] = self.state["alerts"][alert_id].get(
                "acked_by") or data.get("by") or "staff"
        elif event.type in CLOSING:
            self.state = copy.deepcopy(self.state)
            self.state["alerts"][alert_id]["closed"] = True
        else:
            return
        self._dirty = True
        self._wake.set()

    def open_alert_ids(self) -> list[str]:
        return [a for a, e in self.state["alerts"].items()
                if e.get("alert") and not e.get("closed") and not e.get("acked_by")]

    # --- sending -----------------------------------------------------------------------------
    async def _round(self) -> None:
        """Plan every open alert (priority 1 first) and make the deliveries that are due; then
        save what events changed, unless a delivery's commit already did (one fsync spared)."""
        open_ids = sorted(self.open_alert_ids(), key=lambda a: (
            self.state["alerts"][a]["alert"].get("priority") or 1, self.state["alerts"][a]["order"]))
        for alert_id in open_ids:
            if self._stopped.is_set():
                return
            entry = self.state["alerts"].get(alert_id)
            if entry is None or entry.get("acked_by") or entry.get("closed"):
                continue
            alert = entry["alert"]
            since = self.clock.monotonic() - self.raised_mono.get(alert_id, self.clock.monotonic())
            accepted = bool(entry.get("server_accepted"))
            if self.settings.when == "fallback" and since >= self.settings.fallback_after_s \
                    and not accepted:
                accepted = not await self.store.is_pending(entry.get("event_id", ""))
                if accepted:   # once accepted, always: no more store reads for this alert
                    entry["server_accepted"] = True
                    self._dirty = True
            plan = sms.plan(alert, self.settings, self.state, now=self.clock.now(),
                            since_raised_s=since, server_accepted=accepted)
            for delivery in plan.deliveries:
                current = self.state["alerts"].get(alert_id, {})
                if self._stopped.is_set() or current.get("acked_by") or current.get("closed"):
                    break
                if delivery.channel == sms.SMS:
                    await self._text(delivery)
                else:
                    await self._ring(delivery)
        if len(self.state["alerts"]) > sms.MAX_REMEMBERED_ALERTS:
            self.state = sms.forget(self.state, self.open_alert_ids())
            self._dirty = True
        if self._dirty:
            async with self._lock:
                self._dirty = False
                await self.store.put_state(sms.STATE_KEY, self.state)

    async def _record(self, delivery, result: str, *, event_data: dict | None = None) -> None:
        async with self._lock:
            self.state = sms.record(self.state, delivery, result, now=self.clock.now(),
                                    tz=self.settings.tz)
            state = {sms.STATE_KEY: self.state}
            self._dirty = False
            if event_data is None:
                await self.store.put_state(sms.STATE_KEY, self.state)
            else:
                await self.store.commit(self.factory.make(sms.ALERT_NOTIFIED, event_data), state=state)

    def _still_wanted(self, alert_id: str) -> bool:
        entry = self.state["alerts"].get(alert_id, {})
        return not (self._stopped.is_set() or entry.get("acked_by") or entry.get("closed"))

    async def _text(self, delivery) -> None:
        # While the modem is not usable, the alert may be acknowledged or resolved: then no text.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.send_deadline_s
        while not await self.link.wait_usable(min(self.replan_s, max(0.0, deadline - loop.time()))):
            if not self._still_wanted(delivery.alert_id):
                return
            if loop.time() >= deadline:
                break
        if not self._still_wanted(delivery.alert_id):
            return
        await self._record(delivery, sms.PENDING)   # a restart from here on sends again

        async def attempt(r) -> None:
            key = (delivery.alert_id, delivery.phone.number)
            told, self._told[key] = self._told.get(key), r.result
            if r.result == "timeout" and told == "timeout":
                await self._record(delivery, r.result)   # a modem still down: told once
                return
            data = sms.notified_data(delivery, r.result, attempt=r.attempt, code=r.code,
                                     reason=r.reason or None, parts=len(r.refs) or None)
            await self._record(delivery, r.result, event_data=data)

        r = await self.link.send_text(delivery.phone.number, delivery.text,
                                      deadline_s=max(0.0, deadline - loop.time()) or 0.001,
                                      on_attempt=attempt)
        if r.ok:
            LOGGER.info("alert %s texted to %s", delivery.alert_id, delivery.phone.name or delivery.phone.number)

    async def _ring(self, delivery) -> None:
        key = (delivery.alert_id, delivery.phone.number)
        if self.clock.monotonic() < self._call_after.get(key, -1e18):
            return
        if self.link.state not in _usable():
            self._call_after[key] = self.clock.monotonic() + CALL_RETRY_S
            return
        result = await self.link.dial(delivery.phone.number, self.settings.call_hangup_after_s)
        await self._record(delivery, result, event_data=sms.notified_data(delivery, result))

    # --- replies -----------------------------------------------------------------------------
    async def incoming(self, message) -> None:
        """The link's ``on_message``: returns once the reply's effect is committed (the link then
        deletes the text from the SIM)."""
        async with self._lock:
            reply = sms.parse_reply(message.sender, message.text, self.settings, self.state,
                                    self.open_alert_ids(), alphanumeric=message.alphanumeric_sender)
            self.state = sms.record_reply(self.state, reply)
            await self.store.put_state(sms.STATE_KEY, self.state)
        if reply.kind == sms.ACK:
            LOGGER.info("alert %s acknowledged by reply from %s", reply.alert_id, reply.by)
            at = message.sent_at.isoformat() if isinstance(message.sent_at, datetime) else None
            self.on_ack(reply.alert_id, reply.by, at)
        elif reply.kind == sms.UNKNOWN_SENDER:
            LOGGER.info("text from an unknown sender ignored (%d so far)", self.state["unknown_senders"])
        else:
            LOGGER.info("text from %s is not an acknowledgement (%s)", reply.by, reply.kind)


def _plain(value):
    """Event data (read-only mappings, tuples) as JSON-ready dicts and lists."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _usable():
    from drivers.modem.link import USABLE
    return USABLE


def read_pin(path: str) -> str | None:
    """The SIM PIN from ``pin_file`` (check-config validated it), or None."""
    from hub.config import read_secret
    return (read_secret(path) or None) if path else None


def build_link(sms_cfg: dict, *, on_status, on_message=None, reset=None, voice=False, **options):
    """The modem link as ``[sms]`` asks (the one place a ModemLink is made from config)."""
    from drivers.modem.link import ModemLink
    return ModemLink(sms_cfg["port"], on_status=on_status, on_message=on_message,
                     pin=read_pin(sms_cfg["pin_file"]), baudrate=sms_cfg["baudrate"], reset=reset,
                     validity_s=sms_cfg["validity"], voice=voice, **options)


def build_reset(sms_cfg: dict, pin_factory):
    """The modem's reset/PWRKEY line on GPIO, or None (``reset_gpio = -1``)."""
    if sms_cfg["reset_gpio"] < 0:
        return None
    from gpiozero import DigitalOutputDevice
    try:
        line = DigitalOutputDevice(sms_cfg["reset_gpio"], pin_factory=pin_factory)
    except Exception as e:  # no GPIO here, pin taken: the link still resyncs and re-initialises
        LOGGER.error("modem reset line on GPIO %s unavailable: %s", sms_cfg["reset_gpio"], e)
        return None

    async def pulse() -> None:
        line.on()
        try:
            await asyncio.sleep(sms_cfg["reset_pulse"])
        finally:
            line.off()
    return pulse
