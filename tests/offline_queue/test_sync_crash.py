"""Store-and-forward through power cuts: `carehub run` killed with SIGKILL at random moments
while it commits and uploads to a real receiver on 127.0.0.1. In the end the receiver holds every
committed event exactly once, seq gapless."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from offline_queue.receiver import make_server
from offline_queue.store import read_status
from tests.conftest import REPO
from tests.daemon_helpers import KILLS, Feeder, belt_pty, busy_config, run_once


# 52 daemon starts: about 90 s on an idle 2-core machine, several minutes on a loaded one.
@pytest.mark.timeout(600)
def test_sigkill_during_uploads_loses_and_doubles_nothing(write_config, token_file, tmp_path):
    server = make_server("127.0.0.1", 0, tmp_path / "receiver.db", token_file.read_text())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    master, slave, port = belt_pty(tmp_path)
    config_path = write_config(busy_config(port, f"""
[server]
url = "{server.url}"
token_file = "{token_file}"
sync_interval = "0.1s"
batch_max = 7
backoff_base = "0.1s"
backoff_max = "1s"
"""))
    feeder = Feeder(master)
    feeder.start()
    rng = random.Random(11232026)
    acked: set[str] = set()
    try:
        for _ in range(KILLS):
            acked |= run_once(config_path, rng.uniform(0.0, 0.6))
        uploaded_before_drain = len(server.events())
        feeder.stop.set()
        drain(config_path, tmp_path / "state" / "events.db")
        received = server.events()
    finally:
        feeder.finish()
        server.shutdown()
        server.server_close()
        os.close(master)
        os.close(slave)
    ids = [e["id"] for e in received]
    assert len(ids) == len(set(ids)), "the receiver must hold each event once"
    assert not acked - set(ids), f"{len(acked - set(ids))} acknowledged events never reached the server"
    seqs = sorted(e["seq"] for e in received)
    last_seq = read_status(tmp_path / "state" / "events.db")["last_seq"]
    assert seqs == list(range(1, last_seq + 1)), "every committed event, seq gapless"
    assert uploaded_before_drain > KILLS, "uploads must have been under way when the power went"


def drain(config_path, store_path, timeout_s: float = 60.0) -> None:
    """Run the daemon once more, undisturbed, until its queue is empty; then stop it."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "hub", "run", "--config", str(config_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        # Empty, and nothing new committed for a second (the belt's leftover bytes are decoded).
        deadline = time.monotonic() + timeout_s
        quiet_since, last = time.monotonic(), None
        while True:
            status = read_status(store_path)
            empty = status["last_seq"] and not any(status["depth"].values())
            if not empty or status["last_seq"] != last:
                quiet_since, last = time.monotonic(), status["last_seq"]
            elif time.monotonic() - quiet_since >= 1.0:
                break
            assert time.monotonic() < deadline, f"queue did not drain: {status['depth']}"
            time.sleep(0.1)  # poll interval
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
