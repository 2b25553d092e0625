"""Logging to stderr, with each line's syslog priority when journald reads it.

Under systemd, stderr is a stream to journald and every line would be stored at the unit's
default priority (info), so `journalctl -p warning` would show nothing. journald reads a
leading ``<N>`` on each line as that line's priority (sd-daemon(3), SyslogLevelPrefix= in
systemd.exec(5), on by default). systemd sets ``JOURNAL_STREAM=<device>:<inode>`` for the
stream it connected (systemd.exec(5)); the prefix is added only when stderr is that stream,
so a technician running `carehub run` in a terminal sees plain lines.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# sd-daemon(3) / syslog(3) priorities.
SD_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}
FORMAT = "%(levelname)s %(name)s: %(message)s"


def priority_of(levelno: int) -> int:
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return SD_PRIORITY[level]
    return SD_PRIORITY[logging.DEBUG]


class JournalFormatter(logging.Formatter):
    """Every physical line gets the prefix: journald splits a traceback into lines of its own."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority_of(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def stream_is_journal(stream=None, env=os.environ) -> bool:
    value = env.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


def setup(level: str = "info", stream=None, env=os.environ) -> None:
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JournalFormatter(FORMAT) if stream_is_journal(stream, env) else logging.Formatter(FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    logging.captureWarnings(True)
    warnings.showwarning = _one_line_warning


_seen_warnings: set[tuple[str, str]] = set()


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Library warnings (gpiozero's PinFactoryFallback among them) as one log line each, once."""
    key = (category.__name__, str(message))
    if key in _seen_warnings:
        return
    _seen_warnings.add(key)
    logging.getLogger("py.warnings").warning("%s: %s", category.__name__, str(message).splitlines()[0]
                                             if str(message) else "")
