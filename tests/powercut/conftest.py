"""pcfs needs root, /dev/fuse, fusermount3 and libfuse3: skipped where they are truly missing,
except in CI (CI=true), where .ci/run installs fuse3 and a missing piece is a failure."""

from __future__ import annotations

import os

import pytest

from tests.powercut.harness import fuse_unavailable


@pytest.fixture(scope="session")
def fuse_ok():
    reason = fuse_unavailable()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"power-cut tests must run in CI, but FUSE is unavailable: {reason}")
    pytest.skip(f"FUSE unavailable: {reason}")
