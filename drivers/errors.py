"""What the device drivers raise on purpose. The hub gathers these with its own (hub/errors.py)."""


class DriverError(Exception):
    """Base of every error a driver raises on purpose."""


class ParsingError(DriverError, ValueError):
    """Bytes or a document (a recording) could not be decoded."""
