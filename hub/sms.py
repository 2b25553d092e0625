"""Bound phones: what to text, to whom, when, and what a reply means. Pure: no serial I/O.

The modem link (``drivers.modem.link``) moves the bytes; this module decides. Its memory is a
plain dict (``new_state()``), committed with ``Store.put_state(STATE_KEY, ...)`` so that one
alert texts each phone once, across restarts too. Every function returns a new dict and never
changes the one it was given.

Durations come from the caller's monotonic clock (``since_raised_s``); the wall clock is used
only for what a person reads (the time in the text) and for daily windows (quiet hours, the
per-day count), as everywhere else in the hub.
"""

from __future__ import annotations

import copy
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

STATE_KEY = "sms.state"
STATE_VERSION = 1
ALERT_NOTIFIED = "alert.notified"
SMS, CALL = "sms", "call"
MAX_REMEMBERED_ALERTS = 200   # bounds the state: oldest closed alerts are forgotten first

# Results recorded per phone and alert. FINAL ones are never sent again for that alert.
SENT, FAILED, PENDING = "sent", "failed", "pending"
FINAL = (SENT, FAILED)

# Why a phone was not texted (yet).
WAITING_FOR_SERVER = "waiting_for_server"   # when = fallback, fallback_after not reached
SERVER_HAS_IT = "server_accepted"           # when = fallback and the server took the alert
QUIET_HOURS = "quiet_hours"
ALERT_LIMIT = "rate_limit_alert"
DAY_LIMIT = "rate_limit_day"

RULE_LABELS = {
    "sos": ("SOS求助", "SOS pressed"),
    "fall": ("跌倒报警", "fall detected"),
    "night_bed_exit": ("夜间离床未归", "out of bed too long at night"),
    "vitals_absent": ("卧床无生命体征", "no vital signs in bed"),
    "hr_high": ("心率过高", "heart rate high"),
    "hr_low": ("心率过低", "heart rate low"),
    "rr_high": ("呼吸过快", "breathing fast"),
    "rr_low": ("呼吸过慢", "breathing slow"),
    "not_up": ("早上未起床", "not up this morning"),
    "stuck_in_bed": ("长时间卧床", "in bed far too long"),
    "daytime_stillness": ("白天长时间不动", "no movement for hours"),
    "no_sign_of_life": ("长时间无活动迹象", "no sign of life"),
    "belt_offline": ("床垫传感器离线", "bed sensor offline"),
    "watch_offline": ("手表离线", "watch offline"),
    "watch_battery_low": ("手表电量低", "watch battery low"),
}
PRIORITY_LABELS = {1: ("【紧急】", "URGENT: "), 2: ("【提醒】", "WARNING: "), 3: ("【设备】", "INFO: ")}


@dataclass(frozen=True)
class Phone:
    number: str
    name: str
    priorities: tuple
    call: bool = False


@dataclass(frozen=True)
class Settings:
    """What the texts and choices need, from ``[sms]`` and ``[hub]``."""

    phones: tuple
    resident: str
    address: str
    tz: ZoneInfo
    when: str = "fallback"
    fallback_after_s: float = 60.0
    quiet_hours: object = None          # a configtypes.Window, or None
    max_per_alert: int = 10
    max_per_day: int = 100
    ack_words: tuple = ("OK", "1")
    language: str = "zh"
    map_url: str = "https://www.openstreetmap.org/?mlat={lat}&mlon={lon}&zoom=17"
    call_hangup_after_s: float = 30.0

    @classmethod
    def from_config(cls, cfg: dict) -> "Settings":
        sms, hub = cfg["sms"], cfg["hub"]
        resident = sms["resident_name"] or hub["resident_id"]
        if sms["resident_name"]:
            resident = f"{sms['resident_name']}({hub['resident_id']})"
        phones = tuple(Phone(p["number"], p["name"], tuple(p["priorities"]), p["call"])
                       for p in sms["phones"])
        return cls(phones, resident, sms["address"], ZoneInfo(hub["timezone"]), sms["when"],
                   sms["fallback_after"], sms["quiet_hours"], sms["max_per_alert"],
                   sms["max_per_day"], tuple(sms["ack_words"]), sms["language"], sms["map_url"],
                   sms["call_hangup_after"])

    def phone(self, number: str) -> Phone | None:
        return next((p for p in self.phones if p.number == number), None)


# --- the state ---------------------------------------------------------------------------------
def new_state() -> dict:
    return {"v": STATE_VERSION, "alerts": {}, "day": "", "day_count": 0, "unknown_senders": 0,
            "replies_ignored": 0}


def load_state(saved) -> dict:
    """A saved state, or a fresh one when it is absent or from another version."""
    if not isinstance(saved, dict) or saved.get("v") != STATE_VERSION:
        return new_state()
    state = new_state()
    state.update(copy.deepcopy(saved))
    return state


def _alert_entry(state: dict, alert_id: str) -> dict:
    return state["alerts"].setdefault(alert_id, {"sms": {}, "call": {}, "count": 0,
                                                 "acked_by": None, "order": _next_order(state)})


def _next_order(state: dict) -> int:
    return 1 + max((a.get("order", 0) for a in state["alerts"].values()), default=0)


# --- composing ---------------------------------------------------------------------------------
def _parse_time(value) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def _age(seconds: float, zh: bool) -> str:
    seconds = max(0, int(seconds))
    if seconds < 90:
        return f"{seconds}秒前" if zh else f"{seconds} s ago"
    if seconds < 2 * 3600:
        return f"{round(seconds / 60)}分钟前" if zh else f"{round(seconds / 60)} min ago"
    return f"{seconds / 3600:.1f}小时前" if zh else f"{seconds / 3600:.1f} h ago"


def map_link(settings: Settings, location: dict) -> str | None:
    try:
        lat, lon = float(location["lat"]), float(location["lon"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return settings.map_url.format(lat=f"{lat:.5f}", lon=f"{lon:.5f}")


def compose(alert: dict, settings: Settings, *, since_raised_s: float = 0.0) -> str:
    """The text for one alert: what, who, where, when, the watch's last fix, how to answer.

    ``alert`` is the ``alert.raised`` data plus ``raised_at`` (its event's ``occurred_at``).
    ``since_raised_s`` (monotonic) ages the location fix, which was ``age_s`` old at raising.
    """
    zh = settings.language == "zh"
    i = 0 if zh else 1
    rule = alert.get("rule", "")
    label = RULE_LABELS.get(rule, (rule, rule))[i]
    if not zh and alert.get("message"):
        label = alert["message"]
    head = PRIORITY_LABELS.get(alert.get("priority", 1), PRIORITY_LABELS[1])[i]
    raised = _parse_time(alert.get("raised_at"))
    when = raised.astimezone(settings.tz).strftime("%m-%d %H:%M") if raised else ""
    parts = [f"{head}{settings.resident} {label}" + (f" {when}" if when else "")]
    if settings.address:
        parts.append(("地址：" if zh else "Address: ") + settings.address)
    location = (alert.get("details") or {}).get("location")
    if isinstance(location, dict):
        link = map_link(settings, location)
        if link:
            age = _age(float(location.get("age_s") or 0) + max(0.0, since_raised_s), zh)
            acc = location.get("accuracy_m")
            acc_txt = ""
            if isinstance(acc, (int, float)) and not isinstance(acc, bool):
                acc_txt = f"，±{acc:.0f}米" if zh else f", ±{acc:.0f} m"
            parts.append((f"位置（{age}{acc_txt}）：" if zh else f"Location ({age}{acc_txt}): ") + link)
    words = settings.ack_words
    if zh:
        parts.append("回复" + "或".join(words) + "表示您去处理")
    else:
        parts.append("Reply " + " or ".join(words) + " if you are going")
    return ("。" if zh else ". ").join(parts) + ("。" if zh else ".")


# --- choosing ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Delivery:
    """Send this now (then record its result)."""

    alert_id: str
    channel: str
    phone: Phone
    text: str = ""


@dataclass(frozen=True)
class Held:
    """Not now: ``reason``; ``after_s`` says when planning again may change that (None: never)."""

    alert_id: str
    phone: Phone
    reason: str
    after_s: float | None = None


@dataclass(frozen=True)
class Plan:
    deliveries: tuple
    held: tuple

    @property
    def wake_after_s(self) -> float | None:
        waits = [h.after_s for h in self.held if h.after_s is not None]
        return min(waits) if waits else None


def _day_count(state: dict, now: datetime, tz) -> int:
    return state["day_count"] if state["day"] == now.astimezone(tz).date().isoformat() else 0


def _seconds_to_window_end(window, local: datetime) -> float:
    end = local.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(minutes=window.end_min)
    if end <= local:
        end += timedelta(days=1)
    return (end - local).total_seconds()


def plan(alert: dict, settings: Settings, state: dict, *, now: datetime, since_raised_s: float,
         server_accepted: bool = False) -> Plan:
    """Who gets a text (and a ring) for this alert now, and who not yet and why.

    Priority 1 ignores quiet hours and the daily cap (an SOS must not wait for the morning),
    but not the per-alert cap. A phone texted (or refused for good) for this alert is skipped.
    """
    alert_id, priority = alert["alert_id"], alert.get("priority", 1)
    entry = state["alerts"].get(alert_id, {"sms": {}, "call": {}, "count": 0})
    deliveries, held = [], []
    phones = [p for p in settings.phones if priority in p.priorities]
    if entry.get("acked_by"):
        return Plan((), ())
    local = now.astimezone(settings.tz)
    quiet = (priority >= 2 and settings.quiet_hours is not None
             and settings.quiet_hours.contains_time(local))
    count = entry.get("count", 0)
    day = _day_count(state, now, settings.tz)
    text = None
    for phone in phones:
        if entry["sms"].get(phone.number, {}).get("result") in FINAL:
            continue
        if settings.when == "fallback":
            if server_accepted:
                held.append(Held(alert_id, phone, SERVER_HAS_IT))
                continue
            if since_raised_s < settings.fallback_after_s:
                held.append(Held(alert_id, phone, WAITING_FOR_SERVER,
                                 settings.fallback_after_s - since_raised_s))
                continue
        if quiet:
            held.append(Held(alert_id, phone, QUIET_HOURS,
                             _seconds_to_window_end(settings.quiet_hours, local)))
            continue
        if count >= settings.max_per_alert:
            held.append(Held(alert_id, phone, ALERT_LIMIT))
            continue
        if priority >= 2 and day >= settings.max_per_day:
            held.append(Held(alert_id, phone, DAY_LIMIT, _seconds_to_midnight(local)))
            continue
        text = text or compose(alert, settings, since_raised_s=since_raised_s)
        deliveries.append(Delivery(alert_id, SMS, phone, text))
        count += 1
        day += 1
        if priority == 1 and phone.call and phone.number not in entry["call"]:
            deliveries.append(Delivery(alert_id, CALL, phone))
    return Plan(tuple(deliveries), tuple(held))


def _seconds_to_midnight(local: datetime) -> float:
    tomorrow = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - local).total_seconds()


def record(state: dict, delivery: Delivery, result: str, *, now: datetime, tz) -> dict:
    """The state after an attempt. ``result``: for texts "pending" (before sending: a restart
    then sends again), "sent", "failed" (for good), or a temporary one ("retry", "timeout");
    for calls the call's outcome."""
    state = copy.deepcopy(state)
    entry = _alert_entry(state, delivery.alert_id)
    at = now.isoformat(timespec="seconds")
    if delivery.channel == CALL:
        entry["call"][delivery.phone.number] = {"result": result, "at": at}
        return state
    prev = entry["sms"].get(delivery.phone.number, {})
    if prev.get("result") in FINAL:
        return state
    entry["sms"][delivery.phone.number] = {"result": result, "at": at,
                                           "attempts": prev.get("attempts", 0) + (result != PENDING)}
    if result == SENT:
        entry["count"] += 1
        day = now.astimezone(tz).date().isoformat()
        if state["day"] != day:
            state["day"], state["day_count"] = day, 0
        state["day_count"] += 1
    return state


def notified_data(delivery: Delivery, result: str, **extra) -> dict:
    """The ``alert.notified`` event data for one attempt (interfaces v1.1)."""
    data = {"alert_id": delivery.alert_id, "channel": delivery.channel,
            "to": delivery.phone.number, "result": result}
    if delivery.phone.name:
        data["name"] = delivery.phone.name
    data.update({k: v for k, v in extra.items() if v is not None})
    return data


def forget(state: dict, open_alert_ids) -> dict:
    """Drop closed alerts beyond the newest ``MAX_REMEMBERED_ALERTS`` (open ones are kept)."""
    open_ids = set(open_alert_ids)
    alerts = state["alerts"]
    if len(alerts) <= MAX_REMEMBERED_ALERTS:
        return state
    state = copy.deepcopy(state)
    closed = sorted((a for a in state["alerts"] if a not in open_ids),
                    key=lambda a: state["alerts"][a].get("order", 0))
    for alert_id in closed[:len(state["alerts"]) - MAX_REMEMBERED_ALERTS]:
        del state["alerts"][alert_id]
    return state


# --- replies -----------------------------------------------------------------------------------
ACK, NOT_AN_ACK, NOTHING_TO_ACK, UNKNOWN_SENDER = "ack", "not_an_ack", "nothing_to_ack", "unknown_sender"
_NOISE_RE = re.compile(r"[\s\W_]+", re.UNICODE)


@dataclass(frozen=True)
class Reply:
    kind: str
    sender: str
    phone: Phone | None = None
    alert_id: str | None = None

    @property
    def by(self) -> str:
        """The ``by`` of the acknowledgement: the same shape as a staff ack from the server."""
        name = f" ({self.phone.name})" if self.phone and self.phone.name else ""
        return f"sms:{self.phone.number if self.phone else self.sender}{name}"


def normalise_word(text: str) -> str:
    """NFKC (full-width ＯＫ becomes OK), no spaces or punctuation, upper case."""
    return _NOISE_RE.sub("", unicodedata.normalize("NFKC", text)).upper()


def _digits(number: str) -> str:
    return "".join(ch for ch in number if ch.isdigit())


# ITU-T E.164 country codes: 1 and 7 are one digit, these two, all others three.
_TWO_DIGIT_CC = frozenset("20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 "
                          "57 58 60 61 62 63 64 65 66 81 82 84 86 90 91 92 93 94 95 98".split())


def national_number(e164: str) -> str:
    digits = _digits(e164)
    cc = 1 if digits[:1] in ("1", "7") else 2 if digits[:2] in _TWO_DIGIT_CC else 3
    return digits[cc:]


def same_number(e164: str, sender: str) -> bool:
    """A sender as networks show it (+86…, 0086…, 86…, or the national number, maybe with a
    trunk 0) against a configured E.164 number. Alphanumeric senders never match."""
    want, got = _digits(e164), _digits(sender)
    if not got or any(ch.isalpha() for ch in sender):
        return False
    if got.startswith("00"):
        got = got[2:]
    return got == want or got.lstrip("0") == national_number(e164).lstrip("0")


def match_phone(settings: Settings, sender: str) -> Phone | None:
    return next((p for p in settings.phones if same_number(p.number, sender)), None)


def parse_reply(sender: str, text: str, settings: Settings, state: dict, open_alert_ids,
                *, alphanumeric: bool = False) -> Reply:
    """What a text received from ``sender`` means.

    An ack word from a bound phone acknowledges the newest open alert that phone was texted
    about. A bound phone saying something else is ``not_an_ack`` (logged, kept for people);
    anyone else is an ``unknown_sender`` (ignored and counted).
    """
    phone = None if alphanumeric else match_phone(settings, sender)
    if phone is None:
        return Reply(UNKNOWN_SENDER, sender)
    words = {normalise_word(w) for w in settings.ack_words}
    if normalise_word(text) not in words:
        return Reply(NOT_AN_ACK, sender, phone)
    open_ids = set(open_alert_ids)
    texted = [(entry.get("order", 0), alert_id) for alert_id, entry in state["alerts"].items()
              if alert_id in open_ids and not entry.get("acked_by")
              and entry["sms"].get(phone.number, {}).get("result") == SENT]
    if not texted:
        return Reply(NOTHING_TO_ACK, sender, phone)
    return Reply(ACK, sender, phone, max(texted)[1])


def record_reply(state: dict, reply: Reply) -> dict:
    state = copy.deepcopy(state)
    if reply.kind == UNKNOWN_SENDER:
        state["unknown_senders"] += 1
    elif reply.kind in (NOT_AN_ACK, NOTHING_TO_ACK):
        state["replies_ignored"] += 1
    elif reply.kind == ACK:
        _alert_entry(state, reply.alert_id)["acked_by"] = reply.phone.number
    return state
