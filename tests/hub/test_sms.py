"""The bound-phone logic: the texts, who gets them and when, and what a reply means."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from hub import config, sms
from hub.configtypes import parse_window
from tests.conftest import EXAMPLE

CST = ZoneInfo("Asia/Shanghai")
DESK = sms.Phone("+8613800000000", "Duty desk", (1, 2), call=True)
DAUGHTER = sms.Phone("+8613900000000", "Daughter", (1,))
NOON = datetime(2026, 12, 1, 12, 0, tzinfo=CST)
NIGHT = datetime(2026, 12, 1, 23, 30, tzinfo=CST)


def settings(**kw) -> sms.Settings:
    base = dict(phones=(DESK, DAUGHTER), resident="王芳(R-1017)", address="花园路88号5栋302",
                tz=CST, when="always", quiet_hours=parse_window("22:00-07:00"))
    base.update(kw)
    return sms.Settings(**base)


def sos(alert_id="A1", priority=1, **kw) -> dict:
    alert = {"alert_id": alert_id, "rule": "sos", "priority": priority, "message": "SOS pressed on the watch",
             "details": {"source": "watch", "location": {"lat": 31.230416, "lon": 121.473701,
                                                         "accuracy_m": 15, "age_s": 40}},
             "raised_at": "2026-12-01T14:14:05.120Z"}
    alert.update(kw)
    return alert


# --- texts -----------------------------------------------------------------------------------
def test_chinese_text_says_what_who_where_when_and_how_to_answer():
    text = sms.compose(sos(), settings(), since_raised_s=20)
    assert text == ("【紧急】王芳(R-1017) SOS求助 12-01 22:14。地址：花园路88号5栋302。"
                    "位置（60秒前，±15米）：https://www.openstreetmap.org/?mlat=31.23042&mlon=121.47370&zoom=17。"
                    "回复OK或1表示您去处理。")


def test_english_text_uses_the_alerts_message():
    text = sms.compose(sos(), settings(language="en", ack_words=("OK",)), since_raised_s=300)
    assert text == ("URGENT: 王芳(R-1017) SOS pressed on the watch 12-01 22:14. Address: 花园路88号5栋302. "
                    "Location (6 min ago, ±15 m): https://www.openstreetmap.org/?mlat=31.23042&mlon=121.47370&zoom=17. "
                    "Reply OK if you are going.")


def test_no_fix_no_link_and_bad_fixes_are_left_out():
    assert "位置" not in sms.compose(sos(details={"source": "panel"}), settings())
    assert "位置" not in sms.compose(sos(details={"location": {"lat": 123, "lon": 0}}), settings())
    assert "位置" not in sms.compose(sos(details={"location": {"lat": "x"}}), settings())


def test_every_rule_has_a_label_in_both_languages():
    from hub.rules.params import RULES_SCHEMA
    assert set(RULES_SCHEMA) <= set(sms.RULE_LABELS)


def test_a_short_alert_text_fits_one_or_two_sms():
    from drivers.modem import pdu
    text = sms.compose(sos(details={}), settings())
    assert len(pdu.encode_submit("+8613800000000", text)) <= 2


# --- choosing phones ---------------------------------------------------------------------------
def numbers(plan, channel=sms.SMS):
    return [d.phone.number for d in plan.deliveries if d.channel == channel]


def test_always_texts_every_phone_that_takes_the_priority_and_rings_the_callers():
    p = sms.plan(sos(), settings(), sms.new_state(), now=NOON, since_raised_s=0)
    assert numbers(p) == [DESK.number, DAUGHTER.number]
    assert numbers(p, sms.CALL) == [DESK.number]
    p2 = sms.plan(sos(priority=2), settings(), sms.new_state(), now=NOON, since_raised_s=0)
    assert numbers(p2) == [DESK.number] and numbers(p2, sms.CALL) == []


def test_fallback_waits_for_the_server_then_texts():
    s = settings(when="fallback", fallback_after_s=60)
    early = sms.plan(sos(), s, sms.new_state(), now=NOON, since_raised_s=10)
    assert early.deliveries == () and {h.reason for h in early.held} == {sms.WAITING_FOR_SERVER}
    assert early.wake_after_s == 50
    accepted = sms.plan(sos(), s, sms.new_state(), now=NOON, since_raised_s=120, server_accepted=True)
    assert accepted.deliveries == () and accepted.wake_after_s is None
    late = sms.plan(sos(), s, sms.new_state(), now=NOON, since_raised_s=60)
    assert numbers(late) == [DESK.number, DAUGHTER.number]


def test_quiet_hours_hold_priority_two_until_morning_but_never_priority_one():
    held = sms.plan(sos(priority=2), settings(), sms.new_state(), now=NIGHT, since_raised_s=0)
    assert held.deliveries == () and held.held[0].reason == sms.QUIET_HOURS
    assert held.wake_after_s == 7.5 * 3600
    urgent = sms.plan(sos(), settings(), sms.new_state(), now=NIGHT, since_raised_s=0)
    assert numbers(urgent) == [DESK.number, DAUGHTER.number]


def test_one_text_per_alert_and_phone_even_after_a_restart():
    s, state = settings(), sms.new_state()
    first = sms.plan(sos(), s, state, now=NOON, since_raised_s=0)
    for d in first.deliveries:
        state = sms.record(state, d, sms.PENDING, now=NOON, tz=CST)
    # a restart now: pending is not final, so both are sent again (a duplicate beats a loss)
    state = sms.load_state(json.loads(json.dumps(state)))
    again = sms.plan(sos(), s, state, now=NOON, since_raised_s=5)
    assert numbers(again) == [DESK.number, DAUGHTER.number]
    state = sms.record(state, again.deliveries[0], sms.SENT, now=NOON, tz=CST)
    state = sms.record(state, again.deliveries[1], sms.FAILED, now=NOON, tz=CST)
    state = sms.load_state(json.loads(json.dumps(state)))
    assert sms.plan(sos(), s, state, now=NOON, since_raised_s=9).deliveries == ()
    assert state["alerts"]["A1"]["sms"][DESK.number]["attempts"] == 1


def test_a_temporary_failure_is_planned_again():
    s, state = settings(phones=(DAUGHTER,)), sms.new_state()
    [d] = sms.plan(sos(), s, state, now=NOON, since_raised_s=0).deliveries
    state = sms.record(state, d, "timeout", now=NOON, tz=CST)
    assert len(sms.plan(sos(), s, state, now=NOON, since_raised_s=1).deliveries) == 1


def test_per_alert_limit():
    s = settings(max_per_alert=1)
    p = sms.plan(sos(), s, sms.new_state(), now=NOON, since_raised_s=0)
    assert numbers(p) == [DESK.number]
    assert [h.reason for h in p.held] == [sms.ALERT_LIMIT]


def test_per_day_limit_holds_priority_two_not_one_and_resets_at_midnight():
    s, state = settings(max_per_day=1, phones=(DESK,)), sms.new_state()
    [d, _call] = sms.plan(sos("A0"), s, state, now=NOON, since_raised_s=0).deliveries
    state = sms.record(state, d, sms.SENT, now=NOON, tz=CST)
    warn = sms.plan(sos("A2", priority=2), s, state, now=NOON, since_raised_s=0)
    assert warn.deliveries == () and warn.held[0].reason == sms.DAY_LIMIT
    assert warn.wake_after_s == 12 * 3600
    assert numbers(sms.plan(sos("A3"), s, state, now=NOON, since_raised_s=0)) == [DESK.number]
    tomorrow = NOON + timedelta(days=1)
    assert numbers(sms.plan(sos("A2", priority=2), s, state, now=tomorrow, since_raised_s=0)) == [DESK.number]


def test_an_acknowledged_alert_texts_nobody_more():
    s, state = settings(), sms.new_state()
    d = sms.plan(sos(), s, state, now=NOON, since_raised_s=0).deliveries[0]
    state = sms.record(state, d, sms.SENT, now=NOON, tz=CST)
    reply = sms.parse_reply(DESK.number, "OK", s, state, ["A1"])
    state = sms.record_reply(state, reply)
    assert sms.plan(sos(), s, state, now=NOON, since_raised_s=1).deliveries == ()


def test_notified_event_data():
    d = sms.Delivery("A1", sms.SMS, DESK, "x")
    assert sms.notified_data(d, "retry", attempt=2, code=38, reason=None) == {
        "alert_id": "A1", "channel": "sms", "to": DESK.number, "result": "retry",
        "name": "Duty desk", "attempt": 2, "code": 38}


def test_state_stays_bounded_and_keeps_open_alerts():
    s, state = settings(phones=(DAUGHTER,)), sms.new_state()
    for i in range(sms.MAX_REMEMBERED_ALERTS + 20):
        [d] = sms.plan(sos(f"A{i}"), s, state, now=NOON, since_raised_s=0).deliveries
        state = sms.record(state, d, sms.SENT, now=NOON, tz=CST)
    state = sms.forget(state, ["A0"])
    assert len(state["alerts"]) == sms.MAX_REMEMBERED_ALERTS
    assert "A0" in state["alerts"] and "A1" not in state["alerts"] and "A219" in state["alerts"]


def test_functions_never_change_the_state_they_are_given():
    s, state = settings(), sms.new_state()
    frozen = json.dumps(state)
    d = sms.plan(sos(), s, state, now=NOON, since_raised_s=0).deliveries[0]
    sms.record(state, d, sms.SENT, now=NOON, tz=CST)
    sms.record_reply(state, sms.Reply(sms.UNKNOWN_SENDER, "+1"))
    assert json.dumps(state) == frozen


# --- replies -----------------------------------------------------------------------------------
def texted(alert_ids=("A1",), phone=DESK):
    s, state = settings(), sms.new_state()
    for alert_id in alert_ids:
        d = next(d for d in sms.plan(sos(alert_id), s, state, now=NOON, since_raised_s=0).deliveries
                 if d.phone == phone and d.channel == sms.SMS)
        state = sms.record(state, d, sms.SENT, now=NOON, tz=CST)
    return s, state


@pytest.mark.parametrize("body", ["OK", "ok", " Ok. ", "ＯＫ", "1", "１", "o k!"])
def test_ack_words_tolerate_case_space_punctuation_and_full_width(body):
    s, state = texted()
    reply = sms.parse_reply(DESK.number, body, s, state, ["A1"])
    assert (reply.kind, reply.alert_id, reply.phone) == (sms.ACK, "A1", DESK)
    assert reply.by == "sms:+8613800000000 (Duty desk)"


@pytest.mark.parametrize("sender", ["+8613800000000", "8613800000000", "008613800000000", "13800000000"])
def test_sender_numbers_in_the_forms_networks_use(sender):
    s, state = texted()
    assert sms.parse_reply(sender, "OK", s, state, ["A1"]).kind == sms.ACK


@pytest.mark.parametrize("e164, sender", [("+4915112345678", "015112345678"), ("+12025550123", "2025550123"),
                                          ("+85291234567", "91234567")])
def test_national_forms_elsewhere(e164, sender):
    assert sms.same_number(e164, sender)
    assert not sms.same_number(e164, sender[:-1] + "9")


@pytest.mark.parametrize("sender", ["+8613800000001", "10086", "3800000000", "", "CMCC"])
def test_unknown_senders_are_ignored_and_counted(sender):
    s, state = texted()
    reply = sms.parse_reply(sender, "OK", s, state, ["A1"])
    assert reply.kind == sms.UNKNOWN_SENDER
    assert sms.record_reply(state, reply)["unknown_senders"] == 1


def test_alphanumeric_sender_never_matches():
    s, state = texted()
    assert sms.parse_reply(DESK.number, "OK", s, state, ["A1"], alphanumeric=True).kind == sms.UNKNOWN_SENDER


def test_other_words_from_a_bound_phone_are_not_acks():
    s, state = texted()
    for body in ("OK?? who is this", "好", "no", "11"):
        assert sms.parse_reply(DESK.number, body, s, state, ["A1"]).kind == sms.NOT_AN_ACK


def test_ack_goes_to_the_newest_open_alert_texted_to_that_phone():
    s, state = texted(("A1", "A2", "A3"))
    assert sms.parse_reply(DESK.number, "OK", s, state, ["A1", "A2"]).alert_id == "A2"
    state = sms.record_reply(state, sms.parse_reply(DESK.number, "OK", s, state, ["A1", "A2"]))
    assert sms.parse_reply(DESK.number, "OK", s, state, ["A1", "A2"]).alert_id == "A1"


def test_ok_with_nothing_open_acknowledges_nothing():
    s, state = texted(("A1",), phone=DAUGHTER)
    assert sms.parse_reply(DESK.number, "OK", s, state, ["A1"]).kind == sms.NOTHING_TO_ACK
    assert sms.parse_reply(DAUGHTER.number, "OK", s, state, []).kind == sms.NOTHING_TO_ACK


def test_settings_from_the_example_config():
    cfg = config.load(EXAMPLE)
    s = sms.Settings.from_config(cfg)
    assert [p.number for p in s.phones] == ["+8613800000000", "+8613900000000"]
    assert s.resident == "R-1017" and s.when == "fallback" and s.tz == ZoneInfo("Asia/Shanghai")
    assert s.quiet_hours.contains_time(NIGHT)
