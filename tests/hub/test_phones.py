"""Bound phones in the running hub: the daemon (Hub in-process, real store, pty modem, real
receiver on 127.0.0.1) texts an SOS while the uplink is down, takes an "OK" reply as the
acknowledgement, and later syncs the alert, the notifications and the ack, each once; a modem
that fails in any way never holds up alerts, the store or the uploader, and is reported once.

No test waits a fixed time: each waits on a condition with a generous deadline.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import threading

import pytest
from gpiozero.pins.mock import MockFactory

from drivers.modem import link as ml
from drivers.modem.simulator import FakeModem, Faults
from hub import config, sms
from hub.app import Hub
from hub.clock import SystemClock
from hub.events import EventFactory
from hub.notifier import PhoneNotifier
from hub.rules.actions import LED_ACKNOWLEDGED
from hub.rules.observations import ButtonPress
from offline_queue.receiver import make_server
from offline_queue.store import AsyncStore
from tests.conftest import MINIMAL
from tests.hub.test_end_to_end import committed, run_async, wait_until

pytestmark = pytest.mark.timeout(120)

DESK = "+8613800000000"
TOKEN = "s3cret-token"
FAST = ml.Timeouts(command_s=1.0, slow_s=1.0, prompt_s=1.0, submit_s=2.0, list_s=2.0, dial_s=1.0)
FAST_LINK = dict(timeouts=FAST, sync_attempts=2, sync_interval_s=0.05, retry_delays_s=(0.05, 0.1),
                 reconnect_min_s=0.05, reconnect_max_s=0.2, registration_wait_s=0.3,
                 poll_interval_s=0.5, sweep_interval_s=30, min_submit_gap_s=0,
                 reset_boot_wait_s=0.05)


def free_port() -> int:
    """A port nothing listens on (connections are refused) until the receiver takes it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    def __init__(self, tmp_path, port):
        self.path = tmp_path / "receiver.db"
        self.server = make_server("127.0.0.1", port, self.path, TOKEN)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def events(self) -> list[dict]:
        conn = sqlite3.connect(self.path)
        try:
            return [json.loads(b) for (b,) in conn.execute("SELECT body FROM events ORDER BY seq")]
        finally:
            conn.close()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def hub_config(write_config, tmp_path, modem_port, server_port, extra=""):
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    return config.load(write_config(MINIMAL + f"""
[server]
url = "http://127.0.0.1:{server_port}"
token_file = "{token}"
backoff_base = "0.1s"
backoff_max = "1s"
sync_interval = "0.2s"
timeout = "2s"

[gpio]

[sms]
port = "{modem_port}"
when = "always"
address = "88 Garden Road"
language = "en"
{extra}

[[sms.phones]]
number = "{DESK}"
name = "Duty desk"
priorities = [1, 2]
"""))


@run_async
async def test_sos_while_the_uplink_is_down_texts_the_phone_and_ok_acknowledges(write_config, tmp_path):
    server_port = free_port()
    with FakeModem() as modem:
        cfg = hub_config(write_config, tmp_path, modem.port, server_port)
        factory = MockFactory()
        hub = Hub(cfg, pin_factory=factory)
        await hub.start()
        receiver = None
        try:
            assert hub.uploader is not None and hub.phones is not None
            factory.pin(cfg["gpio"]["sos_pin"]).drive_low()      # the resident presses SOS
            await wait_until(lambda: modem.texts(), timeout_s=30)
            [text] = modem.texts()
            assert text.number == DESK
            assert "SOS" in text.text and "88 Garden Road" in text.text and "Reply OK" in text.text
            assert hub.panel.led_pattern != LED_ACKNOWLEDGED

            modem.inject_sms("13800000000", "OK")                 # the desk answers (national form)
            await wait_until(lambda: hub.panel.led_pattern == LED_ACKNOWLEDGED, timeout_s=30)
            await wait_until(lambda: not modem.store, timeout_s=30)   # handled, then deleted

            receiver = Receiver(tmp_path, server_port)               # the uplink comes back
            want = {"alert.raised", "alert.notified", "alert.acknowledged"}
            await wait_until(lambda: want <= {e["type"] for e in receiver.events()}, timeout_s=60)
            await wait_until(lambda: not hub.store.buffered, timeout_s=10)
        finally:
            await hub.stop()
            if receiver is not None:
                receiver.close()
    got = [e for e in receiver.events() if e["type"].startswith("alert.")]
    raised = [e for e in got if e["type"] == "alert.raised"]
    notified = [e for e in got if e["type"] == "alert.notified"]
    acked = [e for e in got if e["type"] == "alert.acknowledged"]
    assert len(raised) == 1 and raised[0]["data"]["rule"] == "sos"
    alert_id = raised[0]["data"]["alert_id"]
    assert [(n["data"]["alert_id"], n["data"]["channel"], n["data"]["to"], n["data"]["result"])
            for n in notified] == [(alert_id, "sms", DESK, "sent")]
    assert len(acked) == 1 and acked[0]["data"]["alert_id"] == alert_id
    assert acked[0]["data"]["by"] == f"sms:{DESK} (Duty desk)"
    assert len({e["id"] for e in receiver.events()}) == len(receiver.events())   # each once


@run_async
async def test_a_restart_does_not_text_the_same_alert_again(write_config, tmp_path):
    with FakeModem() as modem:
        cfg = hub_config(write_config, tmp_path, modem.port, free_port())
        hub = Hub(cfg, pin_factory=MockFactory())
        await hub.start()
        try:
            hub.runner.put(ButtonPress("sos", "panel"))
            await wait_until(lambda: modem.texts(), timeout_s=30)
            await wait_until(lambda: any(e.get("type") == "alert.notified"
                                         for e in committed(tmp_path / "state" / "events.db")), 10)
        finally:
            await hub.stop()
        hub = Hub(cfg, pin_factory=MockFactory())
        await hub.start()
        try:
            await wait_until(lambda: hub.phones._loaded and hub.phones.link.state == ml.READY, 30)
            state = hub.phones.state
            [entry] = state["alerts"].values()
            assert entry["sms"][DESK]["result"] == "sent"
            # The alert is still open and planned again after the restart: nobody is texted.
            for _ in range(3):
                hub.phones._wake.set()
                await asyncio.sleep(0)
            await hub.phones._round()
        finally:
            await hub.stop()
    assert len(modem.texts()) == 1


# --- failure modes: the notifier on a real store and a failing pty modem -----------------------

class Bench:
    """A PhoneNotifier on a real store with a fast-timeout link, and the alert path beside it."""

    def __init__(self, tmp_path, modem, pin=None, **settings):
        self.clock = SystemClock()
        self.factory = EventFactory("home-test", "R-1", self.clock)
        self.store = AsyncStore(tmp_path / "events.db", make_event=self.factory.make)
        self.statuses: list[str] = []
        self.acks: list = []
        self.modem = modem
        from zoneinfo import ZoneInfo
        settings = {"phones": (sms.Phone(DESK, "Duty desk", (1, 2)),), "when": "always", **settings}
        self.settings = sms.Settings(resident="R-1", address="", tz=ZoneInfo("Asia/Shanghai"),
                                     language="en", **settings)
        self.link = ml.ModemLink(modem.port, on_status=lambda s, i: self.statuses.append(s),
                                 pin=pin, voice=any(p.call for p in self.settings.phones),
                                 **FAST_LINK)
        self.phones = PhoneNotifier(self.settings, self.link, self.store, self.factory, self.clock,
                                    on_ack=lambda *a: self.acks.append(a), send_deadline_s=3.0)
        self.link.on_message = self.phones.incoming

    async def __aenter__(self):
        await self.store.open()
        self.store.subscribe(self.phones.committed)
        self.task = asyncio.create_task(self.phones.run())
        return self

    async def __aexit__(self, *exc):
        self.phones.stop()
        await asyncio.wait_for(self.task, 15)
        await self.store.close()

    async def raise_alert(self, rule="sos", priority=1, details=None):
        event = self.factory.make("alert.raised", {"alert_id": f"a-{rule}", "rule": rule,
                                                   "priority": priority, "message": rule,
                                                   "details": details or {}}, priority)
        return await self.store.commit(event)

    async def notified(self) -> list[dict]:
        rows = await self.store.take_batch(limit=1000)
        return [e["data"] for e in rows if e["type"] == "alert.notified"]


FAILURES = {
    "no SIM": (Faults(sim="absent"), ml.NO_SIM, dict(sim="READY")),
    "wrong PIN": (Faults(sim="SIM PIN", pin="4321"), ml.PIN_REJECTED, None),
    "not registered": (Faults(registration=0), ml.NOT_REGISTERED, dict(registration=1)),
    "CMS ERROR 38": (Faults(cms_errors=[38] * 3), ml.SEND_FAILING, {}),
    "no answer": (Faults(mute=True), ml.NO_ANSWER, dict(mute=False)),
    "late answers": (Faults(submit_delay_s=2.5), None, dict(submit_delay_s=0.0)),
    "garbled lines": (Faults(garble=True), None, dict(garble=False)),
    "reboot mid-send": (Faults(reboot_on_submit=1), None, {}),
}


@pytest.mark.parametrize("name", list(FAILURES))
@run_async
async def test_a_failing_modem_never_blocks_the_store_and_is_reported_once(name, tmp_path):
    faults, state, heal = FAILURES[name]
    with FakeModem(faults) as modem:
        async with Bench(tmp_path, modem, pin="1234") as b:
            await b.raise_alert()
            # The alert path is not held: the store commits at once, many times, whatever the modem.
            for i in range(20):
                await asyncio.wait_for(b.store.commit(b.factory.make("hub.heartbeat", {"i": i})), 10)
            if state is not None:
                await wait_until(lambda: state in b.statuses, timeout_s=30)
            await asyncio.sleep(0.5)   # let retries happen: none may report the same state again
            told = list(b.statuses)
            if heal is None:       # a refused PIN is never sent again: a person must fix the file
                await wait_until(lambda: len(modem.pin_attempts) >= 1, 10)
                await b.raise_alert("fall")
                assert modem.pin_attempts == ["1234"]
                assert not modem.texts()
            else:
                for key, value in heal.items():
                    setattr(modem.faults, key, value)
                await wait_until(lambda: modem.texts(), timeout_s=60)
                await wait_until(lambda: b.phones.state["alerts"]["a-sos"]["sms"][DESK]["result"] == "sent", 30)
            if state is not None:
                assert told.count(state) == 1, told   # reported once, not on every retry
            assert all(a != b_ for a, b_ in zip(b.statuses, b.statuses[1:])), b.statuses
            notified = await b.notified()
            assert all(n["alert_id"] in ("a-sos", "a-fall") and n["channel"] == "sms" for n in notified)
            if heal is not None:
                assert [n["result"] for n in notified][-1] == "sent"
                assert sum(n["result"] == "sent" for n in notified) == 1
            assert len([n for n in notified if n["result"] == "timeout"]) <= 2


@run_async
async def test_unknown_senders_and_other_words_are_ignored_and_counted(tmp_path):
    with FakeModem() as modem:
        async with Bench(tmp_path, modem) as b:
            await b.raise_alert()
            await wait_until(lambda: modem.texts(), 30)
            await wait_until(lambda: b.phones.state["alerts"]["a-sos"]["sms"][DESK]["result"] == "sent", 30)
            modem.inject_sms("+8613911112222", "OK")           # not a bound phone
            modem.inject_sms(DESK, "who is this?")              # bound, not an ack word
            await wait_until(lambda: b.phones.state["unknown_senders"] == 1
                             and b.phones.state["replies_ignored"] == 1, 30)
            assert b.acks == []
            modem.inject_sms(DESK, "ＯＫ")                       # full-width, from a Chinese IME
            await wait_until(lambda: b.acks, 30)
            assert b.acks[0][:2] == ("a-sos", f"sms:{DESK} (Duty desk)")
            saved = await b.store.get_state(sms.STATE_KEY)
            assert saved["unknown_senders"] == 1 and saved["alerts"]["a-sos"]["acked_by"] == DESK


@run_async
async def test_fallback_texts_only_when_the_server_has_not_taken_the_alert(tmp_path):
    with FakeModem() as modem:
        async with Bench(tmp_path, modem, when="fallback", fallback_after_s=0.5) as b:
            delivered = await b.raise_alert("sos")
            await b.store.forget([delivered.id])                # the server accepted this one
            await b.raise_alert("fall")                        # this one is still queued
            await wait_until(lambda: modem.texts(), 30)
            await wait_until(lambda: "server_accepted" in b.phones.state["alerts"]["a-sos"], 30)
            assert b.phones.state["alerts"]["a-sos"]["sms"] == {}
            assert len(modem.texts()) == 1 and "fall" in modem.texts()[0].text


@run_async
async def test_a_priority_1_alert_also_rings_a_phone_with_call(tmp_path):
    with FakeModem() as modem:
        modem.answer_call_after_polls = 1
        async with Bench(tmp_path, modem, call_hangup_after_s=5.0,
                         phones=(sms.Phone(DESK, "Duty desk", (1,), call=True),)) as b:
            await b.raise_alert()
            await wait_until(lambda: DESK in b.phones.state["alerts"].get("a-sos", {}).get("call", {}), 30)
            notified = await b.notified()
    assert [(n["channel"], n["result"]) for n in notified] == [("sms", "sent"), ("call", "answered")]
    assert modem.dialled and modem.hangups >= 1 and len(modem.texts()) == 1


# --- carehub sms test ------------------------------------------------------------------------

def sms_config(write_config, port, extra=""):
    return write_config(MINIMAL + f'\n[sms]\nport = "{port}"\nlanguage = "en"\n{extra}\n'
                        f'[[sms.phones]]\nnumber = "{DESK}"\n')


def test_sms_test_sends_a_text_and_says_so(write_config, capsys):
    from hub.cli import main
    with FakeModem() as modem:
        assert main(["sms", "test", "--config", str(sms_config(write_config, modem.port)),
                     "+8613911112222"]) == 0
    [text] = modem.texts()
    assert text.number == "+8613911112222" and "test" in text.text
    assert "test text sent to +8613911112222" in capsys.readouterr().out


@pytest.mark.parametrize("faults, words", [
    (Faults(sim="absent"), "no_sim"),
    (Faults(sim="SIM PIN"), "pin_required"),
])
def test_sms_test_explains_a_modem_that_cannot_send_without_a_traceback(faults, words, write_config, capsys):
    from hub.cli import main
    with FakeModem(faults) as modem:
        assert main(["sms", "test", "--config", str(sms_config(write_config, modem.port)), DESK]) == 1
    err = capsys.readouterr().err
    assert words in err and "fix:" in err and "Traceback" not in err
    assert not modem.texts()


def test_sms_test_refuses_a_bad_number_and_a_config_without_sms(write_config, tmp_path, capsys):
    from hub.cli import main
    assert main(["sms", "test", "--config", str(sms_config(write_config, tmp_path / "none")),
                 "13800000000"]) == 64
    assert "E.164" in capsys.readouterr().err
    assert main(["sms", "test", "--config", str(write_config(MINIMAL, "plain.toml")), DESK]) == 78
    assert "no [sms]" in capsys.readouterr().err


def test_sms_test_on_a_port_that_does_not_exist(write_config, tmp_path, capsys):
    from hub.cli import main
    assert main(["sms", "test", "--config", str(sms_config(write_config, tmp_path / "no-modem")), DESK]) == 1
    err = capsys.readouterr().err
    assert "disconnected" in err and "Traceback" not in err


@run_async
async def test_the_text_carries_the_watch_location_when_the_alert_has_one(tmp_path):
    location = {"lat": 31.23042, "lon": 121.4737, "accuracy_m": 15, "age_s": 40}
    with FakeModem() as modem:
        async with Bench(tmp_path, modem) as b:
            await b.raise_alert("sos", details={"location": location})
            await wait_until(lambda: modem.texts(), 30)
    [text] = modem.texts()
    assert "mlat=31.23042&mlon=121.47370" in text.text and "±15 m" in text.text


# --- carehub doctor: the modem check ------------------------------------------------------------

def test_doctor_checks_the_modem_sim_registration_and_signal(write_config):
    from hub import doctor
    with FakeModem() as modem:
        cfg = config.load(sms_config(write_config, modem.port))
        check = doctor.check_modem(cfg, seconds=1.0)
    assert check.status == doctor.PASS, check
    assert "home" in check.detail and "dBm" in check.detail and "CHINA MOBILE" in check.detail


def test_doctor_fails_a_modem_without_sim_with_its_fix(write_config):
    from hub import doctor
    with FakeModem(Faults(sim="absent")) as modem:
        cfg = config.load(sms_config(write_config, modem.port))
        check = doctor.check_modem(cfg, seconds=1.0)
    assert check.status == doctor.FAIL and "no_sim" in check.detail and "SIM" in check.fix


def test_doctor_without_sms_skips_the_modem(write_config):
    from hub import doctor
    assert doctor.check_modem(config.load(write_config(MINIMAL)), 1.0).status == doctor.SKIP
