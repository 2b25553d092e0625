"""One facade over the belt protocols: bytes in, normalised ``Reading``s out.

``make_decoder(protocol)`` is all the pipeline, the monitor and replay need. The decoder is
pure (no I/O); frames it wants written (the start-up handshake again after the radar says it
rebooted) wait in ``take_outgoing()`` for whoever owns the link.
"""

from __future__ import annotations

import logging

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
    """Base: counts frames, logs the firmware once and each unknown message once."""

    protocol = ""

    def __init__(self):
        self.firmware: str | None = None
        self._extra = {"unknown": 0}
        self._seen_unknown: set = set()
        self._outbox: list[bytes] = []

    def feed(self, data: bytes) -> list[Reading]:
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
    protocol = micradar.PROTOCOL

    def __init__(self):
        super().__init__()
        self._reassembler = micradar.Reassembler()

    def handshake_frames(self) -> list[bytes]:
        return micradar.handshake_frames()

    def feed(self, data: bytes) -> list[Reading]:
        out = []
        interpret = micradar.interpret
        for frame in self._reassembler.feed(data):
            reading = interpret(frame)
            if reading.kind != "instant":
                self._note(reading)
                if micradar.is_reinit(reading):
                    LOGGER.info("belt radar (re)initialised: sending its start-up frames")
                    self._outbox.extend(micradar.handshake_frames())
            out.append(reading)
        return out


class TinyFrameDecoder(Decoder):
    protocol = tinyframe.PROTOCOL

    def __init__(self):
        super().__init__()
        self._reassembler = tinyframe.Reassembler()

    def handshake_frames(self) -> list[bytes]:
        return tinyframe.handshake_frames()

    def feed(self, data: bytes) -> list[Reading]:
        out = []
        for frame in self._reassembler.feed(data):
            reading = tinyframe.interpret(frame)
            if reading.kind != "instant":
                self._note(reading)
            out.append(reading)
        return out


class NdjsonDecoder(Decoder):
    protocol = ndjson.PROTOCOL

    def __init__(self):
        super().__init__()
        self._reassembler = ndjson.Reassembler()
        self._warned: set = set()

    def feed(self, data: bytes) -> list[Reading]:
        out = []
        for line in self._reassembler.feed(data):
            for key in line.unknown:
                self._warn_once(("unknown", key), "belt NDJSON key %r is not in the schema "
                                "(docs/belt-ndjson.md); ignored", key)
            for key, why in line.rejected.items():
                self._warn_once(("rejected", key), "belt NDJSON key %r dropped: %s", key, why)
            reading = ndjson.to_reading(line)
            self._note(reading)
            out.append(reading)
        return out

    def _warn_once(self, key, msg, *args) -> None:
        if key not in self._warned and len(self._warned) < 256:
            self._warned.add(key)
            LOGGER.warning(msg, *args)


_DECODERS = {"micradar": MicRadarDecoder, "tinyframe": TinyFrameDecoder, "ndjson": NdjsonDecoder}


def make_decoder(protocol: str) -> Decoder:
    try:
        return _DECODERS[protocol]()
    except KeyError:
        raise ValueError(f"unknown belt protocol {protocol!r} (use one of: "
                         + ", ".join(PROTOCOLS) + ")") from None
