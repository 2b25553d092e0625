"""Recordings (spec section 1): raw device bytes with the times they arrived.

One JSON object per line, in time order::

    {"t": "2026-11-23T22:14:05.120+08:00", "source": "belt", "hex": "5359850200014276 5443"}

Written by ``carehub monitor --record``, read by ``carehub replay`` and by the tests.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Iterator

from drivers.errors import ParsingError

LOGGER = logging.getLogger(__name__)

SOURCES = ("belt", "watch", "panel")


@dataclass(frozen=True)
class Chunk:
    """Bytes as they came off the line, with the wall time they arrived and where in the file."""

    t: datetime
    source: str
    data: bytes
    line: int = 0


def format_time(when: datetime) -> str:
    if when.tzinfo is None:
        raise ValueError("recording times must be timezone-aware")
    return when.isoformat(timespec="milliseconds")


def encode_line(when: datetime, data: bytes, source: str = "belt") -> str:
    return json.dumps({"t": format_time(when), "source": source, "hex": data.hex()},
                      separators=(", ", ": ")) + "\n"


class RecordingWriter:
    """Appends chunks to a recording; each line is flushed so an interrupted monitor keeps
    everything it showed."""

    def __init__(self, path: str | os.PathLike, source: str = "belt"):
        self.path = os.fspath(path)
        self.source = source
        self._file: IO[str] | None = open(self.path, "a", encoding="utf-8")
        self.chunks = 0

    def write(self, data: bytes, when: datetime) -> None:
        if self._file is None or not data:
            return
        self._file.write(encode_line(when, data, self.source))
        self._file.flush()
        self.chunks += 1

    def write_line(self, line: str) -> None:
        """A line already in the recording format (another device's, e.g. the watch's)."""
        if self._file is None:
            return
        self._file.write(line if line.endswith("\n") else line + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "RecordingWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def parse_line(text: str, where: str = "") -> Chunk | None:
    """One line -> a Chunk; None for a blank line; ParsingError saying what is wrong."""
    if not text.strip():
        return None
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise ParsingError(f"{where}: not a JSON object ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise ParsingError(f"{where}: not a JSON object")
    missing = [k for k in ("t", "source", "hex") if k not in obj]
    if missing:
        raise ParsingError(f"{where}: missing {', '.join(missing)} "
                           '(each line needs "t", "source" and "hex")')
    t, source, hex_text = obj["t"], obj["source"], obj["hex"]
    if not isinstance(t, str):
        raise ParsingError(f"{where}: t {t!r} is not an RFC 3339 time")
    try:
        when = datetime.fromisoformat(t)
    except ValueError:
        raise ParsingError(f"{where}: t {t!r} is not an RFC 3339 time "
                           '(e.g. "2026-11-23T22:14:05.120+08:00")') from None
    if when.tzinfo is None:
        raise ParsingError(f"{where}: t {t!r} has no UTC offset (add e.g. +08:00 or Z)")
    if not isinstance(source, str) or not source:
        raise ParsingError(f"{where}: source {source!r} is not a device name")
    if not isinstance(hex_text, str):
        raise ParsingError(f"{where}: hex {hex_text!r} is not a string of hex digits")
    try:
        data = bytes.fromhex("".join(hex_text.split()))
    except ValueError:
        raise ParsingError(f"{where}: hex {hex_text[:40]!r} is not hex digits "
                           "(pairs of 0-9a-f, spaces allowed)") from None
    return Chunk(when, source, data, 0)


def read_recording(path: str | os.PathLike, source: str | None = None) -> Iterator[Chunk]:
    """Every chunk in file order (optionally of one source). Raises ParsingError naming the
    file and line of the first bad line, or OSError if the file cannot be read."""
    name = os.fspath(path)
    with open(name, encoding="utf-8", errors="strict") as f:
        lineno = 0
        try:
            for lineno, text in enumerate(f, 1):
                chunk = parse_line(text, f"{name}:{lineno}")
                if chunk is None or (source is not None and chunk.source != source):
                    continue
                yield Chunk(chunk.t, chunk.source, chunk.data, lineno)
        except UnicodeDecodeError:
            raise ParsingError(f"{name}:{lineno + 1}: not UTF-8 text") from None
