"""One error hierarchy for the hub; each is also typed by the builtin it resembles."""


class HubError(Exception):
    """Base of every error the hub raises on purpose."""


class ConfigError(HubError, ValueError):
    """The configuration is invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ParsingError(HubError, ValueError):
    """Bytes or a document could not be decoded."""


class LinkLost(HubError, ConnectionError):
    """A device link (serial, BLE) went away."""


class StoreError(HubError):
    """The durable store failed."""


class SyncFailed(HubError, ConnectionError):
    """An upload to the community server failed."""
