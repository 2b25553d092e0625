"""Fixtures for the watch tests: a private dbus-daemon standing in for the system bus."""

import os
import shutil
import subprocess

import pytest

from tests.drivers.watch.fake_bluez import BUS_CONF

DBUS_DAEMON = shutil.which("dbus-daemon")
needs_dbus = pytest.mark.skipif(DBUS_DAEMON is None and not os.environ.get("CI"),
                                reason="dbus-daemon is not installed (apt-get install dbus); CI installs it")


@pytest.fixture(scope="session")
def system_bus(tmp_path_factory):
    assert DBUS_DAEMON, "dbus-daemon missing: .ci/run must apt-get install dbus"
    d = tmp_path_factory.mktemp("bus")
    conf = d / "bus.conf"
    conf.write_text(BUS_CONF.format(path=d / "socket"))
    proc = subprocess.Popen([DBUS_DAEMON, f"--config-file={conf}", "--nofork", "--print-address=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        address = proc.stdout.readline().strip()    # printed once it listens
        assert address.startswith("unix:"), proc.stderr.read()
        yield address
    finally:
        proc.terminate()
        proc.wait(10)


