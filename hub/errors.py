"""The hub's error hierarchy.

Each floor has one root: ``DriverError`` (drivers/errors.py), ``QueueError``
(offline_queue/errors.py) and ``HubError`` here; the floors below never import the hub, so their
roots cannot derive from ours. ``EXPECTED_ERRORS`` is the one tuple a command catches to turn an
expected failure into a message instead of a traceback. Each error is also typed by the builtin it
resembles.
"""

from drivers.errors import DriverError, ParsingError  # noqa: F401  (re-exported)
from offline_queue.errors import QueueError, ServerConfigError, StoreError  # noqa: F401


class HubError(Exception):
    """Base of every error the hub itself raises on purpose."""


class ConfigError(HubError, ValueError):
    """The configuration is invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


EXPECTED_ERRORS = (HubError, DriverError, QueueError)
