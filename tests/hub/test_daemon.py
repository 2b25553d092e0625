"""`carehub run` as systemd sees it: readiness, watchdog, clean stop, exit codes."""

from __future__ import annotations

import json
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


def test_status_reads_the_store_while_the_daemon_runs(write_config, notify_socket):
    path = write_config(MINIMAL + '\n[store]\nbatch_interval = "0.1s"\n')
    proc = start_daemon(path, NOTIFY_SOCKET=str(notify_socket.path))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    try:
        notify_socket.wait_for("READY=1")
        deadline = time.monotonic() + 20
        while True:  # the first heartbeat is committed 0.1 s after READY
            out = subprocess.run([sys.executable, "-m", "hub", "status", "--config", str(path), "--json"],
                                 capture_output=True, text=True, env=env, timeout=20)
            assert out.returncode == 0, out.stderr
            status = json.loads(out.stdout)
            if status["recent"] or time.monotonic() > deadline:
                break
        text = subprocess.run([sys.executable, "-m", "hub", "status", "--config", str(path)],
                              capture_output=True, text=True, env=env, timeout=20).stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=5)
    assert status["hub_id"] == "home-test"
    assert status["depth"] == {"1": 0, "2": 0, "3": 1}
    assert [e["type"] for e in status["recent"]] == ["hub.heartbeat"]
    assert status["active_alerts"] == [] and status["dead_letter_count"] == 0
    assert "queue: priority 1: 0, priority 2: 0, priority 3: 1" in text
    assert "last successful sync: never" in text


def test_status_without_a_store_says_so(write_config):
    path = write_config(MINIMAL)
    out = subprocess.run([sys.executable, "-m", "hub", "status", "--config", str(path)],
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.returncode == 1
    assert "no store at" in out.stderr and "Traceback" not in out.stderr


def test_a_notify_socket_nobody_reads_never_freezes_the_daemon(write_config, tmp_path):
    """systemd always reads its socket; if nothing does, the queue fills and a blocking send would hang."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "full.sock"))
    try:
        proc = start_daemon(write_config(FAST), NOTIFY_SOCKET=str(tmp_path / "full.sock"),
                            WATCHDOG_USEC="20000")  # a ping every 10 ms fills the queue at once
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.2)
                if (tmp_path / "state" / "events.db").exists():
                    break
            time.sleep(1.0)  # well past the ~10 queued datagrams the kernel takes
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            proc.kill()
            proc.wait()
    finally:
        sock.close()
