"""`carehub doctor` on a demo-like home: a belt on a pty, mock pins, a receiver on 127.0.0.1."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import subprocess
import sys
import threading

import pytest

from hub import doctor
from hub.events import kernel_clock_synced
from offline_queue.receiver import make_server
from tests.conftest import EXAMPLE, MINIMAL, REPO
from tests.daemon_helpers import belt_pty

TOKEN = "s3cret-token"


class VitalsFeeder(threading.Thread):
    """Someone lying in bed: NDJSON lines with heart and breathing rates, a few a second."""

    def __init__(self, fd, hr_every: int = 1):
        super().__init__(daemon=True)
        self.fd, self.hr_every = fd, hr_every
        self.stop = threading.Event()

    def run(self):
        n = 0
        while not self.stop.is_set():
            n += 1
            reading = {"in_bed": True, "presence": True, "resp_rate_per_min": 14}
            if n % self.hr_every == 0:
                reading["heart_rate_bpm"] = 62
            try:
                os.write(self.fd, (json.dumps(reading) + "\n").encode())
            except BlockingIOError:
                pass
            except OSError:
                return
            self.stop.wait(0.1)


@contextlib.contextmanager
def receiver(tmp_path):
    server = make_server("127.0.0.1", 0, tmp_path / "rx.db", TOKEN)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def home(tmp_path, write_config, token_file):
    """write(url, port=...) -> a config path for a demo-like home; the pty feeder runs meanwhile."""
    master, slave, port = belt_pty(tmp_path)
    feeders = []

    def make(url: str, belt_port=None, hr_every: int = 1):
        feeder = VitalsFeeder(master, hr_every)
        feeder.start()
        feeders.append(feeder)
        return write_config(MINIMAL + f"""
[server]
url = "{url}"
token_file = "{token_file}"

[belt]
port = "{belt_port or port}"
protocol = "ndjson"

[gpio]
pin_factory = "mock"
""")

    yield make
    for f in feeders:
        f.stop.set()
        f.join(5)
    os.close(master)
    os.close(slave)


def run_checks(path, **kw):
    # As the user running the tests: the installer's `carehub` user does not exist here.
    return doctor.run_checks(path, service_user=getpass.getuser(), **kw)


def by_name(checks):
    return {c.name: c for c in checks}


def test_demo_like_home_passes_every_applicable_check(home, tmp_path):
    with receiver(tmp_path) as server:
        checks = run_checks(home(server.url), seconds=1.5)
        assert server.events() == []  # the empty batch stored nothing
    got = by_name(checks)
    assert got["server"].status == doctor.PASS, got["server"]
    assert got["belt frames"].status == doctor.PASS, got["belt frames"]
    assert got["belt placement"].status == doctor.PASS and "placement good" in got["belt placement"].detail
    for name in ("bluetooth adapter", "watch seen", "gpio chip", "store"):
        assert got[name].status == doctor.SKIP, got[name]
    # The clock is this machine's: the check says what the kernel says, and offers a fix if not.
    assert (got["clock"].status == doctor.PASS) == kernel_clock_synced()
    failed = [c for c in checks if c.status == doctor.FAIL and c.name != "clock"]
    assert failed == [], failed
    assert all(c.fix for c in checks if c.status == doctor.FAIL)


def test_missing_serial_port_fails_with_the_udev_fix(home, tmp_path):
    with receiver(tmp_path) as server:
        got = by_name(run_checks(home(server.url, belt_port=tmp_path / "carehub-belt"), seconds=0.5))
    assert got["serial port"].status == doctor.FAIL and "does not exist" in got["serial port"].detail
    assert "udev" in got["serial port"].fix
    assert got["belt frames"].status == doctor.SKIP


def test_wrong_token_fails_with_the_token_fix(home, tmp_path, token_file):
    with receiver(tmp_path) as server:
        path = home(server.url)
        token_file.write_text("not-the-token\n")
        got = by_name(run_checks(path, seconds=0.5))
    assert got["server"].status == doctor.FAIL and "401" in got["server"].detail
    assert "token" in got["server"].fix and str(token_file) in got["server"].fix


def test_server_down_fails_with_the_network_fix(home, tmp_path):
    with receiver(tmp_path) as server:
        url = server.url
    got = by_name(run_checks(home(url), seconds=0.5))  # the receiver has gone
    assert got["server"].status == doctor.FAIL and "unreachable" in got["server"].detail
    assert "network" in got["server"].fix


def test_misplaced_belt_fails_placement(home, tmp_path):
    with receiver(tmp_path) as server:
        got = by_name(run_checks(home(server.url, hr_every=5), seconds=1.5))
    assert got["belt frames"].status == doctor.PASS
    assert got["belt placement"].status == doctor.FAIL and "chest" in got["belt placement"].fix


def test_cli_json_and_exit_status(home, tmp_path):
    with receiver(tmp_path) as server:
        path = home(server.url, belt_port=tmp_path / "nope")
        r = subprocess.run([sys.executable, "-m", "hub", "doctor", "--json", "--seconds", "0.5", "--user", getpass.getuser(),
                            "--config", str(path)],
                           capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO)))
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and doc["ok"] is False
    assert {c["name"]: c["status"] for c in doc["checks"]}["serial port"] == "fail"
    assert "Traceback" not in r.stderr


def test_invalid_config_is_the_first_failure(write_config):
    path = write_config(MINIMAL + '\n[hub2]\nx = 1\n')
    checks = run_checks(path, seconds=0.1)
    assert checks[0].name == "config" and checks[0].status == doctor.FAIL and "hub2" in checks[0].detail
    assert "check-config" in checks[0].fix


def test_placeholders_are_the_example_configs():
    text = EXAMPLE.read_text()
    for (table, key), value in doctor.PLACEHOLDERS.items():
        assert f'{key} = "{value}"' in text


def test_beside_the_running_daemon_frames_come_from_its_live_feed(home, tmp_path):
    from tests.hub.test_lastgood import Daemon, wait_for
    with receiver(tmp_path) as server:
        path = home(server.url)
        daemon = Daemon(path)
        try:
            daemon.wait_running()
            wait_for((tmp_path / "state" / "live.sock").exists, what="the live feed")
            got = by_name(run_checks(path, seconds=1.5))
        finally:
            assert daemon.stop() == 0
    assert got["belt frames"].status == doctor.PASS and "live feed" in got["belt frames"].detail, got["belt frames"]
    assert got["belt placement"].status == doctor.PASS
    assert got["store"].status == doctor.PASS
