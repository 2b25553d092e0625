"""No input kills a stage: the daemon keeps watching whatever the belt sends.

The first test drives the real daemon (`carehub run` in a subprocess) through a real pty; the
others drive the parts in-process against the real store and a real pty.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

from tests.conftest import REPO
from tests.daemon_helpers import COMMITTED, belt_pty, busy_config

POISON = b'{"in_bed": true, "heart_rate_bpm": 1' + b"0" * 400 + b"}\n"


class Daemon:
    """`carehub run` with its stderr collected line by line."""

    def __init__(self, config_path):
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen([sys.executable, "-m", "hub", "run", "--config", str(config_path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, predicate, timeout_s=30.0, poke=None) -> str:
        """Wait until some stderr line satisfies ``predicate``; ``poke()`` runs every 50 ms meanwhile."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                for line in self.lines:
                    if predicate(line):
                        return line
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError("daemon exited:\n" + "".join(self.lines[-30:]))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("not seen in time; last lines:\n" + "".join(self.lines[-30:]))
                self._changed.wait(min(left, 0.05))
                if poke is not None:
                    self._changed.release()
                    try:
                        poke()
                    finally:
                        self._changed.acquire()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        finally:
            self._reader.join(timeout=5)


def test_a_poisoned_ndjson_line_does_not_blind_the_daemon(write_config, tmp_path):
    """One line with a 400-digit number used to kill the pipeline task: the daemon ran on and
    watched nothing. Now the field is rejected, the line is counted, and later lines still count."""
    master, slave, port = belt_pty(tmp_path)
    daemon = Daemon(write_config(busy_config(port)))

    def send(obj_or_bytes):
        data = obj_or_bytes if isinstance(obj_or_bytes, bytes) else (json.dumps(obj_or_bytes) + "\n").encode()
        try:
            os.write(master, data)
        except BlockingIOError:
            pass

    try:
        daemon.wait_for(lambda line: "running:" in line)
        daemon.wait_for(lambda line: "belt connected" in line, poke=lambda: send({"in_bed": False}))
        send(POISON)
        send(POISON)
        entered = daemon.wait_for(
            lambda line: (m := COMMITTED.search(line)) is not None and m.group(3) == "bed.entered",
            poke=lambda: send({"in_bed": True, "heart_rate_bpm": 61}))
        assert entered
        # and it goes on watching: out of bed again is seen too
        daemon.wait_for(lambda line: (m := COMMITTED.search(line)) is not None and m.group(3) == "bed.exited",
                        poke=lambda: send({"in_bed": False}))
        assert not [line for line in daemon.lines if "stopped unexpectedly" in line or "Traceback" in line]
    finally:
        rc = daemon.stop()
        os.close(master)
        os.close(slave)
    assert rc == 0, "".join(daemon.lines[-30:])


# --- in-process: the parts of the boundary ------------------------------------------------------
import asyncio  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402

import pytest  # noqa: E402

from hub import app, config  # noqa: E402
from hub.app import Hub  # noqa: E402
from hub.errors import StoreError  # noqa: E402
from hub.events import EventFactory  # noqa: E402
from hub.pipeline import Pipeline  # noqa: E402
from hub.rules.observations import ButtonPress, StaffAck  # noqa: E402
from hub.stages import BeltBytes, CommitQueue, InputQueue, LinkStatus, TickDue, stage_faults  # noqa: E402
from hub.status import main as status_main  # noqa: E402
from offline_queue.store import AsyncStore  # noqa: E402
from tests.conftest import MINIMAL  # noqa: E402
from tests.hub.test_end_to_end import Pty, committed, run_async, wait_until  # noqa: E402


def test_the_input_queue_drops_only_low_value_input_and_stays_bounded():
    async def body():
        q = InputQueue(max_belt_bytes=10_000)
        for _ in range(10_000):                    # 10 MB of belt bytes while nobody reads
            q.put(BeltBytes(b"x" * 1000))
            q.put(TickDue())
        q.put(ButtonPress("sos"))
        q.put(StaffAck("a-1", "staff"))
        q.put(LinkStatus("belt", "disconnected", {"reason": "unplugged"}))
        assert len(q) == 10 + 1 + 3
        assert q.dropped == {"belt_bytes": 9_990_000, "ticks": 9_999}
        got = [await q.get() for _ in range(len(q))]
        assert [type(g).__name__ for g in got[-3:]] == ["ButtonPress", "StaffAck", "LinkStatus"]
        assert q.put(BeltBytes(b"y" * 10_000))     # drained: room again
    asyncio.run(body())


class ListSink:
    def __init__(self):
        self.events = []

    async def commit(self, event, *, state=None):
        self.events.append(event)
        return event

    def enqueue(self, event):
        self.events.append(event)

    async def save_state(self, state):
        pass


class FailingStage:
    """Stands in for one stage (decoder or bed tracker) that raises on every input."""

    firmware = None

    def __init__(self, exc):
        self.exc = exc
        self.calls = 0

    def _raise(self, *args):
        self.calls += 1
        raise self.exc

    feed = handle = _raise


def _pipeline(write_config, extra=""):
    cfg = config.load(write_config(MINIMAL + extra))
    from hub.clock import SystemClock
    clock = SystemClock(config.timezone_of(cfg))
    sink = ListSink()
    shown = []
    p = Pipeline(cfg, clock, EventFactory("h", "r", clock), sink, show=lambda *a: shown.append(a))
    return p, sink, shown


@pytest.mark.parametrize("stage,attr", [("decoder", "decoder"), ("rules", "engine")])
def test_a_stage_that_raises_drops_the_input_counts_and_logs_once(stage, attr, write_config, caplog):
    async def body():
        p, sink, shown = _pipeline(write_config, '\n[belt]\nport = "/dev/null"\nprotocol = "ndjson"\n')
        failing = FailingStage(OverflowError("int too large"))
        real = getattr(p, attr)
        setattr(p, attr, failing)
        with caplog.at_level(logging.ERROR):
            for _ in range(5):
                if attr == "decoder":
                    await p.belt_bytes(b'{"in_bed": true}\n')
                else:
                    await p.tick()
        assert failing.calls == 5
        assert stage_faults(p).snapshot() == {f"{stage}.OverflowError": 5}
        setattr(p, attr, real)
        assert len([r for r in caplog.records if f"{stage}.OverflowError" in r.getMessage()]) == 1
        await p.observe(ButtonPress("sos"))       # and the next input is handled
        assert any(a[0] == "alert" for a in shown)
        assert any(e.type == "alert.raised" for e in sink.events)
    asyncio.run(body())


@run_async
async def test_a_failing_store_holds_p1_p2_in_order_and_the_panel_does_not_wait(write_config, tmp_path):
    """The store goes away (closed: every call raises StoreError) while alerts are raised: the
    light and sound follow at once, the events wait in memory in order, and all are committed
    once the store is back."""
    store = AsyncStore(tmp_path / "events.db", batch_interval_s=0.05)
    await store.open()
    commits = CommitQueue(store, retry_min_s=0.01, retry_max_s=0.05)
    task = asyncio.create_task(commits.run())
    p, _, shown = _pipeline(write_config)
    p.sink = commits
    try:
        await store.close()                        # the disk is gone
        await p.observe(ButtonPress("sos"))
        assert shown and shown[-1][0] == "alert"   # shown before any commit could happen
        await p.device_status("gpio", "disconnected", {"reason": "test"})
        await p.observe(ButtonPress("ok"))
        await wait_until(lambda: commits.commit_failures >= 3)
        assert commits.failing and commits.held >= 3 and not task.done()
        held = [ev.id for ev, _ in commits._held if ev is not None]
        await store.open()                         # back
        await wait_until(lambda: commits.held == 0 and commits.failing is None)
        await store.flush()
    finally:
        commits.stop()
        await asyncio.wait_for(task, 5)
        await store.close()
    rows = committed(tmp_path / "events.db")
    ids = [r["id"] for r in rows]
    assert [i for i in ids if i in held] == held      # every held event, in order
    assert len(held) >= 3 and {"alert.raised", "device.status"} <= {r["type"] for r in rows}


@run_async
async def test_held_p3_beyond_the_cap_are_dropped_oldest_first_and_counted(tmp_path):
    store = AsyncStore(tmp_path / "events.db")
    await store.open()
    await store.close()
    factory = EventFactory("h", "r", __import__("hub.clock", fromlist=["SystemClock"]).SystemClock())
    commits = CommitQueue(store, max_held_p3=10)
    for i in range(30):
        await commits.commit(factory.make("device.status", {"device": "belt", "state": str(i)}))
    sos = factory.make("alert.raised", {"rule": "sos"}, 1)
    await commits.commit(sos)
    assert commits.dropped["p3_events"] == 20
    kept = [ev for ev, _ in commits._held]
    assert kept[-1] is sos and len(kept) == 11
    assert [ev.data["state"] for ev in kept[1:-1]] == [str(i) for i in range(21, 30)]


def _flaky(failures: list, times: int):
    async def run():
        failures.append(asyncio.get_running_loop().time())
        if len(failures) <= times:
            raise RuntimeError(f"boom {len(failures)}")
        await asyncio.Event().wait()
    return run


@run_async
async def test_a_task_that_dies_is_restarted_with_backoff(write_config):
    hub = Hub(config.load(write_config(MINIMAL)))
    hub.restart_min_s = 0.05
    await hub.start()
    try:
        starts: list = []
        hub.supervise("flaky", _flaky(starts, 3))
        await wait_until(lambda: len(starts) == 4)
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2   # doubling
        assert not hub.stop_event.is_set() and hub.exit_code == 0
        # the runner itself, cancelled from outside, comes back and the pipeline still listens
        [runner_task] = [t for t in asyncio.all_tasks() if t.get_name() == "PipelineRunner"]
        runner_task.cancel()
        await wait_until(lambda: any(t.get_name() == "PipelineRunner" and not t.done()
                                     for t in asyncio.all_tasks() if t is not runner_task))
        raised = []
        hub.store.subscribe(lambda e: raised.append(e) if e.type == "alert.raised" else None)
        hub.runner.put(ButtonPress("sos"))
        await wait_until(lambda: raised)
    finally:
        await hub.stop()


@run_async
async def test_a_task_that_cannot_be_kept_up_makes_the_hub_exit_non_zero(write_config):
    hub = Hub(config.load(write_config(MINIMAL)))
    hub.restart_min_s, hub.max_restarts = 0.01, 3
    starts: list = []

    async def start_and_break():
        await Hub.start(hub)
        hub.supervise("broken", _flaky(starts, 10 ** 6))

    hub.start = start_and_break
    code = await asyncio.wait_for(app.run(hub.cfg, hub=hub), 20)
    assert code == app.EX_SOFTWARE
    assert len(starts) == 4          # the first run and 3 restarts


@run_async
async def test_dropped_input_is_counted_in_the_heartbeat_and_status(write_config, tmp_path):
    pty = Pty(tmp_path / "belt")
    cfg = config.load(write_config(MINIMAL + f'\n[belt]\nport = "{pty.link}"\nprotocol = "ndjson"\n'))
    hub = Hub(cfg)
    await hub.start()
    try:
        os.write(pty.master, POISON + b"\xff\xfe{garbage\n")
        await wait_until(lambda: hub.dropped().get("belt.bad_json") == 1)
        await hub._heartbeat()
        await wait_until(lambda: not hub.commits._held)
    finally:
        await hub.stop()
        pty.close()
    beat = [e for e in committed(tmp_path / "state" / "events.db") if e["type"] == "hub.heartbeat"][-1]
    assert beat["data"]["dropped"]["belt.bad_field"] == 1
    assert beat["data"]["dropped"]["belt.bad_json"] == 1
    out = io.StringIO()
    status_main(cfg, as_json=True, out=out)
    assert json.loads(out.getvalue())["dropped"]["belt.bad_json"] == 1
    out = io.StringIO()
    status_main(cfg, out=out)
    assert "dropped inputs: belt.bad_field 1, belt.bad_json 1" in out.getvalue()


@run_async
async def test_an_event_the_store_cannot_write_does_not_hold_back_later_alerts(tmp_path):
    """A bug upstream puts a lone surrogate and an object in an alert's data: the store would
    refuse that event forever, and every alert behind it would wait. It is stored as text."""
    from hub.clock import SystemClock
    store = AsyncStore(tmp_path / "events.db")
    await store.open()
    commits = CommitQueue(store, retry_min_s=0.01)
    task = asyncio.create_task(commits.run())
    factory = EventFactory("h", "r", SystemClock())
    bad = factory.make("alert.raised", {"rule": "sos", "message": "\ud800", "obj": object()}, 1)
    good = factory.make("alert.raised", {"rule": "hr_high"}, 1)
    try:
        await commits.commit(bad)
        await commits.commit(good)
        await wait_until(lambda: not commits._held)
    finally:
        commits.stop()
        await asyncio.wait_for(task, 5)
        await store.close()
    rows = committed(tmp_path / "events.db")
    assert [r["id"] for r in rows] == [bad.id, good.id]
    assert rows[0]["data"]["message"] == "\\ud800" and commits.repaired == 1
