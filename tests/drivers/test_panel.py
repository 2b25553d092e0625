"""The panel on gpiozero's MockFactory: presses reach the engine on the loop, outputs follow it."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timezone

import pytest
from gpiozero.pins.mock import MockFactory

from drivers.panel import Panel
from hub.rules.actions import Emit
from hub.rules.actions import Panel as ShowPanel
from hub.rules.engine import AlertEngine
from hub.rules.observations import ButtonPress, Now, StaffAck, WatchObservation

SOS, OK, LED_PIN, BUZ = 5, 6, 13, 19
WAIT_S = 5.0


def wait_until(pred, timeout=WAIT_S):
    """Poll a condition with a deadline (the blink threads run on real time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        threading.Event().wait(0.005)
    return pred()


class Rig:
    """Panel + engine wired as the pipeline will: presses -> engine -> Panel actions -> show."""

    def __init__(self, loop, factory):
        self.loop, self.factory = loop, factory
        self.engine = AlertEngine(seed="panel")
        self.events: list[Emit] = []
        self.pressed = asyncio.Event()
        self.threads = set()
        self.t = 0.0
        self.panel = Panel(factory, sos_pin=SOS, ok_pin=OK, led_pin=LED_PIN, buzzer_pin=BUZ,
                           sos_hold_s=0.05, on_press=self.on_press, loop=loop)

    def now(self):
        self.t += 1.0
        return Now(self.t, datetime(2026, 11, 23, 14, 0, tzinfo=timezone.utc))

    def feed(self, obs):
        assert threading.current_thread() is threading.main_thread()
        for a in self.engine.handle(obs, self.now()):
            if isinstance(a, ShowPanel):
                self.panel.show(a.led, a.buzzer)
            else:
                self.events.append(a)

    def on_press(self, button):
        self.threads.add(threading.current_thread().name)
        self.feed(ButtonPress(button, "panel"))
        self.pressed.set()

    async def press(self, pin, hold=False):
        self.pressed.clear()
        p = self.factory.pin(pin)
        p.drive_low()
        if hold:
            await asyncio.wait_for(self.pressed.wait(), WAIT_S)
            p.drive_high()
        else:
            p.drive_high()
            await asyncio.wait_for(self.pressed.wait(), WAIT_S)

    def types(self):
        return [(e.type, e.data.get("rule")) for e in self.events]


@pytest.fixture
def factory():
    f = MockFactory()
    yield f
    f.reset()


def led_blinks(factory):
    pin = factory.pin(LED_PIN)
    pin.clear_states()
    return wait_until(lambda: len({s.state for s in pin.states}) == 2 and len(pin.states) >= 3)


def test_long_sos_press_raises_sos_and_sounds_the_alarm(factory):
    async def main():
        rig = Rig(asyncio.get_running_loop(), factory)
        try:
            await rig.press(SOS, hold=True)
            assert ("alert.raised", "sos") in rig.types()
            assert rig.threads == {threading.main_thread().name}
            assert (rig.panel.led_pattern, rig.panel.buzzer_pattern) == ("alert", "alert")
            assert led_blinks(factory)
            buz = factory.pin(BUZ)
            assert wait_until(lambda: buz.state is True)
            rig.feed(StaffAck(rig.events[0].data["alert_id"], "nurse"))
            assert rig.panel.led_pattern == "acknowledged"
            led = factory.pin(LED_PIN)
            assert wait_until(lambda: led.state is True and buz.state is False)
        finally:
            rig.panel.close()
    asyncio.run(main())


def test_short_press_on_sos_does_nothing(factory):
    async def main():
        rig = Rig(asyncio.get_running_loop(), factory)
        try:
            p = factory.pin(SOS)
            p.drive_low()
            p.drive_high()
            await rig.press(OK)          # a later press proves the loop ran in between
            assert ("alert.raised", "sos") not in rig.types()
            assert rig.panel.led_pattern == "ok"
        finally:
            rig.panel.close()
    asyncio.run(main())


def test_ok_press_in_a_prealert_cancels_it(factory):
    async def main():
        rig = Rig(asyncio.get_running_loop(), factory)
        try:
            rig.feed(WatchObservation(fall=True, worn=True))
            assert (rig.panel.led_pattern, rig.panel.buzzer_pattern) == ("prealert", "prealert")
            assert led_blinks(factory)
            await rig.press(OK)
            assert ("alert.cancelled", "fall") in rig.types()
            assert ("alert.raised", "fall") not in rig.types()
            assert (rig.panel.led_pattern, rig.panel.buzzer_pattern) == ("ok", "off")
            buz = factory.pin(BUZ)
            assert wait_until(lambda: buz.state is False)
        finally:
            rig.panel.close()
    asyncio.run(main())


def test_unknown_pattern_is_refused_clearly(factory):
    async def main():
        rig = Rig(asyncio.get_running_loop(), factory)
        try:
            with pytest.raises(ValueError, match="unknown LED pattern 'disco'"):
                rig.panel.show("disco", "off")
        finally:
            rig.panel.close()
    asyncio.run(main())


def test_no_gpio_table_means_no_panel(factory):
    assert Panel.from_config(None, factory, on_press=print, loop=None) is None


def test_the_panel_runs_no_polling_thread(factory):
    """gpiozero's Button keeps a HoldThread waking ten times a second; the panel must not use it."""
    from gpiozero.mixins import HoldThread

    async def main():
        rig = Rig(asyncio.get_running_loop(), factory)
        try:
            assert not [t for t in threading.enumerate() if isinstance(t, HoldThread)]
        finally:
            rig.panel.close()
    asyncio.run(main())
