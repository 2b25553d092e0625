"""`carehub run` as systemd sees it: readiness, watchdog, clean stop, exit codes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from offline_queue.store import Store
from tests.conftest import MINIMAL, REPO

FAST = MINIMAL + '\n[store]\nbatch_interval = "60s"\n'


def start_daemon(config_path, **env_extra):
    env = dict(os.environ, PYTHONPATH=str(REPO), **env_extra)
    return subprocess.Popen([sys.executable, "-m", "hub", "run", "--config", str(config_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.path = path
        self.received: list[str] = []

    def wait_for(self, text: str, timeout_s: float = 20.0) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while not any(text in m for m in self.received):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {text!r} from the daemon; got {self.received}")
            self.sock.settimeout(left)
            try:
                self.received.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass
        return self.received

    def close(self):
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path):
    ns = NotifySocket(tmp_path / "notify.sock")
    yield ns
    ns.close()


def test_ready_then_sigterm_exits_0_within_5s(write_config, notify_socket, tmp_path):
    proc = start_daemon(write_config(FAST), NOTIFY_SOCKET=str(notify_socket.path),
                        WATCHDOG_USEC="200000")
    try:
        notify_socket.wait_for("READY=1")
        notify_socket.wait_for("WATCHDOG=1")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=5)
        assert time.monotonic() - t0 < 5
        assert rc == 0, proc.stderr.read()
        notify_socket.wait_for("STOPPING=1", timeout_s=1)
    finally:
        proc.kill()
        proc.wait()
    # The heartbeat raised at start was buffered (priority 3); the stop committed it.
    store = Store(tmp_path / "state" / "events.db")
    try:
        assert [e["type"] for e in store.take_batch()] == ["hub.heartbeat"]
    finally:
        store.close()


def test_sigint_also_stops_cleanly(write_config, notify_socket):
    proc = start_daemon(write_config(FAST), NOTIFY_SOCKET=str(notify_socket.path))
    try:
        notify_socket.wait_for("READY=1")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        proc.wait()


def test_invalid_configuration_exits_78_with_the_check_config_lines(write_config, notify_socket):
    path = write_config(FAST + '\n[rules.hr_high]\npersist = "ten minutes"\n')
    proc = start_daemon(path, NOTIFY_SOCKET=str(notify_socket.path))
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 78
    assert err.splitlines()[0].startswith(f"{path}:11: rules.hr_high.persist: ")
    assert "Traceback" not in err
    notify_socket.wait_for("STATUS=configuration invalid")


def test_no_watchdog_pings_when_not_asked(write_config, notify_socket):
    proc = start_daemon(write_config(FAST), NOTIFY_SOCKET=str(notify_socket.path))
    try:
        notify_socket.wait_for("READY=1")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        notify_socket.wait_for("STOPPING=1", timeout_s=1)
        assert not any("WATCHDOG=1" in m for m in notify_socket.received)
    finally:
        proc.kill()
        proc.wait()
