"""The last configuration that validated and ran, kept so that a bad edit never stops the hub.

`carehub run` saves the texts of the configuration files it started on (not the parsed dict:
the saved texts are validated again by the same code on the way back, so a newer version of
the hub never runs on a dict it did not check). When the configuration on disk is invalid,
the hub logs every problem, runs on this copy and reports a priority-2 ``hub.config_rejected``
event (spec section 5). Written only when it changes, atomically, with fsync: the SD card sees
one small write per configuration change, and a power cut leaves the old or the new copy.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import tomllib
from datetime import datetime, timezone
from pathlib import Path

from hub import config
from hub.errors import ConfigError

LOGGER = logging.getLogger(__name__)

FILE_NAME = "last-good-config.json"
STATE_KEY = "config.in_use"  # the store's state row that `carehub status` shows
FORMAT = 1
_STATE_DIR_RE = re.compile(r'^\s*state_dir\s*=\s*"([^"]+)"', re.MULTILINE)


def state_dirs(path=None, env=os.environ) -> list[Path]:
    """Where a last good copy may be, read leniently from a configuration that did not validate.

    The ``hub.state_dir`` the broken files name (last one wins, as in a valid merge), then the
    default: an edit that breaks the TOML syntax of the main file still finds the copy.
    """
    found = None
    for file in config.config_files(path, env):
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        try:
            hub = tomllib.loads(text).get("hub")
        except tomllib.TOMLDecodeError:  # a syntax error elsewhere: find the line itself
            m = _STATE_DIR_RE.search(text)
            hub = {"state_dir": m.group(1)} if m else None
        if isinstance(hub, dict) and isinstance(hub.get("state_dir"), str) and hub["state_dir"]:
            found = hub["state_dir"]
    default = config.SCHEMA["hub"]["state_dir"].default
    dirs = [Path(found)] if found else []
    if Path(default) not in dirs:
        dirs.append(Path(default))
    return dirs


def save(cfg: dict) -> bool:
    """Keep ``cfg``'s sources as the last good configuration; False when it was already kept."""
    if not cfg.get("_sources"):
        return False  # built in code (the demo), not read from files
    path = Path(cfg["hub"]["state_dir"]) / FILE_NAME
    doc = {"format": FORMAT, "files": [{"path": p, "text": t} for p, t in cfg["_sources"].items()]}
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("format") == FORMAT and old.get("files") == doc["files"]:
            return False
    except (OSError, ValueError):
        pass
    doc["saved_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    _write_atomically(path, json.dumps(doc, ensure_ascii=False, indent=1).encode())
    LOGGER.info("configuration kept as the last good one in %s", path)
    return True


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # the temp file must not stay behind
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(dirs: list[Path]) -> dict | None:
    """The last good configuration, validated again, or None when there is none usable."""
    for d in dirs:
        path = d / FILE_NAME
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            texts = {f["path"]: f["text"] for f in doc["files"]}
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError) as e:
            LOGGER.error("the last good configuration %s cannot be read (%s)", path, e)
            continue
        try:
            cfg = config.load(texts=texts)
        except ConfigError as e:  # e.g. its token file is gone since
            LOGGER.error("the last good configuration %s is no longer valid: %s", path, e.problems[0])
            continue
        cfg["_last_good"] = {"path": str(path), "saved_at": doc.get("saved_at")}
        return cfg
    return None


def rejected(cfg: dict, problems: list[str]) -> dict:
    """``cfg`` (the last good one) marked as running in place of a configuration with ``problems``."""
    cfg["_rejected"] = list(problems)
    return cfg


async def after_start(cfg: dict, store, factory) -> None:
    """Once the hub runs: report a rejected configuration, or keep this one as the last good."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    problems = cfg.get("_rejected")
    if problems:
        data = {"problems": problems, "running_on": cfg["_last_good"]["path"],
                "saved_at": cfg["_last_good"]["saved_at"]}
        await store.commit(factory.make("hub.config_rejected", data, priority=2))
        await store.put_state(STATE_KEY, {"state": "last_good", "since": now, **data})
        return
    save(cfg)
    await store.put_state(STATE_KEY, {"state": "current", "since": now, "files": cfg["_files"]})
