"""Recording the watch: ``"source": "watch"`` lines beside the belt's (docs/recordings.md).

One JSON object per line, in time order, the same envelope as the belt's (``t``, ``source``,
``hex``) so one file holds both devices and readers that know only the envelope skip nothing
they need (drivers/recording.py reads the envelope). What the bytes were is said by one more key::

    {"t": "...+08:00", "source": "watch", "hex": "01", "char": "0000ffe1-0000-1000-8000-00805f9b34fb"}
    {"t": "...+08:00", "source": "watch", "hex": "44000b3a01", "adv": "0000fcd2-0000-1000-8000-00805f9b34fb", "rssi": -71}
    {"t": "...+08:00", "source": "watch", "hex": "", "link": "disconnected", "reason": "out of range"}

Raw bytes, not decoded values: a replay runs today's decoder over them, so a decoder fix
shows on old recordings.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Callable, Iterable, Iterator

from drivers.errors import ParsingError
from drivers.recording import format_time
from drivers.watch.decoder import DEDUPE_S, WatchDecoder
from drivers.watch.profiles import Profile
from drivers.watch.reports import LinkStatus, WatchReport

SOURCE = "watch"


class RecordingError(ParsingError):
    """A watch line of a recording is not valid; the message names file and line."""


@dataclass(frozen=True)
class WatchRecord:
    t: datetime
    data: bytes = b""
    char: str | None = None       # a GATT notification or read of this characteristic
    adv: str | None = None        # service data of this UUID in an advertisement
    rssi: int | None = None
    link: str | None = None       # "connected" / "disconnected"
    reason: str | None = None
    line: int = 0


def encode_line(rec: WatchRecord) -> str:
    obj: dict = {"t": format_time(rec.t), "source": SOURCE, "hex": rec.data.hex()}
    for key in ("char", "adv", "rssi", "link", "reason"):
        value = getattr(rec, key)
        if value is not None:
            obj[key] = value
    return json.dumps(obj, separators=(", ", ": ")) + "\n"


class WatchRecorder:
    """Given to ``WatchLink(recorder=...)``; flushes every line, as the belt's writer does."""

    def __init__(self, path_or_file: str | os.PathLike | IO[str], now: Callable[[], datetime]):
        if hasattr(path_or_file, "write"):
            self._file, self._owned = path_or_file, False
        else:
            self._file, self._owned = open(os.fspath(path_or_file), "a", encoding="utf-8"), True
        self.now = now
        self.lines = 0

    def _write(self, rec: WatchRecord) -> None:
        if self._file is None:
            return
        self._file.write(encode_line(rec))
        self._file.flush()
        self.lines += 1

    def notification(self, char: str, data: bytes) -> None:
        self._write(WatchRecord(self.now(), bytes(data), char=char))

    def advertisement(self, uuid: str, data: bytes, rssi: int | None) -> None:
        self._write(WatchRecord(self.now(), bytes(data), adv=uuid, rssi=rssi))

    def link(self, state: str, reason: str | None) -> None:
        self._write(WatchRecord(self.now(), link=state, reason=reason))

    def close(self) -> None:
        if self._file is not None and self._owned:
            self._file.close()
        self._file = None


def parse_line(text: str, where: str = "") -> WatchRecord | None:
    """A watch line -> a record; None for a blank line or another source's line."""
    if not text.strip():
        return None
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise RecordingError(f"{where}: not a JSON object ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise RecordingError(f"{where}: not a JSON object")
    if obj.get("source") != SOURCE:
        return None
    try:
        t = datetime.fromisoformat(obj["t"])
        data = bytes.fromhex("".join(str(obj.get("hex", "")).split()))
    except (KeyError, TypeError, ValueError):
        raise RecordingError(f"{where}: a watch line needs \"t\" (RFC 3339 with offset) and "
                             "\"hex\" (hex digits)") from None
    if t.tzinfo is None:
        raise RecordingError(f"{where}: t {obj['t']!r} has no UTC offset")
    kinds = [k for k in ("char", "adv", "link") if k in obj]
    if len(kinds) != 1 or not all(isinstance(obj[k], str) for k in kinds):
        raise RecordingError(f"{where}: a watch line has exactly one of \"char\", \"adv\" or \"link\"")
    rssi = obj.get("rssi")
    return WatchRecord(t, data, obj.get("char"), obj.get("adv"),
                       rssi if isinstance(rssi, int) else None, obj.get("link"), obj.get("reason"))


def read_recording(path: str | os.PathLike) -> Iterator[WatchRecord]:
    """The watch lines of a recording, in file order, each with its line number."""
    name = os.fspath(path)
    with open(name, encoding="utf-8") as f:
        for n, text in enumerate(f, 1):
            rec = parse_line(text, f"{name}:{n}")
            if rec is not None:
                yield WatchRecord(rec.t, rec.data, rec.char, rec.adv, rec.rssi, rec.link, rec.reason, n)


def replay(records: Iterable[WatchRecord], profile: Profile, dedupe_s: float = DEDUPE_S,
           ) -> Iterator[tuple[datetime, WatchReport]]:
    """What the link delivered, again: each record through a fresh decoder, with monotonic
    time counted from the first record (a recording holds wall time only)."""
    decoder = WatchDecoder(profile, dedupe_s)
    t0 = None
    for rec in records:
        t0 = t0 or rec.t
        mono = (rec.t - t0).total_seconds()
        if rec.link is not None:
            yield rec.t, LinkStatus(rec.link, rec.reason, mono=mono)
        elif rec.char is not None:
            for r in decoder.notification(rec.char, rec.data, mono):
                yield rec.t, r
        else:
            for r in decoder.advertisement({rec.adv: rec.data}, mono):
                yield rec.t, r
