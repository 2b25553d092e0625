"""Watch recordings: written by the link as it runs, read back, replayed to the same reports,
and mixed with the belt's lines in one file."""

import asyncio
import json
from datetime import datetime, timedelta, timezone

import pytest

from drivers.watch import gatt
from drivers.watch.link import WatchLink
from drivers.watch.profiles import make_profile
from drivers.watch.recording import RecordingError, WatchRecorder, parse_line, read_recording, replay
from drivers.watch.reports import Battery, LinkStatus, Location, Press
from drivers.watch.simulator import SimulatedWatch, encode_location
from hub.clock import ManualClock
from drivers.recording import read_recording as read_belt_recording
from tests.drivers.watch.test_link import until

TZ = timezone(timedelta(hours=8))


def test_link_records_what_it_hears_and_replay_gives_the_same_reports(tmp_path):
    path = tmp_path / "night.ndjson"
    path.write_text('{"t": "2026-11-23T22:00:00.000+08:00", "source": "belt", "hex": "5359"}\n')
    clock = ManualClock(datetime(2026, 11, 23, 22, 0, 1, tzinfo=TZ), mono=50.0)
    live = []

    async def main():
        w = SimulatedWatch()
        with open(path, "a") as f:
            rec = WatchRecorder(f, clock.now)
            link = WatchLink(w.address, make_profile("standard"), on_report=live.append,
                             clock=clock, recorder=rec, reconnect_min_s=0.01, tick_s=0.01,
                             client_backend=w.client_backend, scanner_backend=w.scanner_backend)
            task = asyncio.ensure_future(link.run())
            await until(lambda: link.state == "connected" and w.client and w.client.subscribed)
            clock.advance(1)
            w.notify(gatt.LOCATION_AND_SPEED, encode_location(31.2304, 121.4737))
            clock.advance(1)
            w.duplicate_notifications = True
            w.press()
            await until(lambda: any(isinstance(r, Press) for r in live))
            link.stop()
            await task
            rec.close()

    asyncio.run(main())
    lines = [json.loads(l) for l in path.read_text().splitlines()]
    assert [l["source"] for l in lines] == ["belt"] + ["watch"] * (len(lines) - 1)
    assert lines[1] == {"t": "2026-11-23T22:00:01.000+08:00", "source": "watch", "hex": "57",
                        "char": gatt.BATTERY_LEVEL}          # read on connecting
    assert lines[2] == {"t": "2026-11-23T22:00:01.000+08:00", "source": "watch", "hex": "",
                        "link": "connected"}
    # the belt's reader still reads the whole file (one envelope for both devices)
    assert [c.source for c in read_belt_recording(path)][:2] == ["belt", "watch"]
    records = list(read_recording(path))
    assert records[0].line == 2
    replayed = [r for _, r in replay(records, make_profile("standard"))]
    kinds = lambda rs: [type(r).__name__ for r in rs if not isinstance(r, LinkStatus)]
    assert kinds(replayed) == kinds(live) == ["Battery", "Location", "Press"]
    loc = next(r for r in replayed if isinstance(r, Location))
    assert (loc.lat, loc.lon, loc.mono) == (31.2304, 121.4737, 1.0)
    assert [r.mono for r in replayed if isinstance(r, Press)] == [2.0]    # duplicate dropped again


def test_bthome_advertisement_lines_replay():
    lines = [
        '{"t": "2026-11-23T08:00:00.000Z", "source": "watch", "hex": "4400053a01", '
        '"adv": "0000fcd2-0000-1000-8000-00805f9b34fb", "rssi": -70}',
        '{"t": "2026-11-23T08:00:00.300Z", "source": "watch", "hex": "4400053a01", '
        '"adv": "0000fcd2-0000-1000-8000-00805f9b34fb", "rssi": -71}',
        '{"t": "2026-11-23T08:00:09.000Z", "source": "watch", "hex": "440006015a", '
        '"adv": "0000fcd2-0000-1000-8000-00805f9b34fb"}',
    ]
    out = [r for _, r in replay([parse_line(l) for l in lines], make_profile("bthome"))]
    assert out == [Press("sos", 5, 0.0), Battery(90, 9.0)]


@pytest.mark.parametrize("line,problem", [
    ("{", "not a JSON object"),
    ('{"source": "watch", "hex": "01", "char": "x"}', '"t"'),
    ('{"t": "2026-11-23T08:00:00", "source": "watch", "hex": "01", "char": "x"}', "no UTC offset"),
    ('{"t": "2026-11-23T08:00:00Z", "source": "watch", "hex": "zz", "char": "x"}', '"hex"'),
    ('{"t": "2026-11-23T08:00:00Z", "source": "watch", "hex": "01"}', 'exactly one of'),
])
def test_bad_lines_name_file_and_line(line, problem):
    with pytest.raises(RecordingError, match=problem) as info:
        parse_line(line, "night.ndjson:7")
    assert str(info.value).startswith("night.ndjson:7: ")


def test_other_sources_and_blank_lines_are_not_watch_lines():
    assert parse_line('{"t": "x", "source": "belt", "hex": "53"}') is None
    assert parse_line("  \n") is None
