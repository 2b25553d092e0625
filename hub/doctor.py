"""`carehub doctor`: the technician's on-site checklist, each failure with its fix (spec section 5).

Every check is a plain function returning a ``Check``; none changes anything on the hub. Checks
that do not apply to this configuration (no [watch], mock pins, offline only, not under
systemd) say so and count as passed. The server check posts an EMPTY events list, signed as
the hub signs (spec section 4): a server answers it with ``200`` and ``"results": []`` when the
URL, the TLS chain, the token and the signature are all right, and nothing is stored.
"""

from __future__ import annotations

import contextlib
import glob
import grp
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from hub import config, lastgood
from hub.errors import ConfigError
from hub.feed import feed_path

PASS, FAIL, SKIP = "pass", "fail", "n/a"
SERVICE = "carehub.service"
SERVICE_USER = "carehub"
# Values of config/carehub.example.toml that must be replaced on site (a test keeps them in step).
PLACEHOLDERS = {("hub", "id"): "home-0042", ("hub", "resident_id"): "R-1017"}
# A share of valid heart and breathing readings, while someone lies in bed, below which the
# belt is most likely misplaced (too far from the chest, folded, under a thick mattress topper).
GOOD_SHARE = 0.5
MIN_FREE_MARGIN_MB = 64


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def check_config(path) -> tuple[Check, dict | None]:
    try:
        cfg = config.load(path)
    except ConfigError as e:
        good = lastgood.load(lastgood.state_dirs(path))
        shown = "; ".join(e.problems[:5]) + (f"; and {len(e.problems) - 5} more" if len(e.problems) > 5 else "")
        fix = "edit the lines named, then run `carehub check-config` until it says OK"
        if good is not None:
            fix += " (meanwhile the hub runs on its last good configuration; the checks below use it)"
        return Check("config", FAIL, f"{len(e.problems)} problem(s): {shown}", fix), good
    return Check("config", PASS, f"valid: {', '.join(cfg['_files'])}"), cfg


def check_placeholders(cfg: dict) -> Check:
    left = [f"{'.'.join(k)} = {v!r}" for k, v in PLACEHOLDERS.items() if cfg[k[0]].get(k[1]) == v]
    if left:
        return Check("placeholders", FAIL, "example values still in place: " + ", ".join(left),
                     "put this home's hub id and resident id (from the community centre) in the config")
    return Check("placeholders", PASS, f"hub {cfg['hub']['id']}, resident {cfg['hub']['resident_id']}")


def _is_device_path(port: str) -> bool:
    return "://" not in port


def _user_can_rw(path: str, user: str) -> tuple[bool, str]:
    """Whether ``user`` (the service's) may open ``path`` read-write, from its mode and groups."""
    st = os.stat(path)
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return False, None
    groups = {g.gr_gid for g in grp.getgrall() if user in g.gr_mem} | {pw.pw_gid}
    if pw.pw_uid == 0:
        return True, ""
    if st.st_uid == pw.pw_uid:
        ok = st.st_mode & stat.S_IRUSR and st.st_mode & stat.S_IWUSR
    elif st.st_gid in groups:
        ok = st.st_mode & stat.S_IRGRP and st.st_mode & stat.S_IWGRP
    else:
        ok = st.st_mode & stat.S_IROTH and st.st_mode & stat.S_IWOTH
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return bool(ok), group


def check_serial_port(cfg: dict, service_user: str = SERVICE_USER) -> Check:
    belt = cfg["belt"]
    if belt is None:
        return Check("serial port", SKIP, "no [belt] in the configuration")
    port = belt["port"]
    if not _is_device_path(port):
        return Check("serial port", PASS, f"{port} is a pyserial URL (checked by the frames check)")
    if not os.path.exists(port):
        return Check("serial port", FAIL, f"{port} does not exist",
                     "plug the sensor's USB-serial adapter in (or check the UART wiring); for "
                     "/dev/carehub-belt check the udev rule: `udevadm info -a -n /dev/ttyUSB0`, "
                     "then `udevadm control --reload && udevadm trigger` (docs/install.md)")
    real = os.path.realpath(port)
    if os.geteuid() == 0:
        ok, group = _user_can_rw(real, service_user)
        if not ok:
            return Check("serial port", FAIL, f"{port} ({real}) is not readable and writable by {service_user!r}",
                         f"add the user to the device's group: `usermod -aG {group} {service_user}` "
                         "(never MODE=\"0666\" in the udev rule)" if group else
                         f"the service user {service_user!r} does not exist: run systemd/install.sh")
        return Check("serial port", PASS, f"{port} -> {real}, usable by {service_user!r}")
    if not os.access(real, os.R_OK | os.W_OK):
        me = pwd.getpwuid(os.geteuid()).pw_name
        return Check("serial port", FAIL, f"{port} ({real}) is not readable and writable by {me!r}",
                     "run `sudo carehub doctor` to check as the service user, or add this user to the "
                     "device's group (usually dialout)")
    return Check("serial port", PASS, f"{port} -> {real}, usable by this user")


def check_frames(cfg: dict, seconds: float) -> list[Check]:
    """Read the belt for ``seconds``: frames decode, and the share of valid heart and breathing rates."""
    belt = cfg["belt"]
    if belt is None:
        return [Check("belt frames", SKIP, "no [belt] in the configuration"),
                Check("belt placement", SKIP, "no [belt] in the configuration")]
    import serial
    from drivers.belt.decoder import make_decoder
    decoder = make_decoder(belt["protocol"])
    port = belt["port"]
    try:
        kwargs = {"exclusive": True} if _is_device_path(port) else {}
        link = serial.serial_for_url(port, baudrate=belt["baudrate"], timeout=0.2, **kwargs)
    except (serial.SerialException, OSError, ValueError) as e:
        busy = "lock" in str(e).lower() or "busy" in str(e).lower()
        fix = ("the running hub holds the port: watch it with `carehub monitor`, or stop the service "
               "(`systemctl stop carehub`) for this check and start it again after" if busy else
               "check the port and the wiring; `carehub monitor` shows what arrives")
        link = None
        if busy and feed_path(cfg).exists():
            via = f"the running hub's live feed ({feed_path(cfg)})"  # it holds the port exclusively
        else:
            return [Check("belt frames", FAIL, f"cannot open {port}: {e}", fix),
                    Check("belt placement", SKIP, "no frames read")]
    else:
        via = port
    readings = []
    total = 0
    try:
        read = _feed_reader(feed_path(cfg)) if link is None else link.read
        if link is not None:
            for frame in decoder.handshake_frames():
                link.write(frame)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            data = read(4096)
            total += len(data)
            if data:
                readings += decoder.feed(data)
    except (serial.SerialException, OSError) as e:
        return [Check("belt frames", FAIL, f"reading {via} failed: {e}", "check the cable and the adapter"),
                Check("belt placement", SKIP, "no frames read")]
    finally:
        if link is not None:
            link.close()
    counters = {k: v for k, v in decoder.counters.items() if v}
    if not readings:
        why = "no bytes at all" if total == 0 else f"{total} bytes but no frame decoded ({counters})"
        fix = ("check power and wiring (sensor TX to Pi RX), and that the sensor is the one configured"
               if total == 0 else
               f"wrong protocol or line speed? configured: {belt['protocol']} at {belt['baudrate']} baud")
        return [Check("belt frames", FAIL, f"{why} in {seconds:g} s", fix),
                Check("belt placement", SKIP, "no frames read")]
    present = [r for r in readings if r.presence or r.in_bed]
    frames = Check("belt frames", PASS, f"{len(readings)} reading(s) decoded in {seconds:g} s from {via} "
                                        f"({belt['protocol']}; {counters})")
    if not present:
        return [frames, Check("belt placement", SKIP, "nobody in bed: lie on the bed and run doctor again "
                                                      "to check the belt's placement")]
    hr = sum(1 for r in present if r.heart_rate_bpm is not None) / len(present)
    rr = sum(1 for r in present if r.resp_rate_per_min is not None) / len(present)
    detail = f"someone in bed: valid heart rate in {hr:.0%}, breathing in {rr:.0%} of {len(present)} reading(s)"
    if min(hr, rr) >= GOOD_SHARE:
        return [frames, Check("belt placement", PASS, detail + ": placement good")]
    return [frames, Check("belt placement", FAIL, detail + ": placement poor",
                          "move the sensor under the chest (not the legs), flat, facing up, no thick "
                          "topper between; lie still for a minute and run doctor again")]


def _feed_reader(path: Path):
    """read(n) -> the belt bytes the daemon's live feed (hub/feed.py) offers, 0.2 s at a time."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(0.2)
    sock.connect(str(path))
    buf = bytearray()

    def read(_n: int) -> bytes:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return b""
        if not chunk:
            sock.close()
            raise OSError("the daemon closed its live feed")
        buf.extend(chunk)
        out = bytearray()
        while (nl := buf.find(b"\n")) >= 0:
            line, buf[:] = bytes(buf[:nl]), buf[nl + 1:]
            with contextlib.suppress(ValueError, KeyError, TypeError):
                doc = json.loads(line)
                if doc.get("source") == "belt" and "hex" in doc:
                    out += bytes.fromhex(doc["hex"])
        return bytes(out)

    return read


def check_ble(cfg: dict, seconds: float) -> list[Check]:
    watch = cfg.get("watch")
    if not watch:
        return [Check("bluetooth adapter", SKIP, "no [watch] in the configuration"),
                Check("watch seen", SKIP, "no [watch] in the configuration")]
    adapters = sorted(glob.glob("/sys/class/bluetooth/hci*"))
    if not adapters:
        return [Check("bluetooth adapter", FAIL, "no Bluetooth adapter (/sys/class/bluetooth is empty)",
                      "`rfkill list`; on a Pi check `dtoverlay=disable-bt` is not set in /boot/firmware/config.txt"),
                Check("watch seen", SKIP, "no adapter")]
    blocked = []
    for rf in glob.glob("/sys/class/rfkill/rfkill*"):
        try:
            if Path(rf, "type").read_text().strip() == "bluetooth" and (
                    Path(rf, "soft").read_text().strip() == "1" or Path(rf, "hard").read_text().strip() == "1"):
                blocked.append(Path(rf).name)
        except OSError:
            continue
    if blocked:
        return [Check("bluetooth adapter", FAIL, f"Bluetooth is blocked by rfkill ({', '.join(blocked)})",
                      "`rfkill unblock bluetooth`"),
                Check("watch seen", SKIP, "adapter blocked")]
    adapter = Check("bluetooth adapter", PASS, ", ".join(Path(a).name for a in adapters))
    address = watch.get("address", "")
    try:
        import asyncio
        from bleak import BleakScanner
        device = asyncio.run(BleakScanner.find_device_by_address(address, timeout=seconds))
    except Exception as e:  # BlueZ absent, D-Bus refused: all are the technician's to fix
        return [adapter, Check("watch seen", FAIL, f"cannot scan: {e}",
                               "`systemctl status bluetooth`; the service user must be in group bluetooth")]
    if device is None:
        return [adapter, Check("watch seen", FAIL, f"{address} not seen in {seconds:g} s",
                               "wake the watch (press a button), bring it near; `carehub scan` lists what is seen")]
    return [adapter, Check("watch seen", PASS, f"{address} ({device.name or 'no name'})")]


def check_gpio(cfg: dict, service_user: str = SERVICE_USER) -> Check:
    gpio = cfg["gpio"]
    if gpio is None:
        return Check("gpio chip", SKIP, "no [gpio] in the configuration")
    if gpio["pin_factory"] == "mock":
        return Check("gpio chip", SKIP, "pin_factory = \"mock\": simulated pins")
    chips = sorted(glob.glob("/dev/gpiochip*"))
    if not chips:
        return Check("gpio chip", FAIL, "no /dev/gpiochip*", "this is not a Raspberry Pi, or the kernel lacks "
                                                           "the GPIO character device; use a Pi OS image")
    if os.geteuid() == 0:
        ok, group = _user_can_rw(chips[0], service_user)
        if not ok:
            return Check("gpio chip", FAIL, f"{chips[0]} not usable by {service_user!r}",
                         f"`usermod -aG {group} {service_user}`" if group else
                         f"the service user {service_user!r} does not exist: run systemd/install.sh")
    elif not os.access(chips[0], os.R_OK | os.W_OK):
        return Check("gpio chip", FAIL, f"{chips[0]} not usable by this user", "run `sudo carehub doctor`, "
                     "or add this user to group gpio")
    return Check("gpio chip", PASS, ", ".join(chips))


def check_server(cfg: dict) -> Check:
    server = cfg["server"]
    if not server["url"]:
        return Check("server", SKIP, "no server.url: offline only, events are kept")
    import requests
    from offline_queue.uploader import sign
    try:
        with open(server["token_file"], encoding="utf-8") as f:
            token = f.readline().strip()
    except OSError as e:
        return Check("server", FAIL, f"cannot read {server['token_file']}: {e.strerror}",
                     "the token file must exist, hold the token on one line, and be readable by the service")
    hub_id = cfg["hub"]["id"]
    url = f"{server['url'].rstrip('/')}/v1/hubs/{hub_id}/events"
    body = json.dumps({"hub_id": hub_id, "events": []}).encode()
    ts = int(time.time())
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}",
               "X-CareHub-Timestamp": str(ts), "X-CareHub-Signature": sign(token, ts, body)}
    try:
        r = requests.post(url, data=body, headers=headers, timeout=min(server["timeout"], 15),
                          verify=server["ca_file"] or True, allow_redirects=False)
    except requests.exceptions.SSLError as e:
        return Check("server", FAIL, f"TLS failed for {server['url']}: {e}",
                     "check the clock (certificates need the right date) and server.ca_file")
    except requests.exceptions.RequestException as e:
        return Check("server", FAIL, f"{server['url']} unreachable: {type(e).__name__}",
                     "check the network (`ping`, `getent hosts`), server.url, and that the server is up; "
                     "the hub keeps every event meanwhile")
    if r.status_code in (401, 403):
        return Check("server", FAIL, f"the server refused the token or signature ({r.status_code}: {r.text[:120]})",
                     f"put the token the community centre issued for hub {hub_id!r} in {server['token_file']} "
                     "(one line, chmod 600); if it is right, check the clock (signatures carry the time)")
    if r.status_code != 200:
        return Check("server", FAIL, f"unexpected answer {r.status_code} from {url}",
                     "check server.url (it ends before /v1/...); a 3xx is not followed")
    try:
        ok = isinstance(r.json().get("results"), list)
    except (ValueError, AttributeError):
        ok = False
    if not ok:
        return Check("server", FAIL, f"{url} answered 200 but not as a CareHub server", "check server.url")
    return Check("server", PASS, f"{server['url']} accepted the token and signature")


def check_clock(synced: Callable[[], bool]) -> Check:
    if synced():
        return Check("clock", PASS, "synchronised (NTP)")
    return Check("clock", FAIL, "not synchronised: event times are flagged clock_synced=false",
                 "`timedatectl`; the hub needs UDP port 123 out to an NTP server "
                 "(`systemctl status systemd-timesyncd`); events are still sent meanwhile")


def check_disk(cfg: dict) -> Check:
    d = Path(cfg["hub"]["state_dir"])
    while not d.exists() and d != d.parent:
        d = d.parent
    free_mb = shutil.disk_usage(d).free / 2**20
    need = cfg["store"]["quota_mb"] + MIN_FREE_MARGIN_MB
    if free_mb < need:
        return Check("disk", FAIL, f"{free_mb:.0f} MB free at {d}, {need} MB wanted (store quota + margin)",
                     "free space (`journalctl --vacuum-size=32M`, `apt clean`) or lower store.quota_mb")
    return Check("disk", PASS, f"{free_mb:.0f} MB free at {d}")


def check_store(cfg: dict) -> Check:
    from hub.app import store_path
    from offline_queue.store import check_integrity
    path = store_path(cfg)
    if not path.exists():
        return Check("store", SKIP, f"no store yet at {path} (`carehub run` creates it)")
    problems = check_integrity(path)
    if problems:
        return Check("store", FAIL, f"{path}: {'; '.join(problems[:3])}",
                     "the hub moves a damaged store aside and starts a fresh one at its next start "
                     "(`systemctl restart carehub`); keep the moved file for the community centre")
    return Check("store", PASS, f"{path}: integrity ok")


def check_service(systemctl: str = "systemctl") -> Check:
    if not Path("/run/systemd/system").is_dir() or not shutil.which(systemctl):
        return Check("service", SKIP, "not under systemd here")
    enabled = subprocess.run([systemctl, "is-enabled", SERVICE], capture_output=True, text=True).stdout.strip()
    active = subprocess.run([systemctl, "is-active", SERVICE], capture_output=True, text=True).stdout.strip()
    if enabled != "enabled" or active != "active":
        return Check("service", FAIL, f"{SERVICE} is {enabled or 'unknown'} and {active or 'unknown'}",
                     f"`systemctl enable --now {SERVICE}`; `journalctl -u carehub -p warning` says why it stopped")
    return Check("service", PASS, f"{SERVICE} enabled and active")


def run_checks(path=None, *, seconds: float = 5.0, clock_synced: Callable[[], bool] | None = None,
               service_user: str = SERVICE_USER) -> list[Check]:
    if clock_synced is None:
        from hub.events import kernel_clock_synced as clock_synced
    checks = []
    first, cfg = check_config(path)
    checks.append(first)
    if cfg is None:
        return checks + [Check(n, SKIP, "needs a valid configuration") for n in (
            "placeholders", "serial port", "belt frames", "belt placement", "bluetooth adapter",
            "watch seen", "gpio chip", "server", "disk", "store")] + [check_clock(clock_synced), check_service()]
    checks.append(check_placeholders(cfg))
    checks.append(check_serial_port(cfg, service_user))
    if checks[-1].status == FAIL:
        checks += [Check("belt frames", SKIP, "no serial port"), Check("belt placement", SKIP, "no serial port")]
    else:
        checks += check_frames(cfg, seconds)
    checks += check_ble(cfg, seconds)
    checks.append(check_gpio(cfg, service_user))
    checks.append(check_server(cfg))
    checks.append(check_clock(clock_synced))
    checks.append(check_disk(cfg))
    checks.append(check_store(cfg))
    checks.append(check_service())
    return checks


def render(checks: list[Check]) -> str:
    mark = {PASS: "ok  ", FAIL: "FAIL", SKIP: "n/a "}
    lines = []
    for c in checks:
        lines.append(f"[{mark[c.status]}] {c.name}: {c.detail}")
        if c.fix:
            lines.append(f"       fix: {c.fix}")
    failed = [c.name for c in checks if c.status == FAIL]
    lines.append(f"{len(failed)} check(s) failed: {', '.join(failed)}" if failed else "all applicable checks passed")
    return "\n".join(lines)


def main(path=None, *, as_json: bool = False, seconds: float = 5.0, service_user: str = SERVICE_USER,
         out=None) -> int:
    import sys
    out = out or sys.stdout
    checks = run_checks(path, seconds=seconds, service_user=service_user)
    ok = all(c.status != FAIL for c in checks)
    if as_json:
        print(json.dumps({"ok": ok, "checks": [asdict(c) for c in checks]}, indent=2), file=out)
    else:
        print(render(checks), file=out)
    return 0 if ok else 1
