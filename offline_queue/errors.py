"""What offline_queue raises on purpose. The hub gathers these with its own (hub/errors.py)."""


class QueueError(Exception):
    """Base of every error the store, the uploader and the receiver raise on purpose."""


class StoreError(QueueError):
    """The durable store failed."""


class ServerConfigError(QueueError, ValueError):
    """The sync settings are unusable; ``problems`` holds one ``KEY: problem`` line each."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))
