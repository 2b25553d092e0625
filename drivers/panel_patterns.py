"""What the resident's panel can show, and the gpiozero pin factories it can use, as plain data.

Kept apart from drivers/panel.py so that the configuration and the rules can name patterns and
factories without importing gpiozero (which probes for GPIO hardware when imported).
"""

from __future__ import annotations

# The names the rules ask for (hub/rules/actions.py re-exports them).
LED_OK, LED_PREALERT, LED_ALERT, LED_ACKNOWLEDGED = "ok", "prealert", "alert", "acknowledged"
BUZZER_OFF, BUZZER_PREALERT, BUZZER_ALERT = "off", "prealert", "alert"

# LED patterns as (on_time, off_time); None = steady on. Distinct at a glance:
# a calm heartbeat, a slow "please answer" blink, a fast alarm flash, a steady "help is coming".
LED_PATTERNS: dict[str, tuple[float, float] | None] = {
    LED_OK: (0.2, 4.8),
    LED_PREALERT: (0.5, 0.5),
    LED_ALERT: (0.1, 0.1),
    LED_ACKNOWLEDGED: None,
}
BUZZER_PATTERNS: dict[str, tuple[float, float] | None] = {
    BUZZER_OFF: (0.0, 0.0),
    BUZZER_PREALERT: (0.2, 1.8),
    BUZZER_ALERT: (0.5, 0.5),
}

# `[gpio] pin_factory` names -> (module, class), imported only when used (lgpio exists only on a Pi).
PIN_FACTORIES = {
    "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory"),
    "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory"),
    "pigpio": ("gpiozero.pins.pigpio", "PiGPIOFactory"),
    "native": ("gpiozero.pins.native", "NativeFactory"),
    "mock": ("gpiozero.pins.mock", "MockFactory"),
}
