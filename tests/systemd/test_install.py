"""systemd/install.sh against a temporary root: install, upgrade over site edits, uninstall, purge."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "systemd" / "install.sh"
LIVE_COMMANDS = ["udevadm control --reload", "systemctl daemon-reload", "systemctl enable carehub.service",
                 "systemctl restart carehub.service", "systemctl restart systemd-journald"]


def install(root, *args) -> subprocess.CompletedProcess:
    r = subprocess.run(["sh", str(SCRIPT), "--root", str(root), *args], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def would_run(r) -> list[str]:
    return [line.removeprefix("would run: ") for line in r.stdout.splitlines() if line.startswith("would run: ")]


@pytest.mark.timeout(900)
def test_install_twice_keeps_site_edits_then_uninstall_keeps_data_and_purge_removes_it(tmp_path):
    root = tmp_path / "root"
    first = install(root)
    for cmd in LIVE_COMMANDS:
        assert cmd in would_run(first)
    carehub = root / "opt/carehub/bin/carehub"
    r = subprocess.run([str(carehub), "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("carehub "), r.stderr
    # The package and its dependencies came from the hash-locked set.
    freeze = subprocess.run([str(root / "opt/carehub/bin/python"), "-m", "pip", "freeze", "--local"],
                            capture_output=True, text=True, timeout=60).stdout
    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503

    lock = {norm(line.split("==")[0]): line.split("==")[1].split()[0]
            for line in (REPO / "systemd" / "requirements.lock").read_text().splitlines()
            if "==" in line and not line.startswith((" ", "#"))}
    installed = {norm(line.split("==")[0]): line.split("==")[1] for line in freeze.splitlines() if "==" in line}
    installed.pop("carehub", None)
    assert installed and all(lock.get(name) == version for name, version in installed.items()), installed
    for path in ["etc/systemd/system/carehub.service", "etc/udev/rules.d/99-carehub-belt.rules",
                 "etc/systemd/journald.conf.d/90-carehub.conf", "usr/lib/sysusers.d/carehub.conf",
                 "etc/carehub/config.toml", "opt/carehub/share/doc/carehub/install.md"]:
        assert (root / path).is_file(), path
    assert os.readlink(root / "usr/local/bin/carehub") == "/opt/carehub/bin/carehub"
    if shutil.which("systemd-sysusers"):
        # sysusers made the user and its groups in the temporary root's own /etc.
        passwd = (root / "etc/passwd").read_text()
        assert passwd.startswith("carehub:") or "\ncarehub:" in passwd
        group = (root / "etc/group").read_text()
        assert all(f"{g}:" in group and "carehub" in group.split(f"{g}:", 1)[1].splitlines()[0]
                   for g in ("dialout", "gpio", "bluetooth"))
    else:
        assert "systemd-sysusers carehub.conf" in would_run(first)

    config = root / "etc/carehub/config.toml"
    config.write_text(config.read_text().replace('id = "home-0042"', 'id = "home-site-7"'))
    rule = root / "etc/udev/rules.d/99-carehub-belt.rules"
    rule.write_text(rule.read_text().replace("REPLACE-SERIAL", "A10K3ZQ"))
    (root / "var/lib/carehub/events.db").write_bytes(b"queued events")

    second = install(root)
    assert 'id = "home-site-7"' in config.read_text()
    assert "A10K3ZQ" in rule.read_text()
    assert (root / "etc/carehub/config.toml.dist").is_file()
    assert "installed" not in "".join(line for line in second.stdout.splitlines()
                                      if "carehub.service" in line)  # the unit did not change

    gone = install(root, "--uninstall")
    assert "systemctl disable --now carehub.service" in would_run(gone)
    assert not (root / "opt/carehub").exists() and not (root / "etc/systemd/system/carehub.service").exists()
    assert not (root / "usr/local/bin/carehub").is_symlink()
    assert 'id = "home-site-7"' in config.read_text()
    assert (root / "var/lib/carehub/events.db").read_bytes() == b"queued events"

    purged = install(root, "--uninstall", "--purge")
    assert not (root / "etc/carehub").exists() and not (root / "var/lib/carehub").exists()
    assert "userdel carehub" in would_run(purged)


def test_purge_without_uninstall_is_refused(tmp_path):
    r = subprocess.run(["sh", str(SCRIPT), "--root", str(tmp_path), "--purge"], capture_output=True, text=True)
    assert r.returncode == 2 and "--uninstall" in r.stderr
    assert not any(tmp_path.iterdir())


def test_readme_gives_the_install_command():
    assert "sudo sh systemd/install.sh" in (REPO / "README.md").read_text()
