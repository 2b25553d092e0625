"""The technician's rough edges: help texts, replay without /etc/carehub, closed pipes, order of problems."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from hub.cli import build_parser
from tests.conftest import MINIMAL, REPO


def carehub(*args, cwd=None, env_extra=None, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env_extra or {}))
    env.pop("CAREHUB_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "hub", *args], capture_output=True, text=True, timeout=60,
                          env=env, cwd=cwd, **kw)


def _commands():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_command_has_a_description_and_an_example(name):
    p = _commands()[name]
    assert p.description and len(p.description) > 40, name
    assert p.epilog and p.epilog.startswith("example:") and f"carehub {name}" in p.epilog, name
    assert "example:" in p.format_help()


def night(tmp_path):
    """A short NDJSON night: in bed, vitals, out of bed."""
    t0 = datetime(2026, 11, 23, 22, 0, tzinfo=timezone(timedelta(hours=8)))
    lines = []
    for i in range(300):
        reading = {"in_bed": i < 250, "heart_rate_bpm": 60, "resp_rate_per_min": 14}
        data = (json.dumps(reading) + "\n").encode()
        lines.append(json.dumps({"t": (t0 + timedelta(seconds=i)).isoformat(timespec="milliseconds"),
                                 "source": "belt", "hex": data.hex()}))
    path = tmp_path / "night.rec"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_replay_without_etc_carehub_uses_defaults_and_ends_with_a_summary(tmp_path):
    assert not os.path.exists("/etc/carehub/config.toml")
    r = carehub("replay", "--protocol", "ndjson", str(night(tmp_path)), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert any(e["type"] == "bed.entered" for e in events)
    summary = r.stderr.strip().splitlines()
    assert len(summary) == 1 and summary[0].startswith(f"replayed {tmp_path / 'night.rec'}")
    assert f"{len(events)} event(s)" in summary[0]


def test_replay_protocol_overrides_the_configured_one(tmp_path, write_config):
    cfg = write_config(MINIMAL + '\n[belt]\nport = "loop://"\nprotocol = "micradar"\n')
    r = carehub("replay", "--config", str(cfg), "--protocol", "ndjson", str(night(tmp_path)))
    assert r.returncode == 0 and any(json.loads(x)["type"] == "bed.entered" for x in r.stdout.splitlines())


def _into_closed_pipe(*args) -> subprocess.CompletedProcess:
    """stdout is a pipe whose reader has already gone, as with `| head -c1` once head has exited."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "hub", *args], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO)))
    finally:
        os.close(write_end)


def test_closed_pipe_is_not_a_traceback(tmp_path, write_config):
    cfg = write_config(MINIMAL)
    from hub import config
    from offline_queue.store import Store
    Store(config.load(cfg)["hub"]["state_dir"] + "/events.db").close()
    r = _into_closed_pipe("status", "--json", "--config", str(cfg))
    assert r.stderr == "" and r.returncode == 141, r.stderr
    r = _into_closed_pipe("replay", "--protocol", "ndjson", "--config", str(cfg), str(night(tmp_path)))
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr and r.returncode == 141, r.stderr
    sh = f"{sys.executable} -m hub status --json --config {cfg} | head -c1"
    r = subprocess.run(["sh", "-c", sh], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.stdout == "{" and r.stderr == "", r.stderr


def test_check_config_lines_in_file_and_line_order(write_config, tmp_path):
    main = write_config(MINIMAL + """
[rules.hr_high]
persist = "ten minutes"

[store]
quota_mb = "lots"

[belt]
port = "/dev/x"
protocl = "ndjson"
""")
    write_config('[hub]\nlog_levl = "debug"\n', name="conf.d/50-site.toml")
    write_config('[server]\ntimeout = "forever"\n', name="conf.d/10-net.toml")
    r = carehub("check-config", "--config", str(main))
    lines = [line for line in r.stderr.splitlines() if ": " in line and line.startswith("/")]
    assert r.returncode == 78 and len(lines) == 5, r.stderr
    files = [line.split(":")[0] for line in lines]
    numbers = [int(line.split(":")[1]) for line in lines]
    order = [str(main), str(tmp_path / "conf.d/10-net.toml"), str(tmp_path / "conf.d/50-site.toml")]
    assert sorted(zip(files, numbers), key=lambda fn: (order.index(fn[0]), fn[1])) == list(zip(files, numbers))
    assert numbers[:3] == sorted(numbers[:3]) and files[0] == str(main)


def test_status_shows_local_times_and_no_python_dicts(write_config, tmp_path):
    from hub import config, status
    from hub.events import EventFactory
    from hub.clock import ManualClock
    from offline_queue.store import Store
    cfg = config.load(write_config(MINIMAL))
    store = Store(cfg["hub"]["state_dir"] + "/events.db")
    clock = ManualClock(datetime(2026, 11, 23, 14, 5, 7, tzinfo=timezone.utc))
    factory = EventFactory("home-test", "R-1", clock, boot_id="b", synced=lambda: True)
    store.append([factory.make("device.status", {"device": "belt", "state": "connected"})],
                 state={"hub.devices": {"belt": {"state": "connected", "firmware": "G60SM1"}},
                        "sync.last_success": {"at": "2026-11-23T14:05:07.120Z", "clock_synced": True,
                                              "delivered": 3}})
    store.close()

    class Out:
        text = ""

        def write(self, s):
            Out.text += s

    status.main(cfg, out=Out())
    text = Out.text
    assert "2026-11-23 22:05:07 CST" in text  # Asia/Shanghai, not UTC
    assert "{" not in text and "'" not in text, text
    assert "belt: connected (firmware G60SM1)" in text
    assert "3 event(s) delivered" in text


def test_gpiozero_fallbacks_are_one_line(tmp_path):
    script = """
import asyncio, logging
from hub import logs
logs.setup("info")
from drivers.panel import Panel
loop = asyncio.new_event_loop()
try:
    Panel.from_config({"sos_pin": 17, "ok_pin": 27, "led_pin": 22, "buzzer_pin": 23, "sos_hold": 2.0}, None,
                      on_press=print, loop=loop)
except Exception as e:
    print("no panel:", type(e).__name__)
"""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("GPIOZERO_PIN_FACTORY", None)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    fallback_lines = [line for line in r.stderr.splitlines() if "Falling back" in line]
    if not fallback_lines:
        pytest.skip("gpiozero found a working pin factory on this machine: no fallback to report")
    assert len(fallback_lines) == 1 and fallback_lines[0].startswith("WARNING drivers.panel: GPIO pin factory")
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_first_contact_with_the_server_is_not_reachable_again(tmp_path, caplog):
    from tests.offline_queue.synckit import make_factory, make_uploader, new_clock, open_store, running_receiver

    async def go():
        clock = new_clock()
        with running_receiver(tmp_path, clock.now) as server:
            factory = make_factory(clock)
            async with open_store(tmp_path / "q.db", factory) as store:
                await store.commit(factory.make("vitals.minute", {"i": 1}))
                up = make_uploader(store, server, clock)
                await up.sync_once()
                return server.url

    with caplog.at_level(logging.INFO, logger="offline_queue.uploader"):
        url = asyncio.run(go())
    messages = [r.getMessage() for r in caplog.records]
    assert f"community server reached at {url}" in messages[0] if messages else False, messages
    assert not any("reachable again" in m for m in messages)
