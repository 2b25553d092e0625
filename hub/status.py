"""`carehub status`: what the hub is doing now, read from the store while the daemon runs."""

from __future__ import annotations

import json
import sys

from hub.app import DROPPED_KEY, store_path
from hub.pipeline import ACTIVE_ALERTS_KEY, DEVICES_KEY
from offline_queue.store import OVER_QUOTA_KEY, STATUS_STATE_KEYS, read_status
from offline_queue.uploader import STATE_SYNC


def main(cfg: dict, *, as_json: bool = False, out=None) -> int:
    out = out or sys.stdout   # looked up per call: a default bound at import would be stale
    raw = read_status(store_path(cfg), state_keys=STATUS_STATE_KEYS + (
        DEVICES_KEY, ACTIVE_ALERTS_KEY, STATE_SYNC, DROPPED_KEY))
    state = raw.pop("state")
    status = dict(raw, hub_id=cfg["hub"]["id"], devices=state.pop(DEVICES_KEY) or {},
                  active_alerts=state.pop(ACTIVE_ALERTS_KEY) or [],
                  dropped=state.pop(DROPPED_KEY) or {},
                  last_sync=state.get("sync.last_success"), sync=state)
    if as_json:
        print(json.dumps(status, indent=2, sort_keys=True, default=str), file=out)
        return 0
    print(render(status), file=out)
    return 0


def render(status: dict) -> str:
    depth = status.get("depth", {})
    lines = [f"hub {status['hub_id']}"]
    devices = status.get("devices") or {}
    lines.append("devices: " + (", ".join(f"{k} {v.get('state', '?')}" for k, v in sorted(devices.items()))
                                or "none reported"))
    alerts = status.get("active_alerts") or []
    lines.append(f"active alerts: {len(alerts)}")
    for a in alerts:
        lines.append(f"  {a.get('rule')}: priority {a.get('priority')}, {a.get('stage')}: {a.get('message')}")
    lines.append("queue: " + ", ".join(f"priority {p}: {depth.get(p, depth.get(str(p), 0))}" for p in (1, 2, 3)))
    damaged = status.get("damaged_count", 0)
    lines.append(f"dead letters: {status.get('dead_letter_count', 0)}"
                 + (f" ({damaged} damaged in store)" if damaged else ""))
    over = (status.get("sync") or {}).get(OVER_QUOTA_KEY)
    if over:
        lines.append(f"store full since {over.get('since')}: {over.get('used_bytes')} of "
                     f"{over.get('limit_bytes', over.get('quota_bytes'))} bytes, oldest priority-3 "
                     f"events are dropped; {status.get('free_bytes', '?')} bytes free on the disk")
    dropped = status.get("dropped") or {}
    lines.append("dropped inputs: " + (", ".join(f"{k} {v}" for k, v in sorted(dropped.items()))
                                        or "none") + " (as of the last heartbeat)")
    lines.append(f"last successful sync: {status.get('last_sync') or 'never'}")
    server = (status.get("sync") or {}).get(STATE_SYNC)
    if isinstance(server, dict) and server.get("state"):
        lines.append(f"server: {server['state']} since {server.get('since')}: {server.get('detail')}")
    recent = status.get("recent") or []
    if recent:
        lines.append("last events:")
        for e in recent[:10]:
            lines.append(f"  #{e.get('seq')} {e.get('occurred_at')} {e.get('type')} (priority {e.get('priority')})")
    return "\n".join(lines)
