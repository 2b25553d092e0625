"""Modem link latency: from calling ``ModemLink.send_text`` to ``AT+CMGS=`` at the modem.

Run by hand: ``PYTHONPATH=. python bench/sms.py [N]`` (default 200 texts). The modem is the pty
simulator (drivers/modem/simulator.py) in its own thread, answering at once, so the figure is
the hub's own share: encoding the PDU, the asyncio hand-off, the worker-thread write and the
tty. A real modem adds its own time to answer. Pacing (``min_submit_gap_s``, 3 s in service)
is off here, so each send starts only after the previous one's ``+CMGS``. Also reports the
process CPU time per text (both ends: the simulator runs in this process too).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

from drivers.modem.link import ModemLink
from drivers.modem.simulator import FakeModem

TEXTS = [
    "【紧急】王芳(R-1017) SOS求助 12-01 22:14。地址：花园路88号5栋302。回复OK或1表示您去处理。",
    "URGENT: R-1017 SOS pressed on the watch 12-01 22:14. Address: 88 Garden Road. Reply OK.",
]


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


async def bench(n: int) -> dict:
    with FakeModem() as modem:
        link = ModemLink(modem.port, on_status=lambda s, i: None, min_submit_gap_s=0,
                         poll_interval_s=3600, sweep_interval_s=3600)
        task = asyncio.create_task(link.run())
        assert await link.wait_usable(30), link.state
        latencies, cpu0 = [], time.process_time()
        for i in range(n):
            before = len(modem.submit_times)
            t0 = time.monotonic()
            result = await link.send_text("+8613800000000", TEXTS[i % len(TEXTS)])
            assert result.ok, result
            latencies.append(modem.submit_times[before] - t0)
        cpu = time.process_time() - cpu0
        link.stop()
        await task
    ms = [x * 1000 for x in latencies]
    return {"n": n, "p50_ms": pct(ms, 50), "p99_ms": pct(ms, 99), "max_ms": max(ms),
            "mean_ms": statistics.fmean(ms), "cpu_ms_per_text": cpu * 1000 / n}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    r = asyncio.run(bench(n))
    print(f"{r['n']} texts: send_text -> AT+CMGS at the modem: p50 {r['p50_ms']:.2f} ms, "
          f"p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.2f} ms (mean {r['mean_ms']:.2f} ms); "
          f"CPU {r['cpu_ms_per_text']:.2f} ms per text (link + simulator)")


if __name__ == "__main__":
    main()
