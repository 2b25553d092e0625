"""`carehub sms test NUMBER`: one test text through the configured modem, for the installer.

It opens the modem exactly as the daemon does (so run it with the daemon stopped: one owner of
the port), waits for the modem to be usable, sends, and says what happened in words.
"""

from __future__ import annotations

import asyncio
import re
import sys

from hub.notifier import build_link

E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
EX_OK, EX_FAIL, EX_USAGE, EX_CONFIG = 0, 1, 64, 78
READY_WAIT_S = 60.0
SEND_DEADLINE_S = 90.0

ADVICE = {
    "no_sim": "no SIM, or the SIM is not ready: check it is inserted (contacts down) and active",
    "pin_required": "the SIM wants a PIN: put it in the file named by [sms] pin_file (chmod 600)",
    "pin_rejected": "the SIM refused the PIN in pin_file: fix the file; after 3 wrong PINs the SIM needs its PUK",
    "puk_required": "the SIM is locked (PUK): unlock it in a phone, then put it back",
    "no_answer": "the modem does not answer AT: is it powered (SIM800 needs a 2 A supply), is this its AT port?",
    "disconnected": "the port cannot be opened: check [sms] port (udev: /dev/carehub-modem) and that "
                    "no other program (ModemManager, a running carehub) holds it",
    "not_registered": "the modem is not registered on a network: check the antenna, the signal and the SIM's plan",
}


async def _usable_or_failed(link, timeout_s: float, step_s: float = 0.1) -> bool:
    """True once the link is usable; False at its first failed state (the technician is waiting)
    or after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if await link.wait_usable(step_s):
            return True
        if link.state in ADVICE and link.state != "not_registered":
            return False
    return False


def text_for(cfg: dict) -> str:
    zh = cfg["sms"]["language"] == "zh"
    hub = cfg["hub"]["id"]
    return (f"CareHub {hub} 测试短信：本机可以发送报警短信。无需回复。" if zh
            else f"CareHub {hub} test: this hub can send alert texts. No reply needed.")


async def send_test(cfg: dict, number: str, *, ready_wait_s: float = READY_WAIT_S,
                    deadline_s: float = SEND_DEADLINE_S, out=None, err=None,
                    **link_options) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    states: list[tuple[str, dict]] = []
    link = build_link(cfg["sms"], on_status=lambda s, i: states.append((s, i)), **link_options)
    task = asyncio.create_task(link.run())
    try:
        if not await _usable_or_failed(link, ready_wait_s):
            state = link.state or "no_answer"
            reason = (link.info or {}).get("reason", "")
            print(f"carehub sms test: modem on {cfg['sms']['port']} not usable: {state}"
                  + (f" ({reason})" if reason else ""), file=err)
            print(f"  fix: {ADVICE.get(state, 'see docs/sms.md')}", file=err)
            return EX_FAIL
        st = link.status
        signal = f"{st.dbm} dBm" if st.dbm is not None else "unknown"
        print(f"modem {st.state}, operator {st.operator or 'unknown'}, signal {signal}", file=out)
        result = await link.send_text(number, text_for(cfg), deadline_s=deadline_s)
        if result.ok:
            print(f"test text sent to {number} ({len(result.refs)} part(s)); check that phone", file=out)
            return EX_OK
        why = result.reason or result.result
        code = f" (+CMS ERROR: {result.code})" if result.code is not None else ""
        print(f"carehub sms test: the text to {number} was not sent: {why}{code}", file=err)
        return EX_FAIL
    finally:
        link.stop()
        try:
            await asyncio.wait_for(task, 10)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            task.cancel()


def main(cfg: dict, number: str) -> int:
    if cfg.get("sms") is None:
        print("carehub sms test: the configuration has no [sms] table (see docs/sms.md)", file=sys.stderr)
        return EX_CONFIG
    if not E164.match(number):
        print(f"carehub sms test: {number!r} is not an E.164 number (e.g. +8613800000000)", file=sys.stderr)
        return EX_USAGE
    return asyncio.run(send_test(cfg, number))
