"""The power-cut harness: pcfs mounts, the night feeder, the daemon runs, the checker.

One cycle (after LazyFS/Jepsen, see docs/reliability.md): mount pcfs over the backing directory;
start the daemon with its state_dir on the mount; once it runs, check that every event any earlier
run acknowledged is in the store; wait a random moment; `cut` (every un-fsynced write is dropped
and the disk freezes), SIGKILL the daemon, unmount. The next mount is the machine after the reboot.

The acknowledgement channel is the daemon's own DEBUG line `committed seq=… id=… type=…
priority=…`, which hub.app logs for every event after its transaction returned; it reaches the
test through a pipe, outside the mount, so the cut cannot touch it.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from tests.conftest import REPO

ACK = re.compile(r"committed seq=(\d+) id=(\S+) type=(\S+) priority=(\d)")
SPEED = 40.0                 # night-clock seconds per real second
NIGHT_START = datetime(2026, 11, 23, 23, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
LINE_EVERY_S = 0.01          # one belt line per 10 ms real (0.4 s of night)
# The night's cycle, in night seconds: breathing normally, restless (out of bed for OUT_S in
# every OUT_EVERY_S: bed events, and the rule state saved with each), then lying still without
# vital signs long enough for the pre-alert (P2) and the alert (P1).
NORMAL_S, ABSENT_S, OUT_S, OUT_EVERY_S = 12.0, 26.0, 1.0, 4.0
BATCH_INTERVAL_S = 0.5       # [store] batch_interval (real seconds): the P3 exposure at a cut
START_TIMEOUT_S = 60.0

NORMAL = {"presence": True, "in_bed": True, "heart_rate_bpm": 60, "resp_rate_per_min": 14,
          "movement_index": 1}
OUT = {"presence": False, "in_bed": False}
ABSENT = {"presence": True, "in_bed": True, "movement_index": 0}


def fuse_unavailable() -> str | None:
    """Why pcfs cannot run here, or None."""
    if os.geteuid() != 0:
        return "mounting FUSE needs root (/dev/fuse is root-only)"
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as exc:
        return f"/dev/fuse is not usable: {exc}"
    if not any((Path(d) / "fusermount3").exists() for d in os.environ.get("PATH", "").split(":")):
        return "fusermount3 is missing (apt-get install fuse3)"
    try:
        import mfusepy  # noqa: F401  (loads libfuse3 through ctypes)
    except Exception as exc:  # ImportError, or OSError/EnvironmentError without libfuse3
        return f"mfusepy cannot load libfuse3: {exc} (pip install mfusepy; apt-get install fuse3)"
    return None


def daemon_config(state_dir: Path, belt: Path) -> str:
    return f"""\
[hub]
id = "home-test"
resident_id = "R-1"
timezone = "Asia/Shanghai"
state_dir = "{state_dir}"
log_level = "debug"

[store]
batch_interval = "{BATCH_INTERVAL_S}s"
batch_max = 50

[belt]
port = "{belt}"
protocol = "ndjson"
enter_debounce = 0
exit_debounce = 0

[rules.vitals_absent]
prealert_after = "10s"
alert_after = "20s"

[alerts]
flap_count = 100
flap_window = "60s"
"""


class Mount:
    """One pcfs mount: `cut` is the power cut, `unmount` the end of that boot."""

    def __init__(self, backing: Path, mountpoint: Path, ctl: Path, *, lie_fsync: bool = False):
        self.backing, self.mountpoint, self.ctl = backing, mountpoint, ctl
        backing.mkdir(parents=True, exist_ok=True)
        mountpoint.mkdir(parents=True, exist_ok=True)
        if ctl.exists():
            ctl.unlink()
        argv = [sys.executable, "-m", "tests.powercut.pcfs", str(backing), str(mountpoint),
                "--ctl", str(ctl)] + (["--lie-fsync"] if lie_fsync else [])
        self.proc = subprocess.Popen(argv, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (os.path.ismount(mountpoint) and ctl.exists()):
            if self.proc.poll() is not None:
                raise AssertionError(f"pcfs did not mount: {self.proc.stderr.read()}")
            if time.monotonic() > deadline:
                self.unmount()
                raise AssertionError("pcfs did not mount in time")
            time.sleep(0.01)  # poll interval while the mount comes up

    def command(self, cmd: str) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(str(self.ctl))
            with s.makefile("rwb") as f:
                f.write((cmd + "\n").encode())
                f.flush()
                return json.loads(f.readline())

    def cut(self, tear_seed: int | None = None) -> dict:
        return self.command("cut" if tear_seed is None else f"cut tear {tear_seed}")

    def unmount(self) -> None:
        """The end of this boot; an fd still open on the mount makes it a lazy unmount."""
        if self.proc.poll() is None:
            busy = subprocess.run(["fusermount3", "-u", str(self.mountpoint)],
                                  capture_output=True).returncode
            if busy:
                subprocess.run(["fusermount3", "-uz", str(self.mountpoint)], capture_output=True)
            try:
                self.proc.wait(timeout=2 if busy else 15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.proc.stderr.close()


class NightFeeder(threading.Thread):
    """Writes the night's belt lines into the pty master, paced by the night clock."""

    def __init__(self, fd: int, t0: float):
        super().__init__(daemon=True)
        self.fd, self.t0 = fd, t0
        self.stop = threading.Event()

    def line(self, now: float) -> dict:
        night_s = ((now - self.t0) * SPEED) % (NORMAL_S + ABSENT_S)
        if night_s >= NORMAL_S:
            return ABSENT
        return OUT if night_s % OUT_EVERY_S < OUT_S else NORMAL

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                os.write(self.fd, (json.dumps(self.line(time.monotonic())) + "\n").encode())
            except BlockingIOError:
                pass  # the daemon is down and the pty buffer is full
            except OSError:
                return
            self.stop.wait(LINE_EVERY_S)

    def finish(self) -> None:
        self.stop.set()
        self.join(timeout=5)


@dataclass
class Ack:
    seq: int
    id: str
    type: str
    priority: int
    at: float  # when the test read the line (monotonic)


class DaemonRun:
    """One boot of the daemon; its acknowledgements are collected from stderr as they come."""

    def __init__(self, config_path: Path, t0: float):
        argv = [sys.executable, "-m", "tests.powercut.hubproc", "--config", str(config_path),
                "--speed", str(SPEED), "--t0", repr(t0), "--start", NIGHT_START.isoformat()]
        self.proc = subprocess.Popen(argv, cwd="/", env=dict(os.environ, PYTHONPATH=str(REPO)),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.acks: list[Ack] = []
        self.tail: deque[str] = deque(maxlen=40)
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            if m := ACK.search(line):
                self.acks.append(Ack(int(m[1]), m[2], m[3], int(m[4]), time.monotonic()))
            else:
                self.tail.append(line)
            if " running: " in line:
                self.ready.set()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError("the daemon did not start after the power came back:\n"
                                     + "".join(self.tail))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=15)
        self.reader.join(timeout=15)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=15)
        self.reader.join(timeout=15)
        return rc


def read_store(db: Path) -> tuple[list, dict[str, tuple[int, int, str]]]:
    """(integrity_check rows, {id: (seq, priority, type)}), read-only beside the running daemon."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None, timeout=30)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchall()
        rows = {id_: (seq, prio, type_) for id_, seq, prio, type_ in
                conn.execute("SELECT id, seq, priority, type FROM events")}
    finally:
        conn.close()
    return integrity, rows


@dataclass
class Report:
    cuts: int = 0
    acked: dict[str, Ack] = field(default_factory=dict)
    lost: dict[str, tuple[int, Ack]] = field(default_factory=dict)  # id -> (boot that noticed, ack)
    problems: list[str] = field(default_factory=list)
    torn_cuts: int = 0
    p3_exposure_s: list[float] = field(default_factory=list)
    dropped_pages: list[int] = field(default_factory=list)
    fs_stats: Counter = field(default_factory=Counter)
    elapsed_s: float = 0.0

    def summary(self) -> str:
        by_type = Counter(a.type for a in self.acked.values())
        by_prio = Counter(a.priority for a in self.acked.values())
        exp = sorted(self.p3_exposure_s)
        exposure = (f"P3 exposure at the cut: median {exp[len(exp) // 2]:.2f} s, "
                    f"max {exp[-1]:.2f} s (batch_interval {BATCH_INTERVAL_S} s)") if exp else ""
        return (f"{self.cuts} cuts ({self.torn_cuts} torn) in {self.elapsed_s:.0f} s; "
                f"{len(self.acked)} acknowledged events checked "
                f"(P1 {by_prio[1]}, P2 {by_prio[2]}, P3 {by_prio[3]}; "
                f"alert.raised {by_type['alert.raised']}, "
                f"alert.prealert {by_type['alert.prealert']}); "
                f"lost {len(self.lost)}; problems {len(self.problems)}; {exposure}; "
                f"un-synced pages dropped per cut: max {max(self.dropped_pages, default=0)}; "
                f"fs: {dict(self.fs_stats)}")


def check(report: Report, boot: int, db: Path) -> None:
    integrity, rows = read_store(db)
    if integrity != [("ok",)]:
        report.problems.append(f"boot {boot}: integrity_check {integrity[:3]}")
    for ack in report.acked.values():
        have = rows.get(ack.id)
        if (have is None or have[0] != ack.seq) and ack.id not in report.lost:
            report.lost[ack.id] = (boot, ack)
    seqs = sorted(seq for seq, _, _ in rows.values())
    if seqs != list(range(1, len(seqs) + 1)):
        report.problems.append(f"boot {boot}: seq not gapless from 1 ({len(seqs)} rows, "
                               f"last {seqs[-1] if seqs else None})")


def power_cuts(tmp_path: Path, master: int, belt: Path, *, cuts: int, seed: int,
               lie_fsync: bool = False, cut: bool = True, stop_at_first_loss: bool = False,
               delay_s: tuple[float, float] = (0.05, 2.0)) -> Report:
    """`cuts` boots of the daemon, each ended by a power cut (or, with cut=False, by SIGKILL
    alone on a disk that stays mounted), and one last boot that is checked and stopped."""
    rng = random.Random(seed)
    report = Report()
    backing, mnt, ctl = tmp_path / "disk", tmp_path / "mnt", tmp_path / "pcfs.sock"
    tmp_path.mkdir(parents=True, exist_ok=True)
    config_path = tmp_path / "config.toml"
    config_path.write_text(daemon_config(mnt / "state", belt))
    db = mnt / "state" / "events.db"
    started = time.monotonic()
    feeder = NightFeeder(master, started)
    feeder.start()
    mount = None
    try:
        for boot in range(cuts + 1):
            if mount is None:
                mount = Mount(backing, mnt, ctl, lie_fsync=lie_fsync)
            run = DaemonRun(config_path, started)
            try:
                run.wait_ready()
                if boot:
                    check(report, boot, db)
                    if report.lost and stop_at_first_loss:
                        break
                if boot == cuts:
                    assert run.stop() == 0, "the daemon must stop cleanly:\n" + "".join(run.tail)
                    break
                time.sleep(rng.uniform(*delay_s))  # the random moment of the cut (not a sync)
                at = time.monotonic()
                if cut:
                    torn = rng.random() < 0.5
                    dropped = mount.cut(rng.randrange(2**32) if torn else None)
                    report.dropped_pages.append(dropped["pages"])
                    report.torn_cuts += torn
            finally:
                run.kill()
            for ack in run.acks:
                report.acked[ack.id] = ack
            p3 = [a.at for a in run.acks if a.priority == 3 and a.at <= at]
            if p3:
                report.p3_exposure_s.append(at - max(p3))
            report.cuts += 1
            if cut:
                report.fs_stats.update(mount.command("stats"))
                mount.unmount()
                mount = None
    finally:
        feeder.finish()
        if mount is not None:
            mount.unmount()
    report.elapsed_s = time.monotonic() - started
    return report


def belt_pty(tmp_path: Path) -> tuple[int, int, Path]:
    """A pty whose slave is reached through tmp_path/belt (outside the mount)."""
    import fcntl
    master, slave = os.openpty()
    fcntl.fcntl(master, fcntl.F_SETFL, fcntl.fcntl(master, fcntl.F_GETFL) | os.O_NONBLOCK)
    port = tmp_path / "belt"
    port.symlink_to(os.ttyname(slave))
    return master, slave, port
