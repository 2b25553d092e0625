"""Driving `carehub run` as a subprocess: a belt on a pty that keeps it busy, and power cuts."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import threading

from tests.conftest import MINIMAL, REPO

COMMITTED = re.compile(r"committed seq=(\d+) id=(\S+) type=(\S+)")
KILLS = 52


class Feeder(threading.Thread):
    """Writes NDJSON belt lines into the pty master: the resident getting in and out of bed."""

    def __init__(self, fd):
        super().__init__(daemon=True)
        self.fd = fd
        self.stop = threading.Event()

    def finish(self) -> None:
        self.stop.set()
        self.join(timeout=5)

    def run(self):
        in_bed = False
        while not self.stop.is_set():
            in_bed = not in_bed
            line = json.dumps({"in_bed": in_bed, "heart_rate_bpm": 60, "resp_rate_per_min": 14}) + "\n"
            try:
                os.write(self.fd, line.encode())
            except BlockingIOError:
                pass  # nobody reading (daemon dead): the pty buffer is full
            except OSError:
                return  # the test closed the pty
            self.stop.wait(0.004)


def run_once(config_path, delay_s: float) -> set[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "hub", "run", "--config", str(config_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    acked: set[str] = set()
    ready = threading.Event()

    lines: list[str] = []

    def read_stderr():
        for line in proc.stderr:
            lines.append(line)
            if m := COMMITTED.search(line):
                acked.add(m.group(2))
            if "running:" in line:
                ready.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        for _ in range(300):  # up to 30 s, but give up as soon as the daemon exits
            if ready.wait(0.1) or proc.poll() is not None:
                break
        if not ready.is_set():
            raise AssertionError("daemon did not start:\n" + "".join(lines[-30:]))
        # A random moment while it commits (the feeder keeps it busy), then the power goes.
        threading.Event().wait(delay_s)
    finally:  # also when the test fails or times out: never leave a daemon behind
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        reader.join(timeout=10)
    return acked


def belt_pty(tmp_path):
    """A non-blocking pty master and its slave, reached through tmp_path/belt."""
    master, slave = os.openpty()
    fcntl.fcntl(master, fcntl.F_SETFL, fcntl.fcntl(master, fcntl.F_GETFL) | os.O_NONBLOCK)
    port = tmp_path / "belt"
    port.symlink_to(os.ttyname(slave))
    return master, slave, port


def busy_config(port, extra: str = "") -> str:
    """A daemon that logs each commit (debug) and commits its belt's bed events in small batches."""
    return MINIMAL.replace('id = "home-test"', 'id = "home-test"\nlog_level = "debug"') + extra + f"""
[store]
batch_interval = "0.05s"
batch_max = 4

[belt]
port = "{port}"
protocol = "ndjson"
enter_debounce = 0
exit_debounce = 0
"""
