"""carehub monitor over a real pty: readable lines, counters, firmware, and --record."""

import asyncio
import io
import os

import pytest

from drivers.belt import micradar as m
from hub.monitor import describe, run_monitor
from drivers.recording import read_recording

pytestmark = pytest.mark.timeout(30)


def test_monitor_shows_readings_counters_and_records(tmp_path):
    master, slave = os.openpty()
    path = os.ttyname(slave)
    record = tmp_path / "rec.jsonl"
    out = io.StringIO()
    sent = m.firmware_reply("G60SM1SYv010009") + m.heart_rate(67) + b"\xff\xfe" \
        + m.encode(0x81, 0x08, b"\x01\x02")

    async def scenario():
        stop = asyncio.Event()
        task = asyncio.create_task(run_monitor(path, "micradar", 0, record, out, stop,
                                               stats_interval_s=0.1))
        loop = asyncio.get_running_loop()
        got = b""
        while len(got) < 50:     # the handshake: the port is open
            got += await loop.run_in_executor(None, os.read, master, 4096)
        os.write(master, sent)
        while "dropped: garbage_bytes 2, unknown 1; firmware G60SM1SYv010009" not in out.getvalue():
            await asyncio.sleep(0.05)
        stop.set()
        return await asyncio.wait_for(task, 5)

    try:
        status = asyncio.run(scenario())
    finally:
        os.close(master)
        os.close(slave)
    text = out.getvalue()
    assert status == 0
    assert "belt connected" in text and "HR 67 bpm" in text and "firmware G60SM1SYv010009" in text
    assert "unknown message, kept raw" in text
    assert b"".join(c.data for c in read_recording(record)) == sent


def test_monitor_bad_record_path_is_a_message_not_a_traceback(tmp_path):
    out = io.StringIO()
    status = asyncio.run(run_monitor("loop://", "micradar", 0, tmp_path / "no" / "dir.jsonl", out))
    assert status == 73 and "cannot write the recording" in out.getvalue()


def test_describe_lines():
    from drivers.belt.decoder import make_decoder
    d = make_decoder("micradar")
    lines = [describe(r) for r in d.feed(m.in_bed(1) + m.heart_rate(120)
                                         + m.composite(True, 1, 14, 62, 2, 5, 20))]
    assert lines[0] == "in bed yes"
    assert lines[1].startswith("HR 120 bpm") and "may be higher" in lines[1]
    assert lines[2].startswith("[10-min summary]") and "turn-overs 2" in lines[2]
