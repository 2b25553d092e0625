"""One facade over the belt protocols: bytes in, normalised ``Reading``s out.

``make_decoder(protocol)`` is all the pipeline, the monitor and replay need. The decoder is
pure (no I/O); frames it wants written (the start-up handshake again after the radar says it
rebooted) wait in ``take_outgoing()`` for whoever owns the link.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from drivers.belt import micradar, ndjson, tinyframe
from drivers.belt.reading import Reading

LOGGER = logging.getLogger(__name__)

PROTOCOLS = ("micradar", "tinyframe", "ndjson")
DEFAULT_BAUDRATES = {
    "micradar": micradar.DEFAULT_BAUDRATE,
    "tinyframe": tinyframe.DEFAULT_BAUDRATE,
    "ndjson": ndjson.DEFAULT_BAUDRATE,
}


def default_baudrate(protocol: str, baudrate: int = 0) -> int:
    """The configured rate, or the protocol's own when the configuration says 0."""
    return baudrate or DEFAULT_BAUDRATES[protocol]


class Decoder:
    """Base: counts frames, logs the firmware once and each unknown message once.

    ``feed`` never raises: a frame the protocol code cannot interpret is dropped and counted
    (``decode_errors``), and should the reassembler itself fail, its buffer is dropped with it,
    so one bad input can never stay in the buffer and fail again on every later read.
    """

    protocol = ""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic):
        self.firmware: str | None = None
        self.monotonic = monotonic
        self._extra = {"unknown": 0, "decode_errors": 0}
        self._seen_unknown: set = set()
        self._seen_errors: set = set()
        self._outbox: list[bytes] = []

    def feed(self, data: bytes) -> list[Reading]:
        try:
            frames = self._reassembler.feed(data)
        except Exception as exc:  # a bug in the framing: never let its input stay buffered
            self._error("framing", exc)
            self._reassembler.reset()
            return []
        out = []
        for frame in frames:
            try:
                reading = self._interpret(frame)
            except Exception as exc:
                self._error("interpreting", exc)
                continue
            out.append(reading)
        return out

    def _interpret(self, frame) -> Reading:
        raise NotImplementedError

    def handshake_frames(self) -> list[bytes]:
        return []

    @property
    def counters(self) -> dict:
        out = dict(self._reassembler.counters)
        out.update(self._extra)
        return out

    @property
    def buffered(self) -> int:
        return self._reassembler.buffered

    def take_outgoing(self) -> list[bytes]:
        out, self._outbox = self._outbox, []
        return out

    def _error(self, what: str, exc: Exception) -> None:
        self._extra["decode_errors"] += 1
        key = (what, type(exc).__name__)
        if key not in self._seen_errors and len(self._seen_errors) < 64:
            self._seen_errors.add(key)
            LOGGER.error("belt %s: %s failed on a frame, dropped it (counted from now on): %r",
                         self.protocol, what, exc, exc_info=exc)

    def _note(self, reading: Reading) -> None:
        if reading.firmware and reading.firmware != self.firmware:
            self.firmware = reading.firmware
            LOGGER.info("belt firmware: %s (%s)", reading.firmware, self.protocol)
        if reading.kind == "unknown":
            self._extra["unknown"] += 1
            raw = reading.raw or {}
            key = (raw.get("control"), raw.get("command"), raw.get("type"))
            if key not in self._seen_unknown and len(self._seen_unknown) < 256:
                self._seen_unknown.add(key)
                LOGGER.warning("belt sent a message this hub does not know, kept raw: %s",
                               dict(raw))


class MicRadarDecoder(Decoder):
    """Answers a reported reset with the start-up frames, at most once per
    ``micradar.REHANDSHAKE_MIN_S``: a flood of reset frames never floods the sensor, and a reset
    inside the interval is still answered once the interval is over."""

    protocol = micradar.PROTOCOL

    def __init__(self, monotonic: Callable[[], float] = time.monotonic):
        super().__init__(monotonic)
        self._reassembler = micradar.Reassembler()
        self._extra["handshakes_deferred"] = 0
        self._handshake_at: float | None = None
        self._handshake_owed = False

    def handshake_frames(self) -> list[bytes]:
        return micradar.handshake_frames()

    def _interpret(self, frame) -> Reading:
        reading = micradar.interpret(frame)
        if reading.kind != "instant":
            self._note(reading)
            if micradar.is_reinit(reading):
                self._handshake_owed = True
                if not self._may_handshake():
                    self._extra["handshakes_deferred"] += 1
                self._handshake_if_due()
        return reading

    def take_outgoing(self) -> list[bytes]:
        self._handshake_if_due()
        return super().take_outgoing()

    def _may_handshake(self) -> bool:
        return (self._handshake_at is None
                or self.monotonic() - self._handshake_at >= micradar.REHANDSHAKE_MIN_S)

    def _handshake_if_due(self) -> None:
        if self._handshake_owed and self._may_handshake():
            LOGGER.info("belt radar (re)initialised: sending its start-up frames")
            self._handshake_owed = False
            self._handshake_at = self.monotonic()
            self._outbox = micradar.handshake_frames()   # never more than one set waiting


class TinyFrameDecoder(Decoder):
    protocol = tinyframe.PROTOCOL

    def __init__(self, monotonic: Callable[[], float] = time.monotonic):
        super().__init__(monotonic)
        self._reassembler = tinyframe.Reassembler()

    def handshake_frames(self) -> list[bytes]:
        return tinyframe.handshake_frames()

    def _interpret(self, frame) -> Reading:
        reading = tinyframe.interpret(frame)
        if reading.kind != "instant":
            self._note(reading)
        return reading


class NdjsonDecoder(Decoder):
    protocol = ndjson.PROTOCOL

    def __init__(self, monotonic: Callable[[], float] = time.monotonic):
        super().__init__(monotonic)
        self._reassembler = ndjson.Reassembler()
        self._warned: set = set()

    def _interpret(self, line) -> Reading:
        for key in line.unknown:
            self._warn_once(("unknown", key), "belt NDJSON key %r is not in the schema "
                            "(docs/belt-ndjson.md); ignored", key)
        for key, why in line.rejected.items():
            self._warn_once(("rejected", key), "belt NDJSON key %r dropped: %s", key, why)
        reading = ndjson.to_reading(line)
        self._note(reading)
        return reading

    def _warn_once(self, key, msg, *args) -> None:
        if key not in self._warned and len(self._warned) < 256:
            self._warned.add(key)
            LOGGER.warning(msg, *args)


_DECODERS = {"micradar": MicRadarDecoder, "tinyframe": TinyFrameDecoder, "ndjson": NdjsonDecoder}


def make_decoder(protocol: str, *, monotonic: Callable[[], float] = time.monotonic) -> Decoder:
    """``monotonic`` paces what the decoder asks to send (the re-handshake after a reset)."""
    try:
        cls = _DECODERS[protocol]
    except KeyError:
        raise ValueError(f"unknown belt protocol {protocol!r} (use one of: "
                         + ", ".join(PROTOCOLS) + ")") from None
    return cls(monotonic)
