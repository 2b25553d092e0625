"""The modem link against a simulated modem on a real pty, in each way a modem fails.

Every failure must be reported once (a change of state) and retried; no test waits a fixed
time for something to happen: each waits on a condition with a generous deadline.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from drivers.modem import link as ml
from drivers.modem.simulator import FakeModem, Faults

pytestmark = pytest.mark.timeout(60)

TO = "+8613800000000"
FAST = ml.Timeouts(command_s=1.0, slow_s=1.0, prompt_s=1.0, submit_s=2.0, list_s=2.0, dial_s=1.0)


class Harness:
    def __init__(self, modem: FakeModem | None, **kw):
        self.modem = modem
        self.statuses: list[tuple[str, dict]] = []
        self.messages: list[ml.IncomingSms] = []
        self.resets = 0
        options = dict(timeouts=FAST, sync_attempts=2, sync_interval_s=0.05, retry_delays_s=(0.05, 0.1),
                       reconnect_min_s=0.05, reconnect_max_s=0.2, registration_wait_s=0.3,
                       poll_interval_s=0.5, sweep_interval_s=30, min_submit_gap_s=0,
                       reset_boot_wait_s=0.05, send_deadline_s=20)
        options.update(kw)
        url = options.pop("url", None) or modem.port
        reset = options.pop("reset", self._reset)
        self.link = ml.ModemLink(url, on_status=lambda s, i: self.statuses.append((s, i)),
                                 on_message=options.pop("on_message", self.messages.append),
                                 reset=reset, **options)

    def _reset(self):
        self.resets += 1
        if self.modem is not None:
            self.modem.faults.mute = False
            self.modem.reboot()

    def states(self) -> list[str]:
        return [s for s, _ in self.statuses]

    async def until(self, predicate, timeout=15.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            assert asyncio.get_running_loop().time() < deadline, f"timed out; states {self.states()}"
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(faults: Faults | None = None, **kw):
    with FakeModem(faults or Faults()) as modem:
        h = Harness(modem, **kw)
        task = asyncio.create_task(h.link.run())
        try:
            yield h
        finally:
            h.link.stop()
            await asyncio.wait_for(task, 15)


def run(coro):
    asyncio.run(coro)


def test_initialises_in_pdu_mode_and_sends_texts():
    async def main():
        async with running() as h:
            assert await h.link.wait_usable(10)
            for cmd in ("ATE0", "AT+CMEE=1", "AT+CPIN?", "AT+CMGF=0", "AT+CNMI=2,1,0,0,0"):
                assert cmd in h.modem.commands
            r1 = await h.link.send_text(TO, "Fall alert. Reply OK")
            r2 = await h.link.send_text(TO, "王奶奶跌倒，请回复OK")
            r3 = await h.link.send_text(TO, "长" * 100)
            assert (r1.ok, r2.ok, r3.ok) == (True, True, True) and len(r3.refs) == 2
            assert [t.text for t in h.modem.texts()] == ["Fall alert. Reply OK", "王奶奶跌倒，请回复OK", "长" * 100]
            assert all(t.number == TO for t in h.modem.texts())
            assert h.states() == [ml.READY]
            st = h.link.status
            assert (st.registration, st.rssi, st.dbm, st.operator) == (1, 17, -79, "CHINA MOBILE")
    run(main())


def test_pin_is_sent_once_and_unlocks():
    async def main():
        async with running(Faults(sim="SIM PIN", pin="4321"), pin="4321") as h:
            assert await h.link.wait_usable(10)
            assert h.modem.pin_attempts == ["4321"]
            assert (await h.link.send_text(TO, "x")).ok
    run(main())


def test_wrong_pin_is_reported_once_and_never_sent_again():
    async def main():
        async with running(Faults(sim="SIM PIN", pin="4321"), pin="0000") as h:
            await h.until(lambda: h.modem.commands.count("AT+CPIN?") >= 4)
            assert h.modem.pin_attempts == ["0000"]
            assert h.states() == [ml.PIN_REJECTED]
            result = await h.link.send_text(TO, "x", deadline_s=0.2)
            assert (result.ok, result.result) == (False, ml.TIMED_OUT)
    run(main())


def test_puk_locked_sim_gets_no_pin():
    async def main():
        async with running(Faults(sim="SIM PUK"), pin="1234") as h:
            await h.until(lambda: h.modem.commands.count("AT+CPIN?") >= 3)
            assert h.modem.pin_attempts == [] and h.states() == [ml.PUK_REQUIRED]
    run(main())


def test_no_sim_is_reported_once_retried_and_recovers_when_inserted():
    async def main():
        faults = Faults(sim="absent")
        async with running(faults) as h:
            await h.until(lambda: h.modem.commands.count("AT+CPIN?") >= 3)
            assert h.states() == [ml.NO_SIM]
            assert "+CME ERROR: 10" in h.statuses[0][1]["reason"]
            faults.sim = "READY"
            assert await h.link.wait_usable(10)
            assert h.states() == [ml.NO_SIM, ml.READY]
            assert (await h.link.send_text(TO, "x")).ok
    run(main())


def test_not_registered_is_reported_then_the_text_goes_when_the_network_is_back():
    async def main():
        faults = Faults(registration=2)
        attempts = []
        async with running(faults) as h:
            assert await h.link.wait_usable(10)
            assert h.states() == [ml.NOT_REGISTERED]
            send = asyncio.create_task(h.link.send_text(TO, "SOS", on_attempt=attempts.append))
            await h.until(lambda: len(attempts) >= 2)
            assert {a.code for a in attempts} == {331} and not h.modem.texts()
            faults.registration = 1
            h.modem.urc("+CREG: 1")
            result = await asyncio.wait_for(send, 15)
            assert result.ok and [t.text for t in h.modem.texts()] == ["SOS"]
            assert h.states()[:2] == [ml.NOT_REGISTERED, ml.SEND_FAILING]
            await h.until(lambda: h.states()[-1] == ml.READY)
            assert h.states().count(ml.SEND_FAILING) == 1
    run(main())


def test_network_out_of_order_is_retried_and_reported_once():
    async def main():
        attempts = []
        async with running(Faults(cms_errors=[38, 38, 38])) as h:
            assert await h.link.wait_usable(10)
            result = await h.link.send_text(TO, "SOS", on_attempt=attempts.append)
            assert result.ok and result.attempt == 4
            assert [a.result for a in attempts] == ["retry", "retry", "retry", "sent"]
            assert [a.code for a in attempts[:3]] == [38, 38, 38]
            assert h.states() == [ml.READY, ml.SEND_FAILING, ml.READY]
            assert len(h.modem.texts()) == 1
    run(main())


def test_a_permanent_error_is_not_retried():
    async def main():
        async with running(Faults(cms_errors=[50])) as h:
            assert await h.link.wait_usable(10)
            result = await h.link.send_text(TO, "SOS")
            assert (result.ok, result.result, result.code) == (False, ml.FAILED, 50)
            assert sum(c.startswith("AT+CMGS=") for c in h.modem.commands) == 1
    run(main())


def test_a_silent_modem_is_reported_once_then_reset_through_the_callback():
    async def main():
        async with running(Faults(mute=True), reset_after_failures=1) as h:
            await h.until(lambda: h.resets >= 1)
            assert h.states()[0] == ml.NO_ANSWER and h.states().count(ml.NO_ANSWER) == 1
            assert await h.link.wait_usable(10)  # the callback unmuted and rebooted it
            assert h.states() == [ml.NO_ANSWER, ml.READY]
            assert (await h.link.send_text(TO, "x")).ok
    run(main())


def test_a_modem_that_stops_answering_mid_run_is_recovered_and_the_text_goes():
    async def main():
        faults = Faults()
        attempts = []
        async with running(faults, reset_after_failures=1) as h:
            assert await h.link.wait_usable(10)
            faults.mute = True
            result = await h.link.send_text(TO, "SOS", on_attempt=attempts.append)
            assert result.ok and attempts[0].result == "retry"
            assert h.resets >= 1 and h.states().count(ml.NO_ANSWER) == 1
            assert [t.text for t in h.modem.texts()] == ["SOS"]
    run(main())


def test_late_answers_within_the_deadline_are_fine():
    async def main():
        async with running(Faults(submit_delay_s=0.3)) as h:
            assert await h.link.wait_usable(10)
            result = await h.link.send_text(TO, "x")
            assert result.ok and result.attempt == 1
    run(main())


def test_an_answer_later_than_the_deadline_is_retried_and_its_stale_ok_ignored():
    async def main():
        faults = Faults(submit_delay_s=1.5)
        attempts = []
        timeouts = ml.Timeouts(command_s=1.0, slow_s=1.0, prompt_s=1.0, submit_s=0.3, list_s=2.0)

        def attempt(a):
            attempts.append(a)
            faults.submit_delay_s = 0.0

        async with running(faults, timeouts=timeouts) as h:
            assert await h.link.wait_usable(10)
            result = await h.link.send_text(TO, "x", on_attempt=attempt)
            assert result.ok and attempts[0].result == "retry" and "CommandTimeout" in attempts[0].reason
            # the late part did go out as well: a duplicate, never a loss
            await h.until(lambda: len(h.modem.texts()) == 2)
            assert (await h.link.send_text(TO, "y")).ok
            assert [t.text for t in h.modem.texts()] == ["x", "x", "y"]
    run(main())


def test_garbled_lines_are_skipped_and_counted():
    async def main():
        async with running(Faults(garble=True)) as h:
            assert await h.link.wait_usable(10)
            assert (await h.link.send_text(TO, "x")).ok
            assert h.link.status.garbage_lines >= 10
            assert h.states() == [ml.READY]
    run(main())


def test_a_reboot_in_the_middle_of_a_send_reinitialises_and_resends():
    async def main():
        attempts = []
        async with running(Faults(reboot_on_submit=1)) as h:
            assert await h.link.wait_usable(10)
            result = await h.link.send_text(TO, "SOS", on_attempt=attempts.append)
            assert result.ok and attempts[0].result == "retry" and "ModemRebooted" in attempts[0].reason
            assert h.modem.reboots == 1
            assert h.modem.commands.count("ATE0") == 2 and h.modem.commands.count("AT+CMGF=0") == 2
            assert [t.text for t in h.modem.texts()] == ["SOS"]
    run(main())


def test_an_incoming_text_is_read_handed_over_and_then_deleted():
    async def main():
        async with running() as h:
            assert await h.link.wait_usable(10)
            h.modem.inject_sms(TO, "OK")
            h.modem.inject_sms("+8613900000000", "ＯＫ", ucs2=True)
            await h.until(lambda: len(h.messages) == 2)
            assert [(m.sender, m.text) for m in h.messages] == [(TO, "OK"), ("+8613900000000", "ＯＫ")]
            await h.until(lambda: not h.modem.store)
    run(main())


def test_a_text_stored_while_the_hub_was_down_is_swept_at_start():
    async def main():
        with FakeModem() as modem:
            modem.inject_sms(TO, "1", announce=False)
            h = Harness(modem)
            task = asyncio.create_task(h.link.run())
            await h.until(lambda: h.messages)
            assert h.messages[0].text == "1"
            await h.until(lambda: not modem.store)
            h.link.stop()
            await task
    run(main())


def test_a_text_whose_listener_fails_stays_on_the_sim():
    async def main():
        def broken(sms):
            raise RuntimeError("store is down")

        async with running(on_message=broken) as h:
            assert await h.link.wait_usable(10)
            h.modem.inject_sms(TO, "OK")
            await h.until(lambda: any(c.startswith("AT+CMGR=") for c in h.modem.commands))
            assert (await h.link.send_text(TO, "x")).ok  # the link goes on
            assert not any(c.startswith("AT+CMGD=") for c in h.modem.commands)
            assert len(h.modem.store) == 1
    run(main())


def test_dial_rings_and_hangs_up():
    async def main():
        async with running() as h:
            assert await h.link.wait_usable(10)
            h.modem.answer_call_after_polls = 1
            assert await h.link.dial(TO, 10, poll_s=0.05) == "answered"
            assert h.modem.dialled == [TO] and h.modem.hangups == 1
            h.modem.answer_call_after_polls = None
            assert await h.link.dial(TO, 0.3, poll_s=0.05) == "no_answer"
            assert h.modem.hangups == 2
    run(main())


def test_a_port_that_does_not_exist_is_reported_once_and_retried():
    async def main():
        h = Harness(None, url="/dev/nonexistent-modem")
        task = asyncio.create_task(h.link.run())
        await asyncio.sleep(0)
        result = await h.link.send_text(TO, "x", deadline_s=0.6)
        assert result.result == ml.TIMED_OUT
        assert h.states() == [ml.DISCONNECTED]
        h.link.stop()
        await asyncio.wait_for(task, 5)
    run(main())


class SocketBridge:
    """``socket://127.0.0.1:PORT`` in front of the simulator's tty: a pyserial URL without a
    file descriptor, so the link takes its polling path."""

    def __init__(self, tty_path: str):
        import os
        import socket
        import threading
        import tty as tty_mod
        self._os = os
        self.fd = os.open(tty_path, os.O_RDWR | os.O_NOCTTY)
        tty_mod.setraw(self.fd)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self.server.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        import select
        self.server.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
                break
            except OSError:
                continue
        else:
            return
        with conn:
            while not self._stop.is_set():
                r, _, _ = select.select([conn, self.fd], [], [], 0.05)
                if conn in r:
                    data = conn.recv(4096)
                    if not data:
                        return
                    self._os.write(self.fd, data)
                if self.fd in r:
                    conn.sendall(self._os.read(self.fd, 4096))

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self.server.close()
        self._os.close(self.fd)


def test_any_pyserial_url_works_here_a_socket():
    async def main():
        with FakeModem() as modem:
            bridge = SocketBridge(modem.port)
            try:
                h = Harness(modem, url=bridge.url)
                task = asyncio.create_task(h.link.run())
                assert await h.link.wait_usable(10)
                assert (await h.link.send_text(TO, "via socket")).ok
                modem.inject_sms(TO, "OK")
                await h.until(lambda: h.messages)
                assert [t.text for t in modem.texts()] == ["via socket"] and h.messages[0].text == "OK"
                h.link.stop()
                await asyncio.wait_for(task, 10)
            finally:
                bridge.close()
    run(main())


def test_a_vanished_port_is_reported_once_and_a_send_waits_then_times_out():
    async def main():
        modem = FakeModem().start()
        h = Harness(modem)
        task = asyncio.create_task(h.link.run())
        try:
            assert await h.link.wait_usable(10)
            modem.close()  # the USB modem is unplugged
            await h.until(lambda: ml.DISCONNECTED in h.states())
            result = await h.link.send_text(TO, "x", deadline_s=0.5)
            assert result.result == ml.TIMED_OUT
            assert h.states() == [ml.READY, ml.DISCONNECTED]
        finally:
            h.link.stop()
            await asyncio.wait_for(task, 10)
    run(main())


def test_a_port_without_a_modem_behind_it_is_no_answer_once():
    """``loop://`` echoes every command and answers none (and has no file descriptor, so the
    link reads it from a worker thread)."""
    async def main():
        h = Harness(None, url="loop://", reset=None)
        task = asyncio.create_task(h.link.run())
        await h.until(lambda: ml.NO_ANSWER in h.states())
        assert (await h.link.send_text(TO, "x", deadline_s=0.3)).result == ml.TIMED_OUT
        assert h.states() == [ml.NO_ANSWER]
        h.link.stop()
        await asyncio.wait_for(task, 10)
    run(main())
