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


def test_a_second_reader_cannot_open_the_belt_port():
    """The port is held exclusively: a second opener is told it is in use, never shares bytes."""
    from drivers.belt.link import PortInUse, open_exclusive, port_in_use
    master, slave = os.openpty()
    path = os.ttyname(slave)
    try:
        assert not port_in_use(path)
        held = open_exclusive(path, 115200)
        try:
            assert port_in_use(path)
            with pytest.raises(PortInUse, match="in use by another program"):
                open_exclusive(path, 115200)
        finally:
            held.close()
        assert not port_in_use(path)
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.timeout(60)
def test_monitor_beside_the_daemon_attaches_to_its_feed_and_the_daemon_keeps_the_port(
        write_config, tmp_path):
    """Today's defect: `carehub monitor` on the daemon's port split the byte stream with it (false
    disconnects, false device.status). Now the monitor attaches to the daemon's live feed."""
    import sys
    from hub import config
    from hub.app import Hub
    from tests.conftest import MINIMAL, REPO

    master, slave = os.openpty()
    link = tmp_path / "belt"
    link.symlink_to(os.ttyname(slave))
    path = write_config(MINIMAL + f'\n[belt]\nport = "{link}"\nprotocol = "micradar"\n'
                        'stale_timeout = "3s"\n')
    cfg = config.load(path)
    statuses: list[tuple[str, str]] = []

    async def scenario():
        hub = Hub(cfg)
        await hub.start()
        hub.store.subscribe(lambda e: statuses.append((e.data.get("device"), e.data.get("state")))
                            if e.type == "device.status" else None)
        loop = asyncio.get_running_loop()
        stop_feeding = asyncio.Event()

        async def sensor():  # a radar: a heart-rate frame every 50 ms, and it drains what it is sent
            os.set_blocking(master, False)
            while not stop_feeding.is_set():
                os.write(master, m.heart_rate(61))
                try:
                    os.read(master, 4096)
                except BlockingIOError:
                    pass
                await asyncio.sleep(0.05)

        feeder = asyncio.create_task(sensor())
        monitor = None
        try:
            while not hub.feed.path.exists():
                await asyncio.sleep(0.02)
            env = dict(os.environ, PYTHONPATH=str(REPO))
            monitor = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "hub", "monitor", "--config", str(path),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
            seen = b""
            while seen.count(b"HR 61 bpm") < 20:  # a second of frames, through the feed
                chunk = await asyncio.wait_for(monitor.stdout.read(4096), 30)
                assert chunk, "monitor exited early"
                seen += chunk
            monitor.send_signal(2)
            _, err = await asyncio.wait_for(monitor.communicate(), 10)
            stop_feeding.set()
            await feeder
            return monitor.returncode, err.decode(), hub.feed.clients
        finally:
            stop_feeding.set()
            if monitor is not None and monitor.returncode is None:
                monitor.kill()
                await monitor.wait()
            await hub.stop()
            await loop.run_in_executor(None, lambda: None)

    try:
        rc, err, clients = asyncio.run(scenario())
    finally:
        os.close(master)
        os.close(slave)
    assert "showing its live feed" in err and "Traceback" not in err
    assert rc == 0
    assert ("belt", "disconnected") not in statuses, statuses
