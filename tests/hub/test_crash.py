"""Power-cut safety: `carehub run` killed with SIGKILL at random moments while it commits.

After each restart every event the store acknowledged (the daemon logs `committed seq=… id=…`
only after the transaction returned) must be in the file, and seq strictly increasing and gapless.
"""

from __future__ import annotations

import os
import random

import pytest

from offline_queue.store import Store
from tests.daemon_helpers import KILLS, Feeder, belt_pty, busy_config, run_once


# 52 daemon starts: about 90 s on an idle 2-core machine, several minutes on a loaded one.
@pytest.mark.timeout(600)
def test_sigkill_at_random_moments_loses_no_acknowledged_event(write_config, tmp_path):
    master, slave, port = belt_pty(tmp_path)
    config_path = write_config(busy_config(port))
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
        feeder.finish()
        os.close(master)
        os.close(slave)
    bed_events = [r for r in rows if r["type"].startswith("bed.")]
    assert len(acked_all) > KILLS and bed_events, "the daemon must have been committing"
