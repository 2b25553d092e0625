"""The resident's panel: SOS button (long press), OK button, an LED and a buzzer (gpiozero).

gpiozero calls back on its own threads; every press is handed to the asyncio loop with
``loop.call_soon_threadsafe``. The pin factory is injected (MockFactory in tests), and nothing
touches a pin before ``Panel(...)`` is built in the composition root. ``[gpio]`` absent: no panel.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import warnings
from typing import Callable

from gpiozero import LED, Buzzer, DigitalInputDevice
from gpiozero.exc import PinFactoryFallback

from drivers.panel_patterns import BUZZER_PATTERNS, LED_PATTERNS, PIN_FACTORIES

LOGGER = logging.getLogger(__name__)


def make_pin_factory(name: str):
    """The `[gpio] pin_factory` named; imported only now (lgpio exists only on a Pi)."""
    module, cls = PIN_FACTORIES[name]
    return getattr(importlib.import_module(module), cls)()

class Panel:
    """The buttons call ``on_press("sos" | "ok")`` on ``loop``; ``show`` sets LED and buzzer."""

    def __init__(self, pin_factory, *, sos_pin: int, ok_pin: int, led_pin: int,
                 buzzer_pin: int, sos_hold_s: float = 2.0,
                 on_press: Callable[[str], None], loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._on_press = on_press
        self._devices = []
        self._sos_hold_s = sos_hold_s
        self._hold_timer: asyncio.TimerHandle | None = None
        try:
            # DigitalInputDevice, not Button: every gpiozero Button runs a HoldThread that polls
            # ten times a second, for ever, even with no hold wanted (bench/daemon.py measured
            # 20 wakeups/s for the two buttons). The SOS hold is timed on the asyncio loop instead.
            self._sos = self._own(DigitalInputDevice(sos_pin, pull_up=True, pin_factory=pin_factory))
            self._ok = self._own(DigitalInputDevice(ok_pin, pull_up=True, pin_factory=pin_factory))
            self._led = self._own(LED(led_pin, pin_factory=pin_factory))
            self._buzzer = self._own(Buzzer(buzzer_pin, pin_factory=pin_factory))
        except Exception:
            self.close()
            raise
        # SOS needs a deliberate hold: a brush against the button must not call for help.
        self._sos.when_activated = lambda: self._call_in_loop(self._sos_down)
        self._sos.when_deactivated = lambda: self._call_in_loop(self._sos_up)
        self._ok.when_activated = lambda: self._hand_over("ok")
        self.led_pattern: str | None = None
        self.buzzer_pattern: str | None = None
        self.show("ok", "off")

    @classmethod
    def from_config(cls, gpio: dict | None, pin_factory, *, on_press, loop) -> "Panel | None":
        """``cfg["gpio"]`` as parsed (``None`` when the table is absent: no panel)."""
        if gpio is None:
            return None
        # gpiozero's default factory tries lgpio, rpigpio, pigpio, native in turn and warns once per
        # failure (PinFactoryFallback), several lines of stack noise. Say it once, in one line.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", PinFactoryFallback)
            try:
                return cls(pin_factory, sos_pin=gpio["sos_pin"], ok_pin=gpio["ok_pin"],
                           led_pin=gpio["led_pin"], buzzer_pin=gpio["buzzer_pin"],
                           sos_hold_s=gpio["sos_hold"], on_press=on_press, loop=loop)
            finally:
                fallbacks = [str(w.message) for w in caught if issubclass(w.category, PinFactoryFallback)]
                for w in caught:
                    if not issubclass(w.category, PinFactoryFallback):
                        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                if fallbacks:
                    LOGGER.warning("GPIO pin factory fallbacks: %s (set [gpio] pin_factory to choose one)",
                                   "; ".join(fallbacks))

    def _own(self, device):
        self._devices.append(device)
        return device

    def _hand_over(self, button: str) -> None:
        """Runs on a gpiozero thread: never call into the hub from here."""
        self._call_in_loop(self._on_press, button)

    def _call_in_loop(self, fn, *args) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:    # the loop is closed: we are shutting down
            LOGGER.warning("a button press during shutdown was not handled")

    def _sos_down(self) -> None:
        """On the loop: SOS pressed; it calls for help if still held after ``sos_hold_s``."""
        if self._hold_timer is None:
            self._hold_timer = self._loop.call_later(self._sos_hold_s, self._sos_held)

    def _sos_up(self) -> None:
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None

    def _sos_held(self) -> None:
        self._hold_timer = None
        if self._sos.is_active:
            self._on_press("sos")

    def show(self, led: str, buzzer: str) -> None:
        if led not in LED_PATTERNS:
            raise ValueError(f"unknown LED pattern {led!r} (one of {', '.join(LED_PATTERNS)})")
        if buzzer not in BUZZER_PATTERNS:
            raise ValueError(f"unknown buzzer pattern {buzzer!r} "
                             f"(one of {', '.join(BUZZER_PATTERNS)})")
        if led != self.led_pattern:
            timing = LED_PATTERNS[led]
            if timing is None:
                self._led.on()
            else:
                self._led.blink(*timing)
            self.led_pattern = led
            LOGGER.info("panel LED: %s", led)
        if buzzer != self.buzzer_pattern:
            on_s, off_s = BUZZER_PATTERNS[buzzer]
            if on_s:
                self._buzzer.beep(on_s, off_s)
            else:
                self._buzzer.off()
            self.buzzer_pattern = buzzer

    def close(self) -> None:
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        for device in reversed(self._devices):
            device.close()
        self._devices.clear()
