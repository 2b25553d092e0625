"""What the engine asks the outside to do: commit an event, or show the resident's panel."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

LOGGER = logging.getLogger(__name__)

# Panel patterns: named in drivers/panel_patterns.py, shown by drivers/panel.py.
from drivers.panel_patterns import (  # noqa: E402,F401  (re-exported for the rules)
    BUZZER_ALERT, BUZZER_OFF, BUZZER_PREALERT, LED_ACKNOWLEDGED, LED_ALERT, LED_OK, LED_PREALERT)


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
