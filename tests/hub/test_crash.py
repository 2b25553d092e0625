"""Power-cut safety: `carehub run` killed with SIGKILL at random moments while it commits.

After each restart every event the store acknowledged (the daemon logs `committed seq=… id=…`
only after the transaction returned) must be in the file, and seq strictly increasing and gapless.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading

from offline_queue.store import Store
from tests.conftest import MINIMAL, REPO

COMMITTED = re.compile(r"committed seq=(\d+) id=(\S+) type=(\S+)")
KILLS = 52


class Feeder(threading.Thread):
    """Writes NDJSON belt lines into the pty master: the resident getting in and out of bed."""

    def __init__(self, fd):
        super().__init__(daemon=True)
        self.fd = fd
        self.stop = threading.Event()

    def run(self):
        in_bed = False
        while not self.stop.is_set():
            in_bed = not in_bed
            line = json.dumps({"in_bed": in_bed, "heart_rate_bpm": 60, "resp_rate_per_min": 14}) + "\n"
            try:
                os.write(self.fd, line.encode())
            except BlockingIOError:
                pass  # nobody reading (daemon dead): the pty buffer is full
            self.stop.wait(0.004)


def run_once(config_path, delay_s: float) -> set[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "hub", "run", "--config", str(config_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    acked: set[str] = set()
    ready = threading.Event()

    def read_stderr():
        for line in proc.stderr:
            if m := COMMITTED.search(line):
                acked.add(m.group(2))
            if "running:" in line:
                ready.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    assert ready.wait(30), "daemon did not start"
    # A random moment while it commits (the feeder keeps it busy), then the power goes.
    threading.Event().wait(delay_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    reader.join(timeout=10)
    return acked


def test_sigkill_at_random_moments_loses_no_acknowledged_event(write_config, tmp_path):
    master, slave = os.openpty()
    fcntl.fcntl(master, fcntl.F_SETFL, fcntl.fcntl(master, fcntl.F_GETFL) | os.O_NONBLOCK)
    port = tmp_path / "belt"
    port.symlink_to(os.ttyname(slave))
    config_path = write_config(MINIMAL.replace('id = "home-test"', 'id = "home-test"\nlog_level = "debug"') + f"""
[store]
batch_interval = "0.05s"
batch_max = 4

[belt]
port = "{port}"
protocol = "ndjson"
enter_debounce = 0
exit_debounce = 0
""")
    feeder = Feeder(master)
    feeder.start()
    rng = random.Random(20261123)
    acked_all: set[str] = set()
    try:
        for i in range(KILLS):
            acked_all |= run_once(config_path, rng.uniform(0.0, 0.6))
            store = Store(tmp_path / "state" / "events.db")
            try:
                rows = store.take_batch(limit=10**6, max_bytes=10**9)
            finally:
                store.close()
            ids = {r["id"] for r in rows}
            missing = acked_all - ids
            assert not missing, f"kill {i}: {len(missing)} acknowledged events lost"
            seqs = sorted(r["seq"] for r in rows)
            assert seqs == list(range(1, len(seqs) + 1)), f"kill {i}: seq not gapless"
            assert len(ids) == len(rows)
    finally:
        feeder.stop.set()
        os.close(master)
        os.close(slave)
    bed_events = [r for r in rows if r["type"].startswith("bed.")]
    assert len(acked_all) > KILLS and bed_events, "the daemon must have been committing"
