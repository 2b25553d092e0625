"""`carehub demo`, as a new user runs it: a night on simulated devices, alerts raised, delivered
with their latency, acknowledged in real time, and a closing summary; plain lines when piped."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from datetime import datetime, timezone

from hub import demo
from hub.clock import ManualClock
from tests.conftest import REPO

ALERTS = {("P2", "night_bed_exit"), ("P1", "vitals_absent"), ("P1", "sos")}


def test_demo_runs_a_night_and_delivers_every_alert():
    proc = subprocess.run([sys.executable, "-m", "hub", "demo", "--speed", "2400"], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "Traceback" not in proc.stderr
    assert "\x1b" not in out, "a pipe gets plain lines, no escape codes"
    for expected in ("bed.entered", "sleep.report", "panel: light alert", "panel: light acknowledged",
                     "status     devices belt connected, panel connected, modem ready, watch connected | vitals heart"):
        assert expected in out, expected
    raised = set(re.findall(r"alert\.raised +(P\d)  (\w+)", out))
    assert raised == ALERTS
    delivered = re.findall(r"delivered  (P\d) (\w+) at the server, (\d+) ms after its commit \(real\)", out)
    assert {(p, rule) for p, rule, _ in delivered} == ALERTS and len(delivered) == 4  # 2 SOS
    # the SOS is held and acknowledged in real time: the simulated clock follows real time meanwhile
    held = float(re.search(r"the resident lets go after ([\d.]+) s \(real\)", out).group(1))
    assert held >= demo.SOS_HOLD_S
    # the watch: heart rate and battery, and an SOS with where the resident is
    assert "the watch reports heart rate" in out and "watch connected, battery 64%" in out
    assert re.search(r"alert\.raised +P1  sos SOS pressed on the watch at 31\.2304, 121\.4737 \(fix \d+(\.\d+)? s old\)", out)
    # the internet is down during the SOS: the bound phone is texted and its "OK" acknowledges
    assert re.search(r"SMS to \+8613800000000: .*SOS", out)
    assert re.search(r"alert\.notified +P\d  sms to \+8613800000000 \(Duty desk\): sent", out)
    assert re.search(r"alert\.acknowledged P\d  sos sms:\+8613800000000", out)
    assert "the hub took the reply as an acknowledgement" in out
    sos = out.index("the resident presses SOS and holds it")
    back = out.index("---- back to 2400x")
    sim = re.findall(r"sim (\d\d):(\d\d):(\d\d)  real (\d+):([\d.]+)", out[sos:back])
    sim_s = [int(h) * 3600 + int(m) * 60 + int(s) for h, m, s, _, _ in sim]
    real_s = [int(m) * 60 + float(s) for _, _, _, m, s in sim]
    assert sim_s[-1] - sim_s[0] <= real_s[-1] - real_s[0] + 2, "1x during the real-time section"
    # the closing summary
    summary = out[out.index("Summary:"):]
    committed, received = map(int, re.search(r"events: (\d+) committed, (\d+) delivered", summary).groups())
    assert committed > 300 and received == committed
    assert "alerts: 4 raised, 4 delivered" in summary
    for prio, rule in ALERTS:
        assert re.search(rf"{prio} {rule} +raised \d\d:\d\d:\d\d \(sim\), delivered in \d+ ms \(real\),"
                         r" now resolved", summary), rule
    assert "every alert reached the community server" in summary


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_live_view_redraws_in_place_on_a_terminal_only():
    clock = ManualClock(datetime(2026, 1, 1, 23, 0, tzinfo=timezone.utc))
    board = demo.Board(devices={"belt": {"state": "connected"}, "gpio": {"state": "connected"}},
                       hr_bpm=61, rr_per_min=14, in_bed=True, queue={1: 0, 2: 0, 3: 4},
                       committed=10, delivered=6, sync_state="online", last_sync_real=0.4, pace="400x")
    board.alerts["a1"] = demo.AlertRow("a1", "sos", 1, "raised", "04:40:02", clock.now(), 0.012)
    for stream, tty in ((_Terminal(), True), (io.StringIO(), False)):
        view = demo.View(stream, clock, timezone.utc, demo.SteadyWall(), 400)
        view.line("#1    device.status      P3  belt connected")
        view.draw(board)
        text = stream.getvalue()
        if tty:
            assert text.startswith("\x1b[H\x1b[J")
            for shown in ("belt connected, panel connected", "heart 61 bpm, breathing 14/min, in bed",
                          "4 waiting", "last sync 0.4 s ago", "P1 sos", "raised",
                          "delivered 12 ms", "sim 23:00:00  real 0:00.0  #1    device.status"):
                assert shown in text, shown
        else:
            assert "\x1b" not in text and text.startswith("sim 23:00:00  real 0:00.0  #1")
