"""The `carehub` command: one argparse front over every command of spec section 1.

Expected failures (a bad configuration, a missing store, an unreachable port) end with a clear
message and an exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from hub import __version__
from drivers.belt.decoder import PROTOCOLS as BELT_PROTOCOLS
from hub.errors import EXPECTED_ERRORS, ConfigError

EX_OK = 0
EX_FAIL = 1
EX_CONFIG = 78  # sysexits.h EX_CONFIG

LOGGER = logging.getLogger(__name__)


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="PATH",
                   help="main configuration file (default: $CAREHUB_CONFIG, then /etc/carehub/config.toml); "
                        "conf.d/*.toml beside it is read too")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carehub",
        description="CareHub: the home hub that watches over a resident who lives alone.")
    parser.add_argument("--version", action="version", version=f"carehub {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="run the daemon in the foreground (logs to stderr)")
    _config_arg(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-config", help="validate the configuration and exit (0 valid, 78 invalid)")
    _config_arg(p)
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("demo", help="run the whole hub on simulated devices with an embedded receiver")
    p.add_argument("--speed", type=float, default=600.0,
                   help="at most this many simulated seconds per real second (default 600); "
                        "the simulation drives the hub's clock, so alerts do not depend on it")
    p.add_argument("--keep", action="store_true", help="keep the temporary state directory")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("status", help="what the hub is doing now (reads the store; the daemon may run)")
    _config_arg(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("receiver", help="reference community-server sync endpoint (for checks and demos)")
    from offline_queue.receiver import add_arguments as receiver_arguments
    receiver_arguments(p)
    p.set_defaults(func=cmd_receiver)

    p = sub.add_parser("monitor", help="live view of what the bed sensor sends, decoded")
    _config_arg(p)
    p.add_argument("--port", metavar="URL", help="pyserial URL (default: [belt] port)")
    p.add_argument("--protocol", choices=BELT_PROTOCOLS,
                   help="protocol (default: [belt] protocol)")
    p.add_argument("--baudrate", type=int, help="line speed (default: [belt] baudrate or the protocol's)")
    p.add_argument("--record", metavar="FILE", help="also write the raw bytes with their times to FILE")
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser("scan", help="list nearby BLE devices (name, address, RSSI, services) to find the watch")
    p.add_argument("--seconds", type=float, default=5.0, help="how long to listen (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON array")
    p.set_defaults(func=cmd_scan)

    p = sub.add_parser("replay", help="run a recording through the decoders and rules; print the events")
    _config_arg(p)
    p.add_argument("recording", metavar="RECORDING")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("sms", help="the GSM modem: `sms test NUMBER` sends a test text through it")
    sms_sub = p.add_subparsers(dest="sms_command", metavar="SUBCOMMAND", required=True)
    t = sms_sub.add_parser("test", help="send a test text through the configured modem")
    _config_arg(t)
    t.add_argument("number", metavar="NUMBER", help="E.164 number to text, e.g. +8613800000000")
    t.set_defaults(func=cmd_sms_test)
    return parser


def _setup_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _load_config(path):
    from hub import config
    return config.load(path)


def _print_problems(err: ConfigError) -> None:
    for line in err.problems:
        print(line, file=sys.stderr)


def cmd_check_config(args) -> int:
    from hub import config
    try:
        cfg = config.load(args.config)
    except ConfigError as e:
        _print_problems(e)
        print(f"configuration invalid: {len(e.problems)} problem(s)", file=sys.stderr)
        return EX_CONFIG
    print(config.summary(cfg))
    return EX_OK


def cmd_run(args) -> int:
    from hub import app
    try:
        cfg = _load_config(args.config)
    except ConfigError as e:
        _setup_logging()
        _print_problems(e)
        from hub.notify import Notifier
        Notifier().send(f"STATUS=configuration invalid: {e.problems[0]}")
        return EX_CONFIG
    _setup_logging(cfg["hub"]["log_level"])
    return app.main(cfg)


def cmd_status(args) -> int:
    from hub import status
    try:
        cfg = _load_config(args.config)
    except ConfigError as e:
        _print_problems(e)
        return EX_CONFIG
    return status.main(cfg, as_json=args.json)


def cmd_demo(args) -> int:
    from hub import demo
    _setup_logging("warning")
    return demo.main(speed=args.speed, keep=args.keep)


def cmd_receiver(args) -> int:
    from offline_queue import receiver
    _setup_logging()
    return receiver.run(args)


def cmd_monitor(args) -> int:
    from hub import monitor
    _setup_logging("warning")
    return monitor.main(args)


def cmd_scan(args) -> int:
    from drivers.watch import scan
    _setup_logging("error")
    return scan.main(args.seconds, args.json)


def cmd_replay(args) -> int:
    from hub import replay
    _setup_logging("warning")
    try:
        cfg = _load_config(args.config)
    except ConfigError as e:
        _print_problems(e)
        return EX_CONFIG
    return replay.main(cfg, args.recording)


def cmd_sms_test(args) -> int:
    from hub import smstest
    _setup_logging("error")
    try:
        cfg = _load_config(args.config)
    except ConfigError as e:
        _print_problems(e)
        return EX_CONFIG
    return smstest.main(cfg, args.number)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return EX_OK
    except ConfigError as e:
        _print_problems(e)
        return EX_CONFIG
    except EXPECTED_ERRORS as e:
        print(f"carehub {args.command}: {e}", file=sys.stderr)
        # e.g. 77 (EX_NOPERM) when the store's files belong to another user, 74 (EX_IOERR)
        return getattr(e, "exit_code", EX_FAIL)


if __name__ == "__main__":
    sys.exit(main())
