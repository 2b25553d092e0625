#!/bin/sh
# Set up CareHub in a virtual environment and run it.
#   sh bootstrap.sh demo   installs CareHub and runs `carehub demo`
#   sh bootstrap.sh test   installs CareHub with its test tools and runs the whole test suite
# It installs Debian's python3-venv first where the system Python lacks venv/ensurepip, and for
# the tests the system tools they drive: fuse3 (power-cut tests), dbus (the watch's fake BlueZ),
# systemd's tools (systemd-analyze, systemd-sysusers for the unit and installer checks).
# CAREHUB_VENV names the virtual environment (default: .venv beside this file).
set -eu
cd "$(dirname "$0")"
what=${1:-demo}

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
need=""
python3 -c 'import venv, ensurepip' 2>/dev/null || need="python3 python3-venv python3-pip"
if [ "$what" = test ]; then
    command -v fusermount3 >/dev/null 2>&1 || need="$need fuse3"
    command -v dbus-daemon >/dev/null 2>&1 || need="$need dbus"
    { command -v systemd-analyze && command -v systemd-sysusers; } >/dev/null 2>&1 || need="$need systemd"
fi
if [ -n "$need" ]; then
    $SUDO apt-get update -q
    # shellcheck disable=SC2086  # one word per package
    $SUDO apt-get install -y -q --no-install-recommends $need
fi

VENV=${CAREHUB_VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true

case "$what" in
demo)
    "$VENV/bin/python" -m pip install -q .
    exec "$VENV/bin/carehub" demo
    ;;
test)
    "$VENV/bin/python" -m pip install -q '.[test]'
    exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests
    ;;
*)
    echo "usage: sh bootstrap.sh demo|test" >&2
    exit 2
    ;;
esac
