"""A power cut loses no committed event: the daemon on pcfs, cut at random moments of a busy night.

Each boot runs until a random moment, then the power goes: every write not yet fsynced is dropped
(pcfs `cut`), the daemon is killed, the disk unmounted; the next mount is the reboot. After each
restart every event the daemon acknowledged (its `committed …` line, logged after the transaction
returned) must be in the store with the same seq, the database intact, seq gapless.

CI runs a short count; the full run is by hand: CAREHUB_POWERCUT_CUTS=120 (figures in
docs/reliability.md). CAREHUB_POWERCUT_SEED picks another night.
"""

from __future__ import annotations

import os

import pytest

from tests.powercut.harness import belt_pty, power_cuts

pytestmark = pytest.mark.usefixtures("fuse_ok")

CUTS = int(os.environ.get("CAREHUB_POWERCUT_CUTS", "10"))
SEED = int(os.environ.get("CAREHUB_POWERCUT_SEED", "20261201"))


@pytest.fixture
def belt(tmp_path):
    master, slave, port = belt_pty(tmp_path)
    yield master, port
    os.close(master)
    os.close(slave)


@pytest.mark.timeout(max(120, CUTS * 10))
def test_power_cuts_during_a_busy_night_lose_no_acknowledged_event(tmp_path, belt):
    report = power_cuts(tmp_path, *belt, cuts=CUTS, seed=SEED)
    print("\npower cut:", report.summary())
    assert not report.problems, report.problems
    lost = sorted(report.lost.values(), key=lambda x: x[1].seq)
    assert not lost, f"{len(lost)} acknowledged events lost, first: {lost[:5]}"
    assert report.cuts == CUTS
    kinds = {a.type for a in report.acked.values()}
    assert {"alert.raised", "alert.prealert"} <= kinds, f"the night must raise alerts: {kinds}"
    assert report.fs_stats["fdatasync -wal"] > 0, "the store must have committed on the mount"


@pytest.mark.timeout(120)
def test_the_check_notices_a_disk_whose_fsync_lies(tmp_path, belt):
    """Negative control: the same night on a disk whose fsync keeps nothing must lose acked events.

    And the same lying disk under SIGKILL alone (the kernel's cache, here pcfs, survives the
    process) loses nothing: a kill -9 test cannot tell the two apart."""
    killed = power_cuts(tmp_path / "kill", *belt, cuts=2, seed=SEED, lie_fsync=True, cut=False)
    assert killed.acked and not killed.lost and not killed.problems, killed.summary()
    cut = power_cuts(tmp_path / "cut", *belt, cuts=4, seed=SEED, lie_fsync=True,
                     stop_at_first_loss=True)
    assert cut.lost, f"a lying fsync must cost acknowledged events: {cut.summary()}"
