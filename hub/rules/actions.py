"""What the engine asks the outside to do: commit an event, or show the resident's panel."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

LOGGER = logging.getLogger(__name__)

# Panel patterns (drivers/panel.py shows them)
LED_OK, LED_PREALERT, LED_ALERT, LED_ACKNOWLEDGED = "ok", "prealert", "alert", "acknowledged"
BUZZER_OFF, BUZZER_PREALERT, BUZZER_ALERT = "off", "prealert", "alert"


@dataclass(frozen=True)
class Emit:
    """An event to create (EventFactory.make(type, data, priority)) and commit."""

    type: str
    priority: int
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Panel:
    """The resident-facing state changed: show this LED pattern and buzzer pattern."""

    led: str
    buzzer: str


Action = Emit | Panel
