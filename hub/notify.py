"""sd_notify over the standard library (after systemd's notify-selfcontained-example.py, MIT-0).

The protocol is declared stable by systemd, so no third-party package is needed.
"""

from __future__ import annotations

import logging
import os
import socket

LOGGER = logging.getLogger(__name__)


class Notifier:
    """Sends READY/STATUS/WATCHDOG/STOPPING datagrams; a no-op when not run by systemd."""

    def __init__(self, env=os.environ):
        addr = env.get("NOTIFY_SOCKET", "")
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        self._addr = addr or None
        usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
        valid = usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        # sd_watchdog_enabled(3): ping at half the timeout.
        self.watchdog_interval_s = int(usec) / 2e6 if valid else None
        self._failed = False
        self._last_status = None

    @property
    def enabled(self) -> bool:
        return self._addr is not None

    def send(self, message: str) -> None:
        if not self._addr:
            return
        try:
            # Non-blocking: a notify socket nobody drains (its queue full) must never freeze the
            # event loop; the datagram is then dropped and reported once, like any other failure.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) as s:
                s.connect(self._addr)
                s.sendall(message.encode())
            if self._failed:
                LOGGER.info("systemd notify socket reachable again")
            self._failed = False
        except OSError as e:
            if not self._failed:
                LOGGER.warning("cannot notify systemd at %r: %s", self._addr, e)
            self._failed = True

    def ready(self, status: str) -> None:
        self._last_status = status
        self.send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        if status != self._last_status:
            self._last_status = status
            self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1\nSTATUS=stopping")
