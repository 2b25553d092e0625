"""Log lines carry their priority for journald only when stderr is journald's stream."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO

SCRIPT = """
import logging, sys
from hub import logs
logs.setup("debug")
log = logging.getLogger("carehub.test")
log.debug("d"); log.info("i"); log.warning("w"); log.error("e\\nsecond line"); log.critical("c")
"""


def _run(tmp_path, journal: bool) -> list[str]:
    err = tmp_path / "stderr"
    with open(err, "wb") as f:
        st = os.fstat(f.fileno())
        env = dict(os.environ, PYTHONPATH=str(REPO))
        env.pop("JOURNAL_STREAM", None)
        if journal:
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"  # as systemd sets it for this stream
        subprocess.run([sys.executable, "-c", SCRIPT], stderr=f, env=env, check=True, timeout=30)
    return err.read_text().splitlines()


def test_journal_stream_gets_sd_daemon_priority_prefixes(tmp_path):
    lines = _run(tmp_path, journal=True)
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>", "<3>", "<2>"]
    assert lines[2] == "<4>WARNING carehub.test: w"
    assert lines[4] == "<3>second line"  # journald splits lines: each keeps the priority


def test_a_terminal_or_file_gets_plain_lines(tmp_path):
    lines = _run(tmp_path, journal=False)
    assert lines[2] == "WARNING carehub.test: w" and not any(line.startswith("<") for line in lines)


def test_journal_stream_of_another_file_is_not_ours(tmp_path):
    other = tmp_path / "other"
    other.write_text("")
    st = os.stat(other)
    env = dict(os.environ, PYTHONPATH=str(REPO), JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=30)
    assert "WARNING carehub.test: w" in r.stderr.splitlines()
