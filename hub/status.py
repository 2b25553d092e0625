"""`carehub status`: what the hub is doing now, read from the store while the daemon runs.

Times are shown in the hub's own timezone (the technician stands in that home), values as
words and numbers, never as Python dicts. ``--json`` keeps the raw values (UTC) for programs.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime

from hub.app import DROPPED_KEY, store_path
from hub.config import timezone_of
from hub.lastgood import STATE_KEY as CONFIG_KEY
from hub.pipeline import ACTIVE_ALERTS_KEY, DEVICES_KEY
from offline_queue.store import OVER_QUOTA_KEY, STATUS_STATE_KEYS, read_status
from offline_queue.uploader import STATE_SYNC


def main(cfg: dict, *, as_json: bool = False, out=None) -> int:
    out = out or sys.stdout  # looked up now: a default bound at import would keep a stale stream
    raw = read_status(store_path(cfg), state_keys=STATUS_STATE_KEYS + (
        DEVICES_KEY, ACTIVE_ALERTS_KEY, CONFIG_KEY, STATE_SYNC, DROPPED_KEY))
    state = raw.pop("state")
    status = dict(raw, hub_id=cfg["hub"]["id"], timezone=cfg["hub"]["timezone"],
                  devices=state.pop(DEVICES_KEY) or {},
                  active_alerts=state.pop(ACTIVE_ALERTS_KEY) or [],
                  dropped=state.pop(DROPPED_KEY) or {},
                  config=state.pop(CONFIG_KEY),
                  last_sync=state.get("sync.last_success"), sync=state)
    if as_json:
        print(json.dumps(status, indent=2, sort_keys=True, default=str), file=out)
        return 0
    print(render(status, timezone_of(cfg)), file=out)
    return 0


def local_time(value, tz) -> str:
    """An RFC 3339 time (or unix seconds) as ``2026-11-23 22:14:05 CST`` in ``tz``."""
    try:
        if isinstance(value, (int, float)):
            when = datetime.fromtimestamp(value, tz)
        else:
            when = datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(tz)
    except (TypeError, ValueError, OverflowError, OSError):
        return str(value)
    return when.strftime("%Y-%m-%d %H:%M:%S %Z")


def _details(info: dict, skip=("state",)) -> str:
    parts = [f"{k.replace('_', ' ')} {v}" for k, v in sorted(info.items()) if k not in skip and v not in (None, "")]
    return f" ({', '.join(parts)})" if parts else ""


def render(status: dict, tz) -> str:
    depth = status.get("depth", {})
    lines = [f"hub {status['hub_id']} (times in {status.get('timezone') or tz})"]
    conf = status.get("config") or {}
    if conf.get("state") == "last_good":
        problems = conf.get("problems") or []
        lines.append(f"configuration: REJECTED ({len(problems)} problem(s)); running on the last good one "
                     f"(kept {local_time(conf.get('saved_at'), tz)}); run `carehub check-config`")
        lines += [f"  {p}" for p in problems]
    elif conf.get("state") == "current":
        lines.append(f"configuration: as on disk, since {local_time(conf.get('since'), tz)}")
    devices = status.get("devices") or {}
    if devices:
        lines.append("devices:")
        lines += [f"  {name}: {info.get('state', '?')}{_details(info)}" for name, info in sorted(devices.items())]
    else:
        lines.append("devices: none reported")
    alerts = status.get("active_alerts") or []
    lines.append(f"active alerts: {len(alerts) or 'none'}")
    for a in alerts:
        lines.append(f"  {a.get('rule')}: priority {a.get('priority')}, {a.get('stage')}: {a.get('message')}")
    lines.append("queue: " + ", ".join(f"priority {p}: {depth.get(p, depth.get(str(p), 0))}" for p in (1, 2, 3)))
    damaged = status.get("damaged_count", 0)
    lines.append(f"dead letters: {status.get('dead_letter_count', 0)}"
                 + (f" ({damaged} damaged in store)" if damaged else ""))
    over = (status.get("sync") or {}).get(OVER_QUOTA_KEY)
    if over:
        lines.append(f"store full since {local_time(over.get('since'), tz)}: {over.get('used_bytes')} of "
                     f"{over.get('limit_bytes', over.get('quota_bytes'))} bytes, oldest priority-3 "
                     f"events are dropped; {status.get('free_bytes', '?')} bytes free on the disk")
    dropped = status.get("dropped") or {}
    lines.append("dropped inputs: " + (", ".join(f"{k} {v}" for k, v in sorted(dropped.items()))
                                        or "none") + " (as of the last heartbeat)")
    last = status.get("last_sync")
    if isinstance(last, dict):
        lines.append(f"last successful sync: {local_time(last.get('at'), tz)}, "
                     f"{last.get('delivered', 0)} event(s) delivered")
    else:
        lines.append(f"last successful sync: {local_time(last, tz) if last else 'never'}")
    sync = status.get("sync") or {}
    err = sync.get("sync.last_error")
    if isinstance(err, dict) and (not isinstance(last, dict) or str(err.get("at")) > str(last.get("at"))):
        lines.append(f"last sync error: {local_time(err.get('at'), tz)}: {err.get('error')}")
    nxt = sync.get("sync.next_attempt_at")
    if isinstance(nxt, dict) and nxt.get("due_at"):
        lines.append(f"next attempt: {local_time(nxt['due_at'], tz)} (after {nxt.get('failures', '?')} failure(s))")
    server = (status.get("sync") or {}).get(STATE_SYNC)
    if isinstance(server, dict) and server.get("state"):
        lines.append(f"server: {server['state']} since {local_time(server.get('since'), tz)}: {server.get('detail')}")
    recent = status.get("recent") or []
    if recent:
        lines.append("last events:")
        for e in recent[:10]:
            lines.append(f"  #{e.get('seq')} {local_time(e.get('occurred_at'), tz)} {e.get('type')} "
                         f"(priority {e.get('priority')})")
    return "\n".join(lines)
