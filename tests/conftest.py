"""Shared fixtures: configuration files written for one test."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "carehub.example.toml"

MINIMAL = """\
[hub]
id = "home-test"
resident_id = "R-1"
timezone = "Asia/Shanghai"
state_dir = "{state_dir}"
"""


@pytest.fixture
def write_config(tmp_path):
    """write_config(text, name="config.toml") -> Path; `{state_dir}` is filled in."""

    def write(text: str, name: str = "config.toml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).replace("{state_dir}", str(tmp_path / "state")))
        return path

    return write


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "token"
    path.write_text("s3cret-token\n")
    os.chmod(path, 0o600)
    return path
