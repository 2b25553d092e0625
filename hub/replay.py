"""`carehub replay RECORDING`: a recorded night through the same pipeline as the daemon.

The recording's times are the clock: monotonic seconds are the offsets from its first line and
the wall clock is its own times, so durations, windows, the night and the sleep report come out
as they would have on that night. Nothing is sent and the state dir is not touched: events go to
stdout as JSON lines.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime, timedelta

from hub.clock import ManualClock
from hub.errors import ConfigError, ParsingError
from hub.events import Event, EventFactory
from hub.pipeline import TICK_S, Pipeline
from drivers.recording import read_recording

REPLAY_BOOT_ID = "replay"


class PrintSink:
    """Numbers events as the store would and prints each as one JSON line."""

    def __init__(self, out=sys.stdout):
        self.out = out
        self.seq = 0
        self.events: list[Event] = []
        self.reader_gone = False   # stdout's reader left (`| head`); replay() stops on it

    def _print(self, event: Event) -> Event:
        self.seq += 1
        event = event.with_seq(self.seq)
        self.events.append(event)
        if self.out is not None and not self.reader_gone:
            try:
                self.out.write(event.to_json() + "\n")
            except BrokenPipeError:   # raised here it would be a fault of the rules stage
                self.reader_gone = True
        return event

    async def commit(self, event: Event, *, state=None) -> Event:
        return self._print(event)

    def enqueue(self, event: Event) -> None:
        self._print(event)

    async def save_state(self, state: dict) -> None:
        pass


async def replay(cfg: dict, chunks, *, out=sys.stdout, watch=None) -> PrintSink:
    """Drive the pipeline from ``chunks`` (recording.Chunk: t, source, data) as fast as possible.

    ``watch``: the recording's watch records (drivers/watch/recording.py) in file order, one per
    ``"watch"`` chunk; they go through today's watch decoder on the replay's clock, so the
    de-duplication and a fix's age come out as they did live. Without it watch lines are skipped.
    """
    sink = PrintSink(out)
    decoder = _watch_decoder(cfg) if watch is not None else None
    clock = pipeline = None
    t0: datetime | None = None
    next_tick = TICK_S
    for chunk in chunks:
        if t0 is None:
            t0 = chunk.t
            clock = ManualClock(chunk.t)
            factory = EventFactory(cfg["hub"]["id"], cfg["hub"]["resident_id"], clock,
                                   boot_id=REPLAY_BOOT_ID, synced=lambda: True)
            pipeline = Pipeline(cfg, clock, factory, sink)
        offset = (chunk.t - t0).total_seconds()
        if offset < clock.monotonic():
            raise ParsingError(f"recording line {chunk.line}: time {chunk.t.isoformat()} goes back; "
                               "a recording must be in time order")
        while next_tick <= offset:
            _move(clock, t0, next_tick)
            await pipeline.tick()
            next_tick += TICK_S
        _move(clock, t0, offset)
        if chunk.source == "belt" and pipeline.decoder is not None:
            await pipeline.belt_bytes(chunk.data)
        elif chunk.source == "watch" and decoder is not None:
            for report in _watch_reports(decoder, next(watch), clock.monotonic()):
                await pipeline.watch_report(report)
        if sink.reader_gone:
            raise BrokenPipeError(32, "the reader of the replayed events left")
    return sink


def _watch_decoder(cfg: dict):
    from drivers.watch.decoder import DEDUPE_S, WatchDecoder
    from drivers.watch.profiles import make_profile, profile_from_config
    w = cfg.get("watch")
    if w is None:   # no [watch] table: the SIG characteristics and an iTag button still decode
        return WatchDecoder(make_profile("standard"), DEDUPE_S)
    return WatchDecoder(profile_from_config(w), w["sos_dedupe"])


def _watch_reports(decoder, rec, mono: float) -> list:
    from drivers.watch.reports import LinkStatus
    if rec.link is not None:
        return [LinkStatus(rec.link, rec.reason, mono=mono)]
    if rec.char is not None:
        return decoder.notification(rec.char, rec.data, mono)
    return decoder.advertisement({rec.adv: rec.data}, mono)


def _move(clock: ManualClock, t0: datetime, offset: float) -> None:
    clock.advance(offset - clock.monotonic())
    clock.set_wall(t0 + timedelta(seconds=offset))


def main(cfg: dict, path: str, out=sys.stdout) -> int:
    if cfg.get("belt") is None and cfg.get("watch") is None:
        raise ConfigError([f"{cfg['_files'][0]}:1: belt: replay needs a [belt] table "
                           "(its protocol decodes the recording) or a [watch] table"])
    from drivers.watch.recording import read_recording as read_watch
    try:
        sink = asyncio.run(replay(cfg, read_recording(path), out=out, watch=read_watch(path)))
    except BrokenPipeError:
        raise  # the reader of stdout left (`| head`): the CLI ends quietly
    except OSError as e:
        print(f"carehub replay: cannot read {path}: {e.strerror or e}", file=sys.stderr)
        return 1
    except ParsingError as e:
        print(f"carehub replay: {e}", file=sys.stderr)
        return 1
    out.flush()
    print(summary(sink, path), file=sys.stderr)
    return 0


def summary(sink: PrintSink, path: str) -> str:
    """One line for the technician: how much was replayed and what came out of it."""
    events = sink.events
    alerts = [e for e in events if e.type == "alert.raised"]
    rules = sorted({e.data.get("rule", "?") for e in alerts})
    span = ""
    if events:
        first, last = events[0].uptime_s, events[-1].uptime_s
        span = f" ({(last - first) / 3600:.1f} h from first to last event)"
    return (f"replayed {path}{span}: {len(events)} event(s), {len(alerts)} alert(s)"
            + (f" ({', '.join(rules)})" if rules else "")
            + f", {sum(1 for e in events if e.type == 'vitals.minute')} vitals minute(s)")
