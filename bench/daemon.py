"""`carehub run` as it lives on a Pi: start-up time to READY=1, then RSS and CPU over N minutes.

Run by hand (figures go into docs/performance.md):

    PYTHONPATH=. python bench/daemon.py              # 10 minutes
    PYTHONPATH=. python bench/daemon.py --minutes 3

The daemon runs as a subprocess on a real pty fed with the simulated MicRadar night at its real
data rate (HR and RR every 3 s, movement every 5 s, ...: the radar's documented timing), with a
mock panel and a reference receiver on 127.0.0.1 that it syncs to, as in a home. CPU is the
process's own utime+stime from /proc over wall time; wakeups are the context switches of all its
threads per second, the sign of polling loops and per-second ticks (each thread is listed, so the
one that wakes up is named).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from drivers.belt import simulator as sim  # noqa: E402
from offline_queue.receiver import make_server  # noqa: E402

TOKEN = "bench-token"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def thread_switches(pid: int) -> dict[str, int]:
    """Context switches per thread (voluntary + involuntary), keyed 'name/tid'."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            status = (task / "status").read_text().splitlines()
        except OSError:
            continue
        n = sum(int(line.split()[1]) for line in status if line.endswith("ctxt_switches") or
                "ctxt_switches:" in line)
        out[f"{name}/{task.name}"] = n
    return out


def feeder(fd: int, stop: threading.Event, speed: float = 1.0) -> tuple[list[int], float]:
    """Plays the simulated night from the resident getting into bed, in real time, looping."""
    script = sim.night_script(sim.NightPlan())
    plan = sim.NightPlan()
    start = next(t for t, _ in script if plan.in_bed(t))
    frames = [((t - start) / speed, f) for t, f in script if t >= start]
    sent = [0]
    t0 = time.monotonic()

    def run():
        while not stop.is_set():
            base = time.monotonic()
            for offset, frame in frames:
                if stop.wait(max(0.0, base + offset - time.monotonic())):
                    return
                try:
                    os.write(fd, frame)
                    sent[0] += 1
                except BlockingIOError:
                    pass
                except OSError:
                    return

    threading.Thread(target=run, daemon=True).start()
    return sent, t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="how long to measure (default 10)")
    ap.add_argument("--speed", type=float, default=1.0,
                    help="play the night this many times faster (default 1: the radar's real rate)")
    ap.add_argument("--startups", type=int, default=5,
                    help="start and stop the daemon this many times first; min and median to READY=1")
    ap.add_argument("--without", action="append", default=[], choices=("gpio", "belt", "server"),
                    help="leave a part out, to see what each costs (repeatable)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="carehub-bench-"))
    token = tmp / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    server = make_server("127.0.0.1", 0, tmp / "rx.db", TOKEN)
    threading.Thread(target=server.serve_forever, args=(0.5,), daemon=True).start()

    master, slave = os.openpty()
    os.set_blocking(master, False)
    port = tmp / "belt"
    port.symlink_to(os.ttyname(slave))
    cfg = tmp / "config.toml"
    text = (f"""
[hub]
id = "home-bench"
resident_id = "R-bench"
timezone = "UTC"
state_dir = "{tmp / 'state'}"

[server]
url = "{server.url}"
token_file = "{token}"

[belt]
port = "{port}"
protocol = "micradar"

[gpio]
pin_factory = "mock"
""")
    for part in args.without:  # drop that table
        head = text.index(f"[{part}]")
        nxt = text.find("\n[", head + 1)
        text = text[:head] + (text[nxt + 1:] if nxt >= 0 else "")
    cfg.write_text(text)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp / "notify"))
    notify.settimeout(120)
    env = dict(os.environ, PYTHONPATH=str(REPO), NOTIFY_SOCKET=str(tmp / "notify"), WATCHDOG_USEC="30000000")
    stop = threading.Event()
    sent, _ = feeder(master, stop, args.speed)
    times = []
    for _ in range(args.startups):
        t = time.monotonic()
        p = subprocess.Popen([sys.executable, "-m", "hub", "run", "--config", str(cfg)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        while "READY=1" not in notify.recv(4096).decode():
            pass
        times.append(time.monotonic() - t)
        p.terminate()
        p.wait(timeout=10)
    if times:
        times.sort()
        print(f"start-up to READY=1 over {len(times)} starts: min {times[0]:.2f} s, "
              f"median {times[len(times) // 2]:.2f} s, max {times[-1]:.2f} s")
    t_start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "hub", "run", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "daemon.log", "w"), env=env)
    try:
        while True:
            msg = notify.recv(4096).decode()
            if "READY=1" in msg:
                break
        ready_s = time.monotonic() - t_start
        notify.settimeout(None)
        # Drain the notify socket as systemd does: an undrained one fills after ~10 datagrams.
        threading.Thread(target=lambda: [notify.recv(4096) for _ in iter(int, 1)], daemon=True).start()
        print(f"start-up to READY=1: {ready_s:.2f} s (interpreter start and imports included)")
        time.sleep(5)  # past the first connection and the first sync
        c0, w0, sw0, f0 = cpu_s(proc.pid), time.monotonic(), thread_switches(proc.pid), sent[0]
        rss = []
        end = w0 + args.minutes * 60
        while time.monotonic() < end and proc.poll() is None:
            time.sleep(min(10.0, max(0.0, end - time.monotonic())))
            rss.append(rss_mb(proc.pid))
        c1, w1, sw1, f1 = cpu_s(proc.pid), time.monotonic(), thread_switches(proc.pid), sent[0]
        wall = w1 - w0
        print(f"measured {wall / 60:.1f} min" + ("" if "belt" in args.without else f", {(f1 - f0) / wall:.1f} belt frames/s"))
        print(f"CPU: {c1 - c0:.2f} s = {100 * (c1 - c0) / wall:.3f} % of one core")
        print(f"RSS: {min(rss):.1f} .. {max(rss):.1f} MB (last {rss[-1]:.1f} MB)")
        print("wakeups (context switches per second) by thread:")
        for key in sorted(sw1, key=lambda k: -(sw1[k] - sw0.get(k, 0))):
            rate = (sw1[key] - sw0.get(key, 0)) / wall
            if rate >= 0.05:
                print(f"  {key:28s} {rate:6.2f}/s")
        print(f"receiver got {len(server.events())} events")
    finally:
        t_stop = time.monotonic()
        proc.terminate()
        try:
            proc.wait(timeout=30)
            print(f"stopped {time.monotonic() - t_stop:.2f} s after SIGTERM, exit status {proc.returncode}")
        except subprocess.TimeoutExpired:
            print("did not stop within 30 s of SIGTERM: killed; see " + str(tmp / "daemon.log"))
            proc.kill()
            proc.wait()
        stop.set()
        server.shutdown()
        os.close(master)
        os.close(slave)
    return 0


if __name__ == "__main__":
    sys.exit(main())
