"""Configuration: one schema holding every key, TOML main file plus conf.d drop-ins.

Problems are reported as ``FILE:LINE: KEY: what is wrong and what is allowed``, all at once.
tomllib gives no positions for values, so the line of each key is found by scanning the text.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hub.configtypes import (
    BadValue, Key, show, boolean, choice, duration, integer, pattern, string, window,
)
from drivers.belt.decoder import PROTOCOLS as BELT_PROTOCOLS, default_baudrate
from drivers.panel_patterns import PIN_FACTORIES
from drivers.watch.pattern import normalize_uuid, parse_pattern
from drivers.watch.profiles import BUTTON_EVENT_NAMES, PROFILES as WATCH_PROFILES
from hub.errors import ConfigError
from hub.rules.params import ALERTS_SCHEMA, RULES_SCHEMA, SLEEP_SCHEMA
from offline_queue.wire import url_problem

DEFAULT_PATH = Path("/etc/carehub/config.toml")
ENV_VAR = "CAREHUB_CONFIG"


def _timezone(value):
    if value == "":
        return ""  # the system's, resolved after validation
    if not isinstance(value, str):
        raise BadValue(f"{show(value)} is not a timezone (use an IANA name such as \"Asia/Shanghai\")")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadValue(f"{show(value)} is not a known IANA timezone (e.g. \"Asia/Shanghai\", \"UTC\")")
    return value


def _log_level(value):
    return choice("debug", "info", "warning", "error")(value)


@dataclass(frozen=True)
class TableArray:
    """A ``[[table.key]]`` array of tables, each validated against ``schema``."""

    schema: dict

    def __call__(self, value):  # only for the default (an absent array)
        return [] if value is None else value


def _e164(value):
    return pattern(r"\+[1-9][0-9]{6,14}", 'an E.164 number: "+", country code, number, e.g. "+8613800000000"')(value)


def _priorities(value):
    if (not isinstance(value, list) or not value
            or any(isinstance(p, bool) or p not in (1, 2, 3) for p in value)):
        raise BadValue(f"{show(value)} is not a list of priorities (1, 2 or 3), e.g. [1, 2]")
    return sorted(set(value))


def _words(value):
    if (not isinstance(value, list) or not value
            or any(not isinstance(w, str) or not w.strip() for w in value)):
        raise BadValue(f"{show(value)} is not a list of words, e.g. [\"OK\", \"1\"]")
    return value


def _window_or_none(value):
    return None if value == "" else window(value)


def _map_url(value):
    if not isinstance(value, str) or "{lat}" not in value or "{lon}" not in value:
        raise BadValue(f"{show(value)} must contain {{lat}} and {{lon}}, "
                       "e.g. \"https://www.openstreetmap.org/?mlat={lat}&mlon={lon}&zoom=17\"")
    return value


PHONE_SCHEMA = {
    "number": Key(_e164, None, "the phone's number in E.164 form", required=True),
    "name": Key(string, "", "who this is, e.g. \"Duty desk\" (for logs and status)"),
    "priorities": Key(_priorities, [1], "which alert priorities this phone is texted for"),
    "call": Key(boolean, False, "also ring this phone for priority-1 alerts (the text still goes)"),
}
SMS_SCHEMA = {
    "port": Key(string, None, "pyserial URL of the modem's AT port", required=True),
    "baudrate": Key(integer(1200, 4000000), 115200, "line speed of the AT port (USB modems ignore it)"),
    "pin_file": Key(string, "", "file holding the SIM PIN (chmod 600); empty: the SIM has no PIN"),
    "when": Key(choice("always", "fallback"), "fallback",
                "always: text every listed priority; fallback: only when the server has not taken the alert"),
    "fallback_after": Key(duration(0, 86400), "60s", "with when = fallback: text when the server has not accepted the alert this long"),
    "quiet_hours": Key(_window_or_none, "", "daily window without priority-2/3 texts (deferred); priority 1 always goes"),
    "max_per_alert": Key(integer(1, 100), 10, "most texts one alert causes, all phones together"),
    "max_per_day": Key(integer(1, 1000), 100, "most texts per day through this SIM (carriers flag bursts)"),
    "ack_words": Key(_words, ["OK", "1"], "a reply that is one of these acknowledges the alert"),
    "address": Key(string, "", "the home's address, put in every text"),
    "resident_name": Key(string, "", "the resident's name in texts; empty: the resident id"),
    "language": Key(choice("zh", "en"), "zh", "language of the texts: zh or en"),
    "map_url": Key(_map_url, "https://www.openstreetmap.org/?mlat={lat}&mlon={lon}&zoom=17",
                   "map link for the watch's last fix (WGS-84 {lat} {lon})"),
    "validity": Key(duration(300, 7 * 86400), "12h", "the network drops an undelivered text after this long"),
    "call_hangup_after": Key(duration(5, 180), "30s", "a call rings this long, then the hub hangs up"),
    "reset_gpio": Key(integer(-1, 27), -1, "BCM pin driving the modem's reset/PWRKEY line; -1: none"),
    "reset_pulse": Key(duration(0.1, 5), "1.5s", "how long the reset pin is driven high"),
    "phones": Key(TableArray(PHONE_SCHEMA), None, "the bound phones, one [[sms.phones]] each", required=True),
}


# --- [watch]: the resident's watch over BLE (drivers/watch) ---------------------------------
def _uuid_or_empty(value):
    if value == "":
        return ""
    try:
        return normalize_uuid(string(value))
    except ValueError as e:
        raise BadValue(str(e)) from None


def _byte_pattern(value):
    try:
        parse_pattern(string(value))
    except ValueError as e:
        raise BadValue(str(e)) from None
    return value


WATCH_SCHEMA = {
    "address": Key(pattern(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}", "a BLE address such as AA:BB:CC:DD:EE:FF"),
                   None, "the watch's BLE address (carehub scan lists nearby devices)", required=True),
    "profile": Key(choice(*WATCH_PROFILES), "standard", "itag, standard, bthome or custom"),
    "offline_grace": Key(duration(0, 3600), "30s",
                         "link down this long before the watch is reported disconnected"),
    "reconnect_max": Key(duration(1, 3600), "60s", "longest wait between reconnect attempts"),
    "scan_timeout": Key(duration(1, 120), "10s", "one scan for the watch lasts at most this long"),
    "battery_interval": Key(duration(30, 86400), "10m",
                            "battery read this often while connected (also the link heartbeat)"),
    "sos_dedupe": Key(duration(0, 60), "2s", "the same press again within this is the same press"),
    "event_char": Key(_uuid_or_empty, "", "custom: the vendor characteristic that notifies SOS/fall/OK"),
    "sos_pattern": Key(_byte_pattern, "", "custom: bytes meaning SOS (hex, ?? for any byte)"),
    "fall_pattern": Key(_byte_pattern, "", "custom: bytes meaning a fall (hex, ?? for any byte)"),
    "ok_pattern": Key(_byte_pattern, "", "custom: bytes meaning OK / cancel (hex, ?? for any byte)"),
    "bthome_sos": Key(choice(*BUTTON_EVENT_NAMES), "press", "bthome: the button event meaning SOS"),
    "bthome_ok": Key(choice(*BUTTON_EVENT_NAMES), "double_press", "bthome: the button event meaning OK"),
}


def _check_watch(cfg: dict, problems) -> None:
    watch = cfg.get("watch")
    if not watch or watch.get("profile") is None:
        return
    if watch["profile"] == "custom":
        if not watch.get("event_char"):
            problems.add(("watch", "event_char"), "the custom profile needs the vendor characteristic's UUID")
        if not (watch.get("sos_pattern") or watch.get("fall_pattern")):
            problems.add(("watch", "sos_pattern"), "the custom profile needs sos_pattern or fall_pattern")
    if watch["profile"] == "bthome" and watch.get("bthome_sos") and watch["bthome_sos"] == watch.get("bthome_ok"):
        problems.add(("watch", "bthome_ok"), f"{show(watch['bthome_ok'])} already means SOS (bthome_sos)")


# table -> key -> Key. Tables listed in OPTIONAL_TABLES read as None when absent.
SCHEMA: dict[str, dict[str, Any]] = {
    "hub": {
        "id": Key(pattern(r"[A-Za-z0-9._-]{1,64}", "1-64 characters of A-Z a-z 0-9 . _ -"), None,
                  "this hub's id, unique in the community", required=True),
        "resident_id": Key(pattern(r".{1,64}", "1-64 characters"), None,
                           "the resident's id at the community centre", required=True),
        "timezone": Key(_timezone, "", "IANA timezone for daily windows; empty: the system's"),
        "state_dir": Key(string, "/var/lib/carehub", "where the event store lives"),
        "heartbeat_interval": Key(duration(10, 86400), "5m", "how often a hub.heartbeat event is raised"),
        "log_level": Key(_log_level, "info", "debug, info, warning or error"),
    },
    "server": {
        "url": Key(string, "", "community server base URL; empty: offline only, keep everything"),
        "token_file": Key(string, "/etc/carehub/token", "file holding the hub's secret token (one line)"),
        "ca_file": Key(string, "", "optional PEM bundle of a private CA"),
        "sync_interval": Key(duration(0.1, 86400), "60s", "how often queued events are sent while nothing urgent is waiting"),
        "timeout": Key(duration(1, 600), "30s", "one request's timeout"),
        "batch_max": Key(integer(1, 500), 500, "most events in one request"),
        "gzip_min_bytes": Key(integer(0, None), 1024, "bodies larger than this are gzip-compressed"),
        "backoff_base": Key(duration(0.1, 3600), "5s", "first retry delay (full jitter, doubling)"),
        "backoff_max": Key(duration(1, 86400), "30m", "longest retry delay"),
        "auth_backoff": Key(duration(1, 86400), "30m", "retry delay after 401/403"),
    },
    "store": {
        "quota_mb": Key(integer(1, 100000), 64, "size cap of the event store; oldest priority-3 events go first"),
        "batch_interval": Key(duration(0, 3600), "10m", "low-priority events are committed together at most this late"),
        "batch_max": Key(integer(1, 10000), 100, "low-priority events committed together at most"),
    },
    "belt": {
        "port": Key(string, None, "pyserial URL: a device path, socket://host:port, rfc2217://, loop://",
                    required=True),
        "protocol": Key(choice(*BELT_PROTOCOLS), "micradar", "micradar, tinyframe or ndjson"),
        "baudrate": Key(integer(0, 4000000), 0, "line speed; 0: the protocol's own (115200)"),
        "stale_timeout": Key(duration(1, 3600), "30s", "no bytes this long: the belt is reported disconnected"),
        "reconnect_max": Key(duration(1, 3600), "60s", "longest wait between reopen attempts"),
        "enter_debounce": Key(duration(0, 3600), "30s", "in bed this long before bed.entered"),
        "exit_debounce": Key(duration(0, 3600), "60s", "out of bed this long before bed.exited"),
    },
    "gpio": {
        "pin_factory": Key(choice("", *PIN_FACTORIES), "",
                           "gpiozero pin factory; empty: gpiozero's default (lgpio on a Pi)"),
        "sos_pin": Key(integer(0, 27), 17, "BCM pin of the SOS button (to ground)"),
        "ok_pin": Key(integer(0, 27), 27, "BCM pin of the OK button (to ground)"),
        "led_pin": Key(integer(0, 27), 22, "BCM pin of the status LED"),
        "buzzer_pin": Key(integer(0, 27), 23, "BCM pin of the buzzer"),
        "sos_hold": Key(duration(0.5, 10), "2s", "hold the SOS button this long to call for help"),
    },
    "watch": WATCH_SCHEMA,
    "rules": RULES_SCHEMA,
    "alerts": ALERTS_SCHEMA,
    "sleep_report": SLEEP_SCHEMA,
    "sms": SMS_SCHEMA,
}
OPTIONAL_TABLES = {"belt", "gpio", "watch", "sms"}
NESTED_TABLES = {"rules"}  # tables of tables


# --- locating keys in the text -------------------------------------------------------------
_HEADER_RE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\s*(#.*)?$")
_ARRAY_HEADER_RE = re.compile(r"^\s*\[\[\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\]\s*(#.*)?$")
_KEY_RE = re.compile(r"^\s*([A-Za-z0-9_.\-\"]+?)\s*=")


def _dotted(raw: str) -> list[str]:
    return [p.strip().strip('"') for p in raw.split(".")]


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each dotted key path (and each table header) to its line number."""
    lines: dict[tuple[str, ...], int] = {}
    table: list = []
    arrays: dict[tuple[str, ...], int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if m := _ARRAY_HEADER_RE.match(line):
            name = tuple(_dotted(m.group(1)))
            arrays[name] = arrays.get(name, -1) + 1
            table = [*name, arrays[name]]  # entries are keyed by their index
            lines.setdefault(name, n)
            lines.setdefault(tuple(table), n)
        elif m := _HEADER_RE.match(line):
            table = _dotted(m.group(1))
            lines.setdefault(tuple(table), n)
        elif m := _KEY_RE.match(line):
            path = tuple(table + _dotted(m.group(1)))
            lines.setdefault(path, n)
            for i in range(len(table) + 1, len(path)):
                lines.setdefault(path[:i], n)
    return lines


@dataclass
class Source:
    path: Path
    lines: dict = field(default_factory=dict)

    def line_of(self, keypath: tuple[str, ...]) -> int:
        for i in range(len(keypath), 0, -1):
            if keypath[:i] in self.lines:
                return self.lines[keypath[:i]]
        return 1


def config_files(path: str | os.PathLike | None = None, env=os.environ) -> list[Path]:
    """The main file, then conf.d/*.toml beside it in lexical order."""
    main = Path(path or env.get(ENV_VAR) or DEFAULT_PATH)
    dropins = main.parent / "conf.d"
    extra = sorted(dropins.glob("*.toml")) if dropins.is_dir() else []
    return [main, *extra]


def _merge(into: dict, new: dict, origin: dict, source: Source, prefix=()) -> None:
    for k, v in new.items():
        kp = prefix + (k,)
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v, origin, source, kp)
        else:
            into[k] = v
            if isinstance(v, dict):
                _record(v, origin, source, kp)
            origin[kp] = source


def _record(table: dict, origin: dict, source: Source, prefix) -> None:
    for k, v in table.items():
        origin[prefix + (k,)] = source
        if isinstance(v, dict):
            _record(v, origin, source, prefix + (k,))


class _Problems:
    def __init__(self, origin: dict, fallback: Path):
        self.lines: list[str] = []
        self.origin = origin
        self.fallback = fallback

    def add(self, keypath: tuple[str, ...], message: str) -> None:
        src = None
        for i in range(len(keypath), 0, -1):
            src = self.origin.get(keypath[:i])
            if src:
                break
        path, line = (src.path, src.line_of(keypath)) if src else (self.fallback, 1)
        self.lines.append(f"{path}:{line}: {_keyname(keypath)}: {message}")


def _keyname(keypath) -> str:
    """``sms.phones[0].number``: array entries by index."""
    out = ""
    for part in keypath:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _unknown(problems: _Problems, keypath, known) -> None:
    near = difflib.get_close_matches(keypath[-1], list(known), n=1)
    hint = f"did you mean {near[0]!r}?" if near else f"known keys: {', '.join(sorted(known))}"
    problems.add(keypath, f"unknown key ({hint})")


def _validate_table(raw: dict, schema: dict, problems: _Problems, prefix) -> dict:
    out = {}
    for k, v in raw.items():
        if k not in schema:
            _unknown(problems, prefix + (k,), schema)
        elif isinstance(v, dict) and not isinstance(schema[k].parse, TableArray):
            problems.add(prefix + (k,), "is a table; expected a value")
    for k, key in schema.items():
        kp = prefix + (k,)
        if isinstance(key.parse, TableArray):
            out[k] = _validate_array(raw.get(k), key, problems, kp)
        elif k in raw and not isinstance(raw[k], dict):
            try:
                out[k] = key.parse(raw[k])
            except BadValue as e:
                problems.add(kp, str(e))
                out[k] = None
        elif key.required:
            if k not in raw:
                problems.add(kp, "is required")
            out[k] = None
        else:
            out[k] = key.parse(key.default) if key.default is not None else None
    return out


def _validate_array(raw, key: Key, problems: _Problems, kp) -> list:
    if raw is None:
        if key.required:
            problems.add(kp, f"is required (one [[{_keyname(kp)}]] table each)")
        return []
    if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
        problems.add(kp, f"must be tables, one [[{_keyname(kp)}]] each")
        return []
    if not raw and key.required:
        problems.add(kp, f"needs at least one [[{_keyname(kp)}]] table")
    return [_validate_table(e, key.parse.schema, problems, kp + (i,)) for i, e in enumerate(raw)]


def validate(raw: dict, problems: _Problems) -> dict:
    cfg: dict[str, Any] = {}
    for t, v in raw.items():
        if t not in SCHEMA:
            _unknown(problems, (t,), SCHEMA)
        elif not isinstance(v, dict):
            problems.add((t,), "must be a table, e.g. [" + t + "]")
    for t, schema in SCHEMA.items():
        table = raw.get(t) if isinstance(raw.get(t), dict) else None
        if t in OPTIONAL_TABLES and table is None:
            cfg[t] = None
        elif t in NESTED_TABLES:
            table = table or {}
            for name, sub in table.items():
                if name not in schema:
                    _unknown(problems, (t, name), schema)
                elif not isinstance(sub, dict):
                    problems.add((t, name), f"must be a table, e.g. [{t}.{name}]")
            cfg[t] = {name: _validate_table(table.get(name) if isinstance(table.get(name), dict) else {},
                                            sub, problems, (t, name))
                      for name, sub in schema.items()}
        else:
            cfg[t] = _validate_table(table or {}, schema, problems, (t,))
    return cfg


def _check_server(server: dict, problems: _Problems) -> None:
    url = server.get("url") or ""
    if not url:
        return
    problem = url_problem(url)
    if problem is not None:
        sep = ":" if problem.startswith("plain") else ""
        problems.add(("server", "url"), f"{show(url)}{sep} {problem}")
    _check_secret(server.get("token_file") or "", problems, ("server", "token_file"), "the hub's token")
    ca = server.get("ca_file") or ""
    if ca and not os.path.isfile(ca):
        problems.add(("server", "ca_file"), f"{show(ca)} does not exist (a PEM bundle, or \"\" for the system store)")


def read_one_line_secret(path: str, what: str = "the hub's token") -> str:
    """A secret file (``server.token_file``, ``sms.pin_file``), read the one way `check-config`
    and `run` share: surrounding blank lines and spaces are ignored; what remains must be one
    line of printable ASCII without spaces (a token goes into an HTTP header). Raises ``BadValue``."""
    try:
        with open(path, "rb") as f:
            raw = f.read(65536)
    except FileNotFoundError:
        raise BadValue(f"{show(path)} does not exist (a file holding {what} on one line)") from None
    except OSError as e:
        raise BadValue(f"{show(path)} cannot be read: {e.strerror or e}") from None
    token = raw.strip(b" \t\r\n")
    if not token:
        raise BadValue(f"{show(path)} is empty (it must hold {what} on one line)")
    if b"\n" in token:
        raise BadValue(f"{show(path)} holds more than one line (it must hold {what} on one line)")
    if not all(0x21 <= b <= 0x7E for b in token):
        raise BadValue(f"{show(path)}: {what} has spaces, control or non-ASCII characters "
                       "(it must be printable ASCII on one line)")
    return token.decode("ascii")


def read_token(path: str) -> str:
    return read_one_line_secret(path, "the hub's token")


def _check_secret(path: str, problems: _Problems, kp: tuple, what: str) -> None:
    try:
        read_one_line_secret(path, what)
    except BadValue as e:
        problems.add(kp, str(e))
        return
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & (stat.S_IROTH | stat.S_IWOTH | stat.S_IWGRP):
        problems.add(kp, f"{show(path)} is readable or writable by others (chmod 600, owned by the service user)")


def _check_sms(sms: dict | None, problems: _Problems) -> None:
    if not sms:
        return
    seen: dict[str, int] = {}
    for i, phone in enumerate(sms.get("phones") or []):
        number = phone.get("number")
        if number in seen:
            problems.add(("sms", "phones", i, "number"),
                         f"{show(number)} is listed twice (also sms.phones[{seen[number]}])")
        elif number:
            seen[number] = i
    pin_file = sms.get("pin_file") or ""
    if pin_file:
        _check_secret(pin_file, problems, ("sms", "pin_file"), "the SIM PIN")
        pin = read_secret(pin_file)
        if pin and not re.fullmatch(r"[0-9]{4,8}", pin):
            problems.add(("sms", "pin_file"), f"{show(pin_file)} does not hold a SIM PIN (4 to 8 digits)")


def read_secret(path: str) -> str:
    """The first line of a secret file, stripped; "" when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").strip().splitlines()[0].strip()
    except (OSError, IndexError):
        return ""


def _check_belt(cfg: dict) -> None:
    belt = cfg.get("belt")
    if belt and not belt.get("baudrate") and belt.get("protocol"):
        belt["baudrate"] = default_baudrate(belt["protocol"])


def system_timezone() -> str:
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz:
        return tz
    try:
        return Path("/etc/timezone").read_text().strip() or "UTC"
    except OSError:
        pass
    try:
        target = os.readlink("/etc/localtime")
        return target.split("zoneinfo/", 1)[1]
    except (OSError, IndexError):
        return "UTC"


def load(path: str | os.PathLike | None = None, env=os.environ, *, texts: dict | None = None) -> dict:
    """Read, merge and validate; raise ConfigError with every problem at once.

    ``texts`` ({path: text}, in order) stands in for the files: the last good configuration
    kept in the state dir is validated again this way (hub/lastgood.py).
    """
    files = [Path(p) for p in texts] if texts is not None else config_files(path, env)
    origin: dict = {}
    merged: dict = {}
    sources: dict[str, str] = {}
    problems = _Problems(origin, files[0])
    for file in files:
        try:
            text = texts[str(file)] if texts is not None else file.read_text(encoding="utf-8")
            sources[str(file)] = text
        except FileNotFoundError:
            problems.lines.append(f"{file}:1: (file): does not exist (give --config PATH or set {ENV_VAR})")
            continue
        except (OSError, UnicodeDecodeError) as e:
            problems.lines.append(f"{file}:1: (file): cannot be read: {e}")
            continue
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            problems.lines.append(_syntax_problem(file, text, e))
            continue
        source = Source(file, key_lines(text))
        _merge(merged, doc, origin, source)
    if problems.lines and not merged:
        raise ConfigError(_in_file_order(problems.lines, files))
    cfg = validate(merged, problems)
    _check_server(cfg["server"], problems)
    _check_belt(cfg)
    _check_sms(cfg.get("sms"), problems)
    _check_watch(cfg, problems)
    if not cfg["hub"].get("timezone"):
        try:
            cfg["hub"]["timezone"] = _timezone(system_timezone())
        except BadValue:
            cfg["hub"]["timezone"] = "UTC"
    if problems.lines:
        raise ConfigError(_in_file_order(problems.lines, files))
    cfg["_files"] = [str(f) for f in files]
    cfg["_sources"] = sources
    return cfg


def _in_file_order(lines: list[str], files: list[Path]) -> list[str]:
    """Problems in the order a technician reads them: file by file, line by line."""
    order = {str(f): i for i, f in enumerate(files)}

    def key(line: str):
        m = re.match(r"(.*?):(\d+): ", line)
        return (order.get(m.group(1), len(order)), int(m.group(2))) if m else (len(order), 0)

    return sorted(lines, key=key)


def _syntax_problem(file: Path, text: str, err: tomllib.TOMLDecodeError) -> str:
    msg = str(err)
    m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
    line = int(m.group(1)) if m else 1
    what = msg[: m.start()].strip() if m else msg
    # Name the key on that line (or the table it is in) so the technician sees where.
    table, key = [], "(syntax)"
    for n, ln in enumerate(text.splitlines(), 1):
        if n > line:
            break
        if h := _HEADER_RE.match(ln):
            table = _dotted(h.group(1))
            if n == line:
                key = ".".join(table)
        elif n == line and (k := _KEY_RE.match(ln)):
            key = ".".join(table + _dotted(k.group(1)))
        elif n == line:
            key = ".".join(table) if table else "(syntax)"
    return f"{file}:{line}: {key}: invalid TOML: {what}"


def timezone_of(cfg: dict):
    return ZoneInfo(cfg["hub"]["timezone"])


def _sms_summary(sms: dict | None) -> str:
    if not sms:
        return "  sms: none"
    phones = ", ".join(f"{p['name'] or p['number']} (P{'/'.join(map(str, p['priorities']))})"
                       for p in sms["phones"])
    return f"  sms: modem on {sms['port']}, when {sms['when']}, phones: {phones}"


def summary(cfg: dict) -> str:
    """The short summary check-config prints for a valid configuration."""
    hub = cfg["hub"]
    belt = cfg["belt"]
    gpio = cfg["gpio"]
    server = cfg["server"]
    rules = [n for n, r in cfg["rules"].items() if r.get("enabled")]
    lines = [
        f"configuration OK: {', '.join(cfg['_files'])}",
        f"  hub {hub['id']} (resident {hub['resident_id']}), timezone {hub['timezone']}, state in {hub['state_dir']}",
        f"  belt: {belt['protocol']} on {belt['port']} at {belt['baudrate']} baud" if belt else "  belt: none",
        f"  panel: SOS pin {gpio['sos_pin']}, OK pin {gpio['ok_pin']}, LED pin {gpio['led_pin']}, "
        f"buzzer pin {gpio['buzzer_pin']}" if gpio else "  panel: none",
        f"  watch: {cfg['watch']['profile']} at {cfg['watch']['address']}" if cfg.get("watch") else "  watch: none",
        f"  server: {server['url']}" if server["url"] else "  server: none (offline only, events are kept)",
        _sms_summary(cfg.get("sms")),
        f"  rules enabled ({len(rules)}): {', '.join(rules)}",
    ]
    return "\n".join(lines)
