#!/bin/sh
# Usage: install-debian.sh NAME "COMMAND..." PACKAGE...
# Installs the Debian PACKAGEs with apt-get unless every COMMAND is already on PATH, then checks
# that they are. Idempotent; as root, or through a password-less sudo. NAME prefixes messages.
set -eu

if [ $# -lt 3 ]; then
    echo "usage: install-debian.sh NAME \"COMMAND...\" PACKAGE..." >&2
    exit 2
fi
name=$1
commands=$2
shift 2

on_path() {
    for c in $commands; do
        command -v "$c" >/dev/null 2>&1 || return 1
    done
}

if on_path; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "$name: $commands missing and this is not root;" >&2
        echo "  install them with: sudo apt-get install $*" >&2
        exit 1
    fi
else
    SUDO=""
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "$name: no apt-get here; install $* ($commands) by hand" >&2
    exit 1
fi

echo "$name: installing the Debian packages $*" >&2
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"

if ! on_path; then
    echo "$name: installed $*, but $commands are not all on PATH" >&2
    exit 1
fi
