"""``carehub monitor``: a live view of the bed sensor for the technician installing it.

One readable line per decoded reading, the link's state changes, and every few seconds the
frame and error counters and the firmware. ``--record`` also writes the raw bytes with their
arrival times to a recording (drivers/recording.py) that ``carehub replay`` can play back.

The port is opened exclusively. When the daemon already holds it, the monitor attaches to the
daemon's live feed (hub/feed.py, a unix socket in the state directory) instead of fighting it
for the bytes, and says so. The watch is only ever seen that way: it takes one connection,
and the daemon holds it; its lines in the feed are shown decoded and recorded as they are
(``"source": "watch"``, docs/recordings.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import IO

from drivers.belt.decoder import PROTOCOLS, default_baudrate, make_decoder
from drivers.belt.link import BeltLink, port_in_use
from drivers.belt.reading import Reading
from hub.clock import Clock, SystemClock
from drivers.recording import RecordingWriter
from hub.feed import FEED_FILE

LOGGER = logging.getLogger(__name__)

EX_OK, EX_USAGE, EX_CANTCREAT, EX_TEMPFAIL = 0, 64, 73, 75

_LABELS = (
    ("presence", "presence", None), ("in_bed", "in bed", None),
    ("heart_rate_bpm", "HR", "bpm"), ("resp_rate_per_min", "RR", "/min"),
    ("resp_state", "breathing", None), ("motion", "motion", None),
    ("movement_index", "movement", None), ("distance_m", "distance", "m"),
    ("sleep_stage", "sleep", None), ("turnover_count", "turn-overs", None),
    ("out_of_bed_count", "times out of bed", None), ("out_of_bed_min", "out of bed", "min"),
    ("apnea_count", "apneas", None), ("firmware", "firmware", None),
)


def _value(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def describe(reading: Reading) -> str:
    """One line a person can read, e.g. ``HR 62 bpm``, ``in bed yes``."""
    parts = []
    for name, label, unit in _LABELS:
        v = getattr(reading, name)
        if v is not None:
            parts.append(f"{label} {_value(v)}" + (f" {unit}" if unit else ""))
    if reading.hr_clamped:
        parts.append("(at the device's limit: may be higher)")
    if reading.kind == "window" and reading.window_s:
        parts.insert(0, f"[{reading.window_s / 60:g}-min summary]")
    elif reading.kind == "night_summary":
        parts.insert(0, "[night summary]")
    raw = reading.raw or {}
    if reading.kind == "unknown":
        parts.append("unknown message, kept raw: " + " ".join(
            f"{k}={v:#04x}" if isinstance(v, int) else f"{k}={v}"
            for k, v in raw.items() if k != "reason"))
    elif reading.kind in ("event", "info") and not parts:
        parts.append(", ".join(f"{k}={v}" for k, v in raw.items()
                               if k not in ("control", "command", "type", "id")))
    return "; ".join(parts) or "(empty)"


def describe_counters(counters: dict, firmware: str | None) -> str:
    ok = counters.get("frames_ok", 0)
    errors = ", ".join(f"{k} {v}" for k, v in counters.items() if k != "frames_ok" and v)
    return (f"frames ok {ok}; dropped: {errors or 'none'}; "
            f"firmware {firmware or 'not reported yet'}")


async def run_monitor(url: str, protocol: str, baudrate: int = 0, record_path=None,
                      out: IO[str] = sys.stdout, stop: asyncio.Event | None = None, *,
                      stats_interval_s: float = 5.0, stale_timeout_s: float = 30.0,
                      reconnect_max_s: float = 60.0, clock: Clock | None = None) -> int:
    """Show the belt live until ``stop`` is set (or the task is cancelled); an exit status.

    A missing device is shown as disconnected and retried, never a traceback.
    """
    if protocol not in PROTOCOLS:
        print(f"carehub monitor: unknown protocol {protocol!r} (use one of: "
              f"{', '.join(PROTOCOLS)})", file=out, flush=True)
        return EX_USAGE
    clock = clock or SystemClock()
    decoder = make_decoder(protocol)
    baudrate = default_baudrate(protocol, baudrate)
    writer = None
    if record_path is not None:
        try:
            writer = RecordingWriter(record_path)
        except OSError as exc:
            print(f"carehub monitor: cannot write the recording {record_path}: "
                  f"{exc.strerror or exc}", file=out, flush=True)
            return EX_CANTCREAT
    stop = stop or asyncio.Event()

    def show(line: str) -> None:
        stamp = clock.now().strftime("%H:%M:%S.%f")[:-3]
        out.write(f"{stamp} {line}\n")
        out.flush()

    link: BeltLink

    def on_bytes(data: bytes) -> None:
        if writer is not None:
            writer.write(data, clock.now())
        for reading in decoder.feed(data):
            show(describe(reading))
        for frame in decoder.take_outgoing():
            pending.add(asyncio.ensure_future(link.write(frame)))
            pending_cleanup()

    def on_status(state: str, info: dict) -> None:
        reason = f" ({info['reason']})" if info.get("reason") else ""
        show(f"belt {state} on {url}{reason}")

    pending: set = set()

    def pending_cleanup() -> None:
        for task in [t for t in pending if t.done()]:
            pending.discard(task)

    link = BeltLink(url, baudrate=baudrate, on_bytes=on_bytes, on_status=on_status,
                    stale_timeout_s=stale_timeout_s, reconnect_max_s=reconnect_max_s,
                    handshake=decoder.handshake_frames(), clock=clock)
    show(f"monitoring {url} ({protocol}, {baudrate} baud)"
         + (f", recording to {record_path}" if writer else "") + "; Ctrl-C to stop")
    link_task = asyncio.ensure_future(link.run())
    try:
        while not stop.is_set() and not link_task.done():
            try:
                await asyncio.wait_for(stop.wait(), stats_interval_s)
            except asyncio.TimeoutError:
                show(describe_counters(decoder.counters, decoder.firmware))
    finally:
        link.stop()
        try:
            await asyncio.wait_for(asyncio.shield(link_task), 2.0)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            link_task.cancel()
        for task in pending:
            task.cancel()
        if writer is not None:
            writer.close()
        show(describe_counters(decoder.counters, decoder.firmware))
    return EX_OK


async def run_attached(sock_path, protocol: str, record_path=None, out: IO[str] = sys.stdout,
                       stop: asyncio.Event | None = None, *, stats_interval_s: float = 5.0) -> int:
    """Show the daemon's live feed: the bytes it reads, decoded here, until ``stop`` or the
    daemon goes away. Nothing is ever written to the sensor from here."""
    decoder = make_decoder(protocol)
    try:
        reader, writer_ = await asyncio.open_unix_connection(str(sock_path))
    except OSError as exc:
        print(f"carehub monitor: cannot attach to the daemon's live feed {sock_path}: "
              f"{exc.strerror or exc}", file=out, flush=True)
        return EX_TEMPFAIL
    recording = None
    if record_path is not None:
        try:
            recording = RecordingWriter(record_path)
        except OSError as exc:
            writer_.close()
            print(f"carehub monitor: cannot write the recording {record_path}: "
                  f"{exc.strerror or exc}", file=out, flush=True)
            return EX_CANTCREAT
    stop = stop or asyncio.Event()
    watch = WatchLines()

    def show(stamp: str, line: str) -> None:
        out.write(f"{stamp} {line}\n")
        out.flush()

    async def lines() -> None:
        while True:
            raw = await reader.readline()
            if not raw:
                show("--:--:--.---", "the daemon closed its live feed (stopped or restarted)")
                return
            try:
                doc = json.loads(raw)
                when = datetime.fromisoformat(doc["t"])
            except (ValueError, KeyError, TypeError):
                continue
            stamp = when.strftime("%H:%M:%S.%f")[:-3]
            if doc.get("source") == "watch":
                if recording is not None:
                    recording.write_line(raw.decode())
                for line in watch.describe(raw.decode()):
                    show(stamp, line)
            elif "state" in doc:
                reason = f" ({doc['reason']})" if doc.get("reason") else ""
                show(stamp, f"belt {doc['state']} (as the daemon sees it){reason}")
            elif "hex" in doc:
                try:
                    data = bytes.fromhex(doc["hex"])
                except (ValueError, TypeError):
                    continue
                if recording is not None:
                    recording.write(data, when)
                for reading in decoder.feed(data):
                    show(stamp, describe(reading))
                decoder.take_outgoing()  # the daemon talks to the sensor, not us

    feed = asyncio.ensure_future(lines())
    try:
        while not stop.is_set() and not feed.done():
            done, _ = await asyncio.wait({feed, asyncio.ensure_future(stop.wait())},
                                         timeout=stats_interval_s,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:
                show(datetime.now().strftime("%H:%M:%S.%f")[:-3],
                     describe_counters(decoder.counters, decoder.firmware))
    finally:
        feed.cancel()
        writer_.close()
        if recording is not None:
            recording.close()
    return EX_OK


class WatchLines:
    """The watch's lines of the daemon's feed, decoded for the technician."""

    def __init__(self):
        from drivers.watch.decoder import WatchDecoder
        from drivers.watch.profiles import make_profile
        self.decoder = WatchDecoder(make_profile("standard"), dedupe_s=0.0)

    def describe(self, line: str) -> list[str]:
        from drivers.errors import ParsingError
        from drivers.watch.recording import parse_line
        try:
            rec = parse_line(line, "feed")
        except ParsingError:
            return []
        if rec is None:
            return []
        if rec.link is not None:
            return [f"watch {rec.link} (as the daemon sees it)"
                    + (f" ({rec.reason})" if rec.reason else "")]
        if rec.char is not None:
            reports = self.decoder.notification(rec.char, rec.data, 0.0)
        else:
            reports = self.decoder.advertisement({rec.adv: rec.data}, 0.0)
        return [f"watch {describe_watch(r)}" for r in reports] or \
            [f"watch {(rec.char or rec.adv)[4:8]} {rec.data.hex(' ')}"]


def describe_watch(report) -> str:
    from drivers.watch.reports import Battery, HeartRate, Location, Press
    if isinstance(report, Press):
        return {"sos": "SOS pressed", "ok": "OK pressed", "fall": "fall detected"}[report.kind]
    if isinstance(report, HeartRate):
        contact = {True: ", on the skin", False: ", not worn", None: ""}[report.contact]
        return f"HR {report.hr_bpm} bpm{contact}"
    if isinstance(report, Battery):
        return f"battery {report.battery_pct}%"
    if isinstance(report, Location):
        acc = f" ±{report.accuracy_m:g} m" if report.accuracy_m is not None else ""
        return f"location {report.lat:.5f}, {report.lon:.5f}{acc}"
    return repr(report)


def main(args) -> int:
    """``carehub monitor``: --port/--protocol/--baudrate override the [belt] configuration;
    with both --port and --protocol given, no configuration file is needed."""
    from hub import config
    from hub.errors import ConfigError

    belt: dict = {}
    state_dir = None
    if not (args.port and args.protocol):
        try:
            cfg = config.load(args.config)
        except ConfigError as exc:
            for line in exc.problems:
                print(line, file=sys.stderr)
            return 78
        belt = cfg.get("belt") or {}
        state_dir = cfg["hub"]["state_dir"]
    else:
        with contextlib.suppress(ConfigError, OSError):  # only to find the daemon's feed
            state_dir = config.load(args.config)["hub"]["state_dir"]
    url = args.port or belt.get("port")
    protocol = args.protocol or belt.get("protocol") or "micradar"
    feed = Path(state_dir) / FEED_FILE if state_dir else None
    if not url and feed is not None and feed.exists():   # a watch only: the daemon holds it
        print(f"carehub monitor: no bed sensor configured; showing the daemon's live feed ({feed})",
              file=sys.stderr, flush=True)
        try:
            return asyncio.run(run_attached(feed, protocol, args.record, sys.stdout))
        except KeyboardInterrupt:
            return EX_OK
    if not url:
        print("carehub monitor: no bed sensor configured: add a [belt] table with a port, "
              "or give --port URL --protocol NAME", file=sys.stderr)
        return EX_USAGE
    baudrate = args.baudrate if args.baudrate is not None else belt.get("baudrate", 0)
    if port_in_use(url):
        sock = Path(state_dir) / FEED_FILE if state_dir else None
        if sock is None or not sock.exists():
            print(f"carehub monitor: {url} is in use by another program and no CareHub daemon "
                  "offers its live feed here; stop that program (`fuser -v PORT` shows it) "
                  "and try again", file=sys.stderr)
            return EX_TEMPFAIL
        print(f"carehub monitor: the CareHub daemon holds {url}; showing its live feed "
              f"({sock}) instead of opening the port", file=sys.stderr, flush=True)
        try:
            return asyncio.run(run_attached(sock, protocol, args.record, sys.stdout))
        except KeyboardInterrupt:
            return EX_OK
    try:
        return asyncio.run(run_monitor(
            url, protocol, baudrate or 0, args.record, sys.stdout,
            stale_timeout_s=belt.get("stale_timeout", 30.0),
            reconnect_max_s=belt.get("reconnect_max", 60.0)))
    except KeyboardInterrupt:
        return EX_OK
