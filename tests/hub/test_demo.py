"""`carehub demo`, as a new user runs it: a night on simulated devices, alerts raised and resolved,
the panel shown, and the events at the embedded community-server receiver."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO


def test_demo_runs_a_night_with_alerts_and_delivers_them():
    proc = subprocess.run([sys.executable, "-m", "hub", "demo", "--speed", "2400"], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "Traceback" not in proc.stderr
    for expected in ("bed.entered", "vitals.minute", "alert.raised       P2  night_bed_exit",
                     "alert.raised       P1  vitals_absent", "alert.raised       P1  sos",
                     "alert.acknowledged", "alert.resolved", "sleep.report", "panel: light alert",
                     "panel: light acknowledged", "device.status      P3  watch connected, battery 64%",
                     "(the watch reports heart rate 62 bpm, battery 64%)",
                     "sos SOS pressed on the watch at 31.2304, 121.4737 (fix 20 s old)",
                     "sos SOS pressed on the panel"):
        assert expected in out, expected
    last = out.strip().splitlines()
    summary = next(line for line in last if line.startswith("The community server received"))
    received = int(summary.split()[4])
    assert received > 300 and "4 alerts" in summary
