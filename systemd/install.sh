#!/bin/sh
# Install, upgrade or remove CareHub on Raspberry Pi OS (or Debian), from a clone of the repository:
#   sudo sh systemd/install.sh              install or upgrade, enable and (re)start the service
#   sudo sh systemd/install.sh --uninstall  remove the software; keep /etc/carehub and /var/lib/carehub
#   sudo sh systemd/install.sh --uninstall --purge   also remove the configuration, the data and the user
# Options: --root DIR installs into DIR instead of / (CI and image builds): commands that need the
# live system (systemctl, udevadm, apt-get) are printed as "would run: ..." instead of run.
# --no-start installs and enables but does not start. Running it again is safe: the configuration,
# the token and the udev rule edited on site are never overwritten (a new version lands beside
# them as *.dist), and the data is never touched except by --purge. See docs/install.md.
set -eu

ROOT=""
ACTION=install
PURGE=no
START=yes
while [ $# -gt 0 ]; do
    case "$1" in
    --root) ROOT=${2:?--root needs a directory}; shift 2 ;;
    --root=*) ROOT=${1#--root=}; shift ;;
    --uninstall) ACTION=uninstall; shift ;;
    --purge) PURGE=yes; shift ;;
    --no-start) START=no; shift ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ "$PURGE" = yes ] && [ "$ACTION" != uninstall ]; then
    echo "install.sh: --purge goes with --uninstall" >&2; exit 2
fi
ROOT=${ROOT%/}

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=/opt/carehub
VENV=$ROOT$PREFIX
DOC=$VENV/share/doc/carehub
ETC=$ROOT/etc/carehub
STATE=$ROOT/var/lib/carehub
UNIT=$ROOT/etc/systemd/system/carehub.service
UDEV=$ROOT/etc/udev/rules.d/99-carehub-belt.rules
JOURNALD=$ROOT/etc/systemd/journald.conf.d/90-carehub.conf
SYSUSERS=$ROOT/usr/lib/sysusers.d/carehub.conf
BIN_LINK=$ROOT/usr/local/bin/carehub
PYTHON=${PYTHON:-python3}

say() { echo "install.sh: $*"; }

# Commands that change the live system: run them, or under --root only say what would run.
live() {
    if [ -n "$ROOT" ]; then
        echo "would run: $*"
    else
        "$@"
    fi
}

# Our own file, replaced when it changed.
put() { # mode source target
    mkdir -p "$(dirname "$3")"
    if ! cmp -s "$2" "$3" 2>/dev/null; then
        install -m "$1" "$2" "$3"
        say "installed $3"
    fi
}

# A file the technician edits: installed once, never overwritten; a changed default lands beside it.
put_once() { # mode source target
    mkdir -p "$(dirname "$3")"
    if [ ! -e "$3" ]; then
        install -m "$1" "$2" "$3"
        say "installed $3 (edit it for this home)"
    elif ! cmp -s "$2" "$3"; then
        install -m "$1" "$2" "$3.dist"
        say "kept your $3; this version's default is in $3.dist"
    fi
}

install_all() {
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
        echo "install.sh: CareHub needs Python 3.11 or newer ($("$PYTHON" -V 2>&1))" >&2; exit 1; }
    # lgpio (gpiozero's pin factory on a Pi, also on a Pi 5) comes from Raspberry Pi OS's own
    # package; the venv sees it through --system-site-packages. Everything else is locked below.
    if [ -z "$ROOT" ] && command -v apt-get >/dev/null && ! "$PYTHON" -c 'import lgpio' 2>/dev/null; then
        apt-get install -y -q python3-lgpio || say "python3-lgpio not available: set [gpio] pin_factory"
    fi

    put 0644 "$SRC/systemd/carehub.sysusers.conf" "$SYSUSERS"
    if command -v systemd-sysusers >/dev/null; then
        # --root works on a directory too: it writes that tree's /etc/passwd and /etc/group.
        if [ -n "$ROOT" ]; then
            mkdir -p "$ROOT/etc"
            systemd-sysusers --root="$ROOT" carehub.conf
        else
            systemd-sysusers carehub.conf
        fi
    else
        live systemd-sysusers carehub.conf
    fi

    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv --system-site-packages "$VENV"
    # Every file pip fetches is checked against the lock's hashes; CareHub itself is built from
    # this clone with the locked setuptools, offline.
    # The dependencies are fetched again only when the lock changed (no network for a re-run).
    lock_sum=$(sha256sum "$SRC/systemd/requirements.lock" | cut -d' ' -f1)
    if [ "$(cat "$VENV/.requirements.lock.sha256" 2>/dev/null)" != "$lock_sum" ]; then
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check --require-hashes --no-deps \
            -r "$SRC/systemd/requirements.lock"
        echo "$lock_sum" > "$VENV/.requirements.lock.sha256"
    fi
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
        --no-index --upgrade "$SRC"
    say "CareHub $("$VENV/bin/carehub" --version | cut -d' ' -f2) in $VENV"
    mkdir -p "$(dirname "$BIN_LINK")"
    ln -sfn "$PREFIX/bin/carehub" "$BIN_LINK"

    mkdir -p "$DOC"
    for f in README.md docs/install.md docs/deploy.md docs/events.md docs/alerts.md; do
        [ -f "$SRC/$f" ] && put 0644 "$SRC/$f" "$DOC/$(basename "$f")"
    done
    put 0644 "$SRC/config/carehub.example.toml" "$DOC/config.example.toml"

    put 0644 "$SRC/systemd/carehub.service" "$UNIT"
    put 0644 "$SRC/systemd/journald-carehub.conf" "$JOURNALD"
    put_once 0644 "$SRC/systemd/99-carehub-belt.rules" "$UDEV"
    mkdir -p "$ETC/conf.d"
    put_once 0640 "$SRC/config/carehub.example.toml" "$ETC/config.toml"
    mkdir -p "$STATE"
    chmod 0750 "$STATE"
    if [ -z "$ROOT" ]; then
        chgrp carehub "$ETC/config.toml"
        chown carehub:carehub "$STATE"
    fi

    live udevadm control --reload
    live udevadm trigger --subsystem-match=tty
    live systemctl restart systemd-journald
    live systemctl daemon-reload
    live systemctl enable carehub.service
    if [ "$START" = yes ]; then
        live systemctl restart carehub.service
    fi
    if [ -z "$ROOT" ]; then
        "$VENV/bin/carehub" check-config || say "edit $ETC/config.toml, then: carehub check-config && carehub doctor"
    fi
    say "done; next: edit $ROOT/etc/carehub/config.toml, then run: sudo carehub doctor"
}

uninstall_all() {
    live systemctl disable --now carehub.service
    for f in "$UNIT" "$JOURNALD" "$UDEV" "$UDEV.dist" "$BIN_LINK"; do
        if [ -e "$f" ] || [ -L "$f" ]; then rm -f "$f"; say "removed $f"; fi
    done
    if [ -d "$VENV" ]; then rm -rf "$VENV"; say "removed $VENV"; fi
    live systemctl daemon-reload
    live udevadm control --reload
    if [ "$PURGE" = yes ]; then
        rm -rf "$ETC" "$STATE"
        say "purged $ETC and $STATE"
        rm -f "$SYSUSERS"
        live userdel carehub
    else
        say "kept $ETC (configuration, token) and $STATE (events not yet delivered); --purge removes them"
    fi
}

if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (sudo sh systemd/install.sh), or with --root DIR" >&2
    exit 1
fi
if [ "$ACTION" = install ]; then install_all; else uninstall_all; fi
