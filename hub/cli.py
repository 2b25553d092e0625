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
EX_SIGPIPE = 141  # 128 + SIGPIPE, as a shell reports a reader that left early

LOGGER = logging.getLogger(__name__)


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="PATH",
                   help="main configuration file (default: $CAREHUB_CONFIG, then /etc/carehub/config.toml); "
                        "conf.d/*.toml beside it is read too")


def _command(sub, name: str, help: str, description: str, example: str, func):
    """A sub-command whose --help says what it does and shows one example."""
    p = sub.add_parser(name, help=help, description=description,
                       epilog="example:\n  " + example.replace("\n", "\n  "),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carehub",
        description="CareHub: the home hub that watches over a resident who lives alone.",
        epilog="`carehub COMMAND --help` describes each command, with an example.\n"
               "On a new install: carehub check-config && sudo carehub doctor",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"carehub {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = _command(sub, "run", "run the daemon in the foreground (logs to stderr)",
                 "The daemon, as systemd starts it: reads the configuration, opens the store, starts "
                 "the devices and sends READY=1. On an invalid configuration it runs on the last one "
                 "that validated and ran (kept in the state dir) and reports hub.config_rejected; "
                 "exit 78 only when there is none.",
                 "carehub run --config /etc/carehub/config.toml", cmd_run)
    _config_arg(p)

    p = _command(sub, "check-config", "validate the configuration and exit (0 valid, 78 invalid)",
                 "Validates the main file and conf.d/*.toml beside it. Valid: a short summary, exit 0. "
                 "Invalid: one FILE:LINE: KEY: problem line each, in file and line order, exit 78.",
                 "carehub check-config --config /etc/carehub/config.toml", cmd_check_config)
    _config_arg(p)

    p = _command(sub, "doctor", "the on-site checklist: every check with a fix for each failure",
                 "Checks the configuration, placeholder ids, the serial port (present, usable by the "
                 "service user), frames arriving and decoding (share of valid heart and breathing "
                 "readings: the belt's placement), the Bluetooth adapter and the watch ([watch] only), "
                 "the GPIO chip, the server (an empty signed batch: token and signature accepted), "
                 "the clock, free disk, the store's integrity and the service. Exit 0 only when every "
                 "applicable check passes. Run it as root to check as the service user.",
                 "sudo carehub doctor --seconds 10\ncarehub doctor --json | jq '.checks[] | select(.status == \"fail\")'",
                 cmd_doctor)
    _config_arg(p)
    p.add_argument("--json", action="store_true", help="print one JSON object: ok, checks[name, status, detail, fix]")
    p.add_argument("--seconds", type=float, default=5.0, metavar="N",
                   help="how long to read the belt (and scan for the watch); default 5")
    p.add_argument("--user", default="carehub", metavar="NAME",
                   help="when run as root, check device access as this user (default: the service's, carehub)")

    p = _command(sub, "demo", "run the whole hub on simulated devices with an embedded receiver",
                 "The whole hub on a simulated belt and panel, with an embedded community-server "
                 "receiver on 127.0.0.1: no hardware, no network, no root.",
                 "carehub demo", cmd_demo)
    p.add_argument("--speed", type=float, default=600.0,
                   help="at most this many simulated seconds per real second (default 600); "
                        "the simulation drives the hub's clock, so alerts do not depend on it")
    p.add_argument("--keep", action="store_true", help="keep the temporary state directory")

    p = _command(sub, "status", "what the hub is doing now (reads the store; the daemon may run)",
                 "Devices, active alerts, queue depth per priority, last successful sync and the "
                 "configuration in use, read from the store without disturbing the daemon. Times are "
                 "in the hub's timezone.",
                 "carehub status\ncarehub status --json", cmd_status)
    _config_arg(p)
    p.add_argument("--json", action="store_true", help="print one JSON object (times in UTC)")

    p = _command(sub, "receiver", "reference community-server sync endpoint (for checks and demos)",
                 "A reference implementation of the community server's sync endpoint (spec section 4) "
                 "with a small alert page; for installation checks and demos, not production.",
                 "carehub receiver --host 127.0.0.1 --port 8080 --db /tmp/rx.db --token-file /tmp/token",
                 cmd_receiver)
    from offline_queue.receiver import add_arguments as receiver_arguments
    receiver_arguments(p)

    p = _command(sub, "monitor", "live view of what the bed sensor sends, decoded",
                 "Shows each decoded reading of the bed sensor as it arrives; --record also writes the "
                 "raw bytes with their times to a recording for `carehub replay`. While the daemon runs "
                 "(it holds the port exclusively) it attaches to the daemon's live decoded feed over a "
                 "local unix socket instead, and says so.",
                 "carehub monitor --port /dev/ttyUSB0 --protocol micradar --record night.rec", cmd_monitor)
    _config_arg(p)
    p.add_argument("--port", metavar="URL", help="pyserial URL (default: [belt] port)")
    p.add_argument("--protocol", choices=BELT_PROTOCOLS,
                   help="protocol (default: [belt] protocol)")
    p.add_argument("--baudrate", type=int, help="line speed (default: [belt] baudrate or the protocol's)")
    p.add_argument("--record", metavar="FILE", help="also write the raw bytes with their times to FILE")

    p = _command(sub, "scan", "list nearby BLE devices (name, address, RSSI, services) to find the watch",
                 "Listens for Bluetooth LE advertisements and lists each device seen: name, address, "
                 "signal strength (RSSI) and advertised services; the watch's address goes into "
                 "[watch] address.",
                 "carehub scan --seconds 10\ncarehub scan --json", cmd_scan)
    p.add_argument("--seconds", type=float, default=5.0, help="how long to listen (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON array")

    p = _command(sub, "replay", "run a recording through the decoders and rules; print the events",
                 "Runs a recording through the decoders and the alert rules with its recorded timing, "
                 "as fast as the machine allows, and prints each event as one JSON line; a one-line "
                 "summary goes to stderr. Nothing is sent and the state dir is not touched. Without a "
                 "configuration file (none at /etc/carehub, no --config) the defaults are used.",
                 "carehub replay --protocol micradar night.rec > events.jsonl", cmd_replay)
    _config_arg(p)
    p.add_argument("--protocol", choices=BELT_PROTOCOLS,
                   help="protocol the recording was made with (default: [belt] protocol, else micradar)")
    p.add_argument("recording", metavar="RECORDING")
    return parser


def _setup_logging(level: str = "info") -> None:
    from hub import logs
    logs.setup(level)  # with journald's <N> priority prefixes under systemd


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
    from hub import app, lastgood
    try:
        cfg = _load_config(args.config)
    except ConfigError as e:
        _setup_logging()
        good = lastgood.load(lastgood.state_dirs(args.config))
        if good is None:
            _print_problems(e)
            from hub.notify import Notifier
            Notifier().send(f"STATUS=configuration invalid: {e.problems[0]}")
            return EX_CONFIG
        for line in e.problems:
            LOGGER.error("%s", line)
        LOGGER.error("configuration invalid: %d problem(s); running on the last good one, kept %s in %s",
                     len(e.problems), good["_last_good"]["saved_at"], good["_last_good"]["path"])
        cfg = lastgood.rejected(good, e.problems)
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


REPLAY_DEFAULTS = """\
[hub]
id = "replay"
resident_id = "replay"

[belt]
port = "loop://"
protocol = "{protocol}"
"""


def cmd_replay(args) -> int:
    import os
    from hub import config, replay
    _setup_logging("warning")
    main_file = config.config_files(args.config)[0]
    if args.config is None and not os.environ.get(config.ENV_VAR) and not main_file.exists():
        # A technician's laptop: no /etc/carehub. The defaults, with the protocol asked for.
        cfg = config.load(texts={"(replay defaults)": REPLAY_DEFAULTS.format(protocol=args.protocol or "micradar")})
    else:
        cfg = _load_config(args.config)
        if args.protocol and cfg["belt"] is not None:
            cfg["belt"]["protocol"] = args.protocol
        elif args.protocol:
            cfg["belt"] = config.load(texts={"(replay defaults)": REPLAY_DEFAULTS.format(
                protocol=args.protocol)})["belt"]
    return replay.main(cfg, args.recording)


def cmd_doctor(args) -> int:
    from hub import doctor
    _setup_logging("error")
    return doctor.main(args.config, as_json=args.json, seconds=args.seconds, service_user=args.user)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc = args.func(args)
        sys.stdout.flush()
        return rc
    except BrokenPipeError:
        # `carehub status --json | head -c1`: the reader has gone; that is not an error of ours.
        # Point stdout at /dev/null so the interpreter's own flush at exit stays quiet too.
        import os
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EX_SIGPIPE
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
