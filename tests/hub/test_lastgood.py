"""A bad edit never leaves the resident unwatched: the hub runs on its last good configuration."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time

from offline_queue.receiver import make_server
from tests.conftest import MINIMAL, REPO
from tests.hub.test_daemon import start_daemon

TOKEN = "s3cret-token"


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


def wait_for(predicate, timeout_s=30.0, what="condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (value := predicate()):
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def config_text(url, token_file) -> str:
    return MINIMAL + f"""
[server]
url = "{url}"
token_file = "{token_file}"
sync_interval = "0.2s"
backoff_base = "0.2s"
"""


class Daemon:
    def __init__(self, config_path):
        self.proc = start_daemon(config_path)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_running(self):
        wait_for(lambda: any("running:" in line for line in self.lines) or self.proc.poll() is not None,
                 what="the daemon to start")
        assert any("running:" in line for line in self.lines), "".join(self.lines)

    def stop(self) -> int:
        self.proc.terminate()  # as systemd restarts it: SIGTERM, then a new process
        rc = self.proc.wait(timeout=10)
        self.reader.join(5)
        return rc


def test_invalid_edit_while_running_then_restart_runs_on_last_good_and_reports_p2(write_config, token_file,
                                                                                   tmp_path):
    with receiver(tmp_path) as server:
        cfg = write_config(config_text(server.url, token_file))
        first = Daemon(cfg)
        first.wait_running()
        kept = tmp_path / "state" / "last-good-config.json"
        wait_for(kept.exists, what="the last good configuration to be kept")
        # The technician's edit: a misspelt key and a bad duration, while the hub runs.
        bad = cfg.read_text().replace('sync_interval = "0.2s"', 'sync_intervall = "0.2s"') + \
            '\n[rules.hr_high]\npersist = "ten minutes"\n'
        cfg.write_text(bad)
        assert first.stop() == 0

        second = Daemon(cfg)
        try:
            second.wait_running()
            check = subprocess.run([sys.executable, "-m", "hub", "check-config", "--config", str(cfg)],
                                   capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
            problems = [line for line in check.stderr.splitlines() if line.startswith(str(cfg))]
            assert check.returncode == 78 and len(problems) == 2
            log = "".join(second.lines)
            for p in problems:  # every problem logged, as check-config prints it
                assert p in log
            assert "last good" in log
            rejected = wait_for(lambda: [e for e in server.events("home-test") if e["type"] == "hub.config_rejected"],
                                what="hub.config_rejected at the receiver")
            assert rejected[0]["priority"] == 2 and rejected[0]["data"]["problems"] == problems
        finally:
            assert second.stop() == 0
        good = tmp_path / "good.toml"
        good.write_text(config_text(server.url, token_file).replace("{state_dir}", str(tmp_path / "state")))
        status = subprocess.run([sys.executable, "-m", "hub", "status", "--config", str(good)],
                                capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
        assert "configuration: REJECTED (2 problem(s)); running on the last good one" in status.stdout, status
        assert "sync_intervall" in status.stdout
        as_json = json.loads(subprocess.run(
            [sys.executable, "-m", "hub", "status", "--json", "--config", str(good)], capture_output=True,
            text=True, env=dict(os.environ, PYTHONPATH=str(REPO))).stdout)
        assert as_json["config"]["state"] == "last_good" and as_json["config"]["problems"] == problems


def test_without_a_last_good_configuration_an_invalid_one_exits_78(write_config):
    cfg = write_config(MINIMAL + '\n[hub2]\nx = 1\n')
    r = subprocess.run([sys.executable, "-m", "hub", "run", "--config", str(cfg)], capture_output=True,
                       text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 78 and f"{cfg}:" in r.stderr and "hub2" in r.stderr


def test_last_good_is_written_once_per_change(write_config, tmp_path):
    from hub import config, lastgood
    cfg = config.load(write_config(MINIMAL))
    assert lastgood.save(cfg) is True
    kept = tmp_path / "state" / lastgood.FILE_NAME
    before = kept.stat().st_mtime_ns
    assert lastgood.save(config.load(tmp_path / "config.toml")) is False
    assert kept.stat().st_mtime_ns == before
    again = lastgood.load(lastgood.state_dirs(tmp_path / "config.toml"))
    assert again["hub"] == cfg["hub"] and again["_last_good"]["path"] == str(kept)
    assert not [p for p in kept.parent.iterdir() if p.name.startswith(".")]  # no temp file left


def test_a_syntax_error_in_the_main_file_still_finds_the_last_good(write_config, tmp_path):
    from hub import config, lastgood
    path = write_config(MINIMAL)
    lastgood.save(config.load(path))
    path.write_text(path.read_text() + "\n[broken\n")
    with __import__("pytest").raises(config.ConfigError):
        config.load(path)
    assert lastgood.state_dirs(path)[0] == tmp_path / "state"
    assert lastgood.load(lastgood.state_dirs(path))["hub"]["id"] == "home-test"
