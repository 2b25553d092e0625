#!/bin/sh
# Set up CareHub in a virtual environment and run it.
#   sh bootstrap.sh demo   installs CareHub and runs `carehub demo`
#   sh bootstrap.sh test   installs CareHub with its test tools and runs the whole test suite
# It installs Debian's python3-venv first where the system Python lacks venv/ensurepip.
# CAREHUB_VENV names the virtual environment (default: .venv beside this file).
set -eu
cd "$(dirname "$0")"
what=${1:-demo}

if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q python3 python3-venv python3-pip
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
