"""The daemon's live feed: what the bed sensor and the watch send, for `carehub monitor` beside
the daemon.

The daemon holds the serial port exclusively, so a technician's monitor cannot split the byte
stream with it (which made the daemon see false disconnects). Instead the daemon offers every
chunk of bytes it reads, and its link's state changes, on a unix socket in its state directory:
one JSON object per line, in the recording format (drivers/recording.py), so the monitor decodes
them with the same decoder and can record them. The watch's lines are its recorder's
(drivers/watch/recording.py): the watch takes one connection, and the daemon holds it. No network port: the socket is a file, mode 0660,
so only the service user and its group (the technicians') can attach.

A client that does not keep up loses lines (counted), never slows the daemon: each client has a
bounded buffer and is dropped when it fills.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from datetime import datetime
from pathlib import Path

from drivers.recording import format_time

LOGGER = logging.getLogger(__name__)

FEED_FILE = "live.sock"
CLIENT_BUFFER_BYTES = 256 * 1024
MAX_CLIENTS = 4


def feed_path(cfg: dict) -> Path:
    return Path(cfg["hub"]["state_dir"]) / FEED_FILE


class LiveFeed:
    """Broadcasts lines to whoever is attached; costs nothing while nobody is."""

    def __init__(self, path: Path, clock):
        self.path = Path(path)
        self.clock = clock
        self.clients: set[asyncio.StreamWriter] = set()
        self.dropped_clients = 0
        self._server: asyncio.AbstractServer | None = None
        self._stop = asyncio.Event()

    async def run(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a daemon that was killed
        try:
            self._server = await asyncio.start_unix_server(self._attach, path=str(self.path))
            os.chmod(self.path, 0o660)
        except OSError as exc:  # the feed is a convenience: the hub runs without it
            LOGGER.warning("live feed for carehub monitor unavailable at %s: %s", self.path, exc)
            return
        try:
            await self._stop.wait()
        finally:
            self._server.close()
            for writer in list(self.clients):
                writer.close()
            with contextlib.suppress(OSError):
                self.path.unlink()

    def stop(self) -> None:
        self._stop.set()

    async def _attach(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.clients) >= MAX_CLIENTS:
            writer.close()
            return
        writer.transport.set_write_buffer_limits(high=CLIENT_BUFFER_BYTES)
        self.clients.add(writer)
        LOGGER.info("carehub monitor attached to the live feed (%d attached)", len(self.clients))
        try:
            await reader.read()  # until the client goes; it never sends anything we need
        except (ConnectionError, OSError):
            pass
        finally:
            self._detach(writer)

    def _detach(self, writer: asyncio.StreamWriter) -> None:
        if writer in self.clients:
            self.clients.discard(writer)
            writer.close()
            LOGGER.info("carehub monitor detached from the live feed")

    # --- what the daemon offers ----------------------------------------------------------
    def belt_bytes(self, data: bytes) -> None:
        if self.clients:
            self._send({"t": self._now(), "source": "belt", "hex": data.hex()})

    def belt_status(self, state: str, info: dict) -> None:
        if self.clients:
            self._send({"t": self._now(), "source": "belt", "state": state,
                        "reason": str(info.get("reason") or "")})

    def watch_writer(self) -> "_FeedFile":
        """A file for ``WatchRecorder``: its lines (already in the recording format) go to
        whoever is attached, so the monitor records the watch the daemon holds."""
        return _FeedFile(self)

    def _now(self) -> str:
        now: datetime = self.clock.now()
        return format_time(now)

    def _send(self, doc: dict) -> None:
        self._send_line((json.dumps(doc, separators=(",", ":")) + "\n").encode())

    def _send_line(self, line: bytes) -> None:
        for writer in list(self.clients):
            if writer.transport.get_write_buffer_size() + len(line) > CLIENT_BUFFER_BYTES:
                self.dropped_clients += 1
                LOGGER.warning("carehub monitor did not keep up with the live feed: detached it")
                self._detach(writer)
                continue
            writer.write(line)


class _FeedFile:
    """write() of whole lines to the feed; nothing at all while nobody is attached."""

    def __init__(self, feed: LiveFeed):
        self.feed = feed

    def write(self, text: str) -> None:
        if self.feed.clients:
            self.feed._send_line(text.encode())

    def flush(self) -> None:
        pass
