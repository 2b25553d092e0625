"""BeltLink over a real pseudo-terminal, opened by path through pyserial.

The configured port is a symlink we control, as udev's /dev/carehub-belt would be: the
"unplug" closes the pty and removes the link, the "replug" points it at a new pty.
"""

import asyncio
import os
import select

import pytest

from drivers.belt import micradar as m
from drivers.belt.decoder import make_decoder
from drivers.belt.link import BeltLink

pytestmark = pytest.mark.timeout(30)


class Pty:
    def __init__(self):
        self.master, self.slave = os.openpty()
        self.path = os.ttyname(self.slave)

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def read_available(self, timeout=0.0) -> bytes:
        out = b""
        while select.select([self.master], [], [], timeout)[0]:
            chunk = os.read(self.master, 4096)
            if not chunk:
                break
            out += chunk
            timeout = 0.05
        return out

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


class Harness:
    def __init__(self, url, **kw):
        self.decoder = make_decoder("micradar")
        self.readings = []
        self.statuses = []
        self.changed = asyncio.Event()
        self.link = BeltLink(url, baudrate=115200, on_bytes=self.on_bytes,
                             on_status=self.on_status, handshake=self.decoder.handshake_frames(),
                             **kw)

    def on_bytes(self, data):
        self.readings += self.decoder.feed(data)
        self.changed.set()

    def on_status(self, state, info):
        self.statuses.append((state, info))
        self.changed.set()

    async def wait_for(self, predicate, timeout=5.0):
        async def loop():
            while not predicate():
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(loop(), timeout)


async def handshake_of(pty) -> bytes:
    """Wait until the link has opened the port: its handshake arrives on the master side.
    (pyserial flushes the input on open, so bytes written before that are lost.)"""
    want = len(b"".join(m.handshake_frames()))
    got = b""
    loop = asyncio.get_running_loop()
    while len(got) < want:
        got += await loop.run_in_executor(None, pty.read_available, 0.2)
    return got


def test_readings_flow_from_a_pty_and_the_handshake_is_written():
    pty = Pty()

    async def scenario():
        h = Harness(pty.path, stale_timeout_s=5.0, reconnect_max_s=0.5)
        task = asyncio.create_task(h.link.run())
        assert await handshake_of(pty) == b"".join(m.handshake_frames())
        pty.write(m.heart_rate(67) + m.resp_rate(14) + m.in_bed(1))
        await h.wait_for(lambda: len(h.readings) >= 3)
        assert [s for s, _ in h.statuses] == ["connected"]
        h.link.stop()
        await asyncio.wait_for(task, 2)
        return h

    try:
        h = asyncio.run(scenario())
    finally:
        pty.close()
    assert [r.heart_rate_bpm for r in h.readings][:1] == [67.0]
    assert h.readings[1].resp_rate_per_min == 14.0 and h.readings[2].in_bed is True


def test_unplug_and_replug_through_a_symlink(tmp_path):
    port = tmp_path / "belt"
    first = Pty()
    os.symlink(first.path, port)
    ptys = [first]

    async def scenario():
        h = Harness(str(port), stale_timeout_s=1.0, reconnect_max_s=0.2)
        task = asyncio.create_task(h.link.run())
        await handshake_of(first)
        first.write(m.heart_rate(60))
        await h.wait_for(lambda: h.readings)
        assert [s for s, _ in h.statuses] == ["connected"]

        # unplug: the device vanishes and udev removes its name
        first.close()
        os.unlink(port)
        await h.wait_for(lambda: len(h.statuses) >= 2)
        assert h.statuses[1][0] == "disconnected"
        await asyncio.sleep(0.5)     # several failed reopen attempts: still reported once
        assert [s for s, _ in h.statuses] == ["connected", "disconnected"]

        # replug on a new pty, as udev would
        second = Pty()
        ptys.append(second)
        os.symlink(second.path, port)
        assert await handshake_of(second) == b"".join(m.handshake_frames())
        second.write(m.heart_rate(61) + m.resp_rate(13))
        await h.wait_for(lambda: len(h.readings) >= 3)
        h.link.stop()
        await asyncio.wait_for(task, 2)
        return h

    try:
        h = asyncio.run(scenario())
    finally:
        for p in ptys:
            p.close()
    assert [s for s, _ in h.statuses] == ["connected", "disconnected", "connected"]
    assert [r.heart_rate_bpm for r in h.readings if r.heart_rate_bpm] == [60.0, 61.0]


def test_a_silent_device_is_reported_disconnected_once_then_connected_when_it_talks():
    pty = Pty()

    async def scenario():
        h = Harness(pty.path, stale_timeout_s=0.3, reconnect_max_s=0.1)
        task = asyncio.create_task(h.link.run())
        await h.wait_for(lambda: h.statuses, timeout=5)
        assert h.statuses[0][0] == "disconnected"
        assert "no data" in h.statuses[0][1]["reason"]
        # the port stays present and keeps being reopened; it talks again
        async def talk_until_connected():
            while len(h.statuses) < 2:
                try:
                    pty.write(m.heartbeat())
                except OSError:
                    pass
                await asyncio.sleep(0.05)
        await asyncio.wait_for(talk_until_connected(), 5)
        h.link.stop()
        await asyncio.wait_for(task, 2)
        return h

    try:
        h = asyncio.run(scenario())
    finally:
        pty.close()
    assert [s for s, _ in h.statuses] == ["disconnected", "connected"]


def test_a_missing_port_never_raises_and_stop_ends_run(tmp_path):
    async def scenario():
        h = Harness(str(tmp_path / "nothing-here"), stale_timeout_s=0.5, reconnect_max_s=0.1)
        task = asyncio.create_task(h.link.run())
        await h.wait_for(lambda: h.statuses)
        h.link.stop()
        await asyncio.wait_for(task, 2)
        return h

    h = asyncio.run(scenario())
    [(state, info)] = h.statuses
    assert state == "disconnected" and "cannot open" in info["reason"]


def test_loop_url_echoes_the_handshake_back_as_readings():
    async def scenario():
        h = Harness("loop://", stale_timeout_s=5.0)
        task = asyncio.create_task(h.link.run())
        await h.wait_for(lambda: len(h.readings) >= 5)
        assert await h.link.write(m.heart_rate(64))
        await h.wait_for(lambda: any(r.heart_rate_bpm == 64.0 for r in h.readings))
        h.link.stop()
        await asyncio.wait_for(task, 2)
        return h

    h = asyncio.run(scenario())
    assert h.statuses[0][0] == "connected"
    assert [r.raw.get("switch") for r in h.readings[1:5]] == [
        "presence", "breathing", "heart_rate", "sleep"]
