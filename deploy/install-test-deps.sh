#!/bin/sh
# Installs what `make test` needs beyond Python: the Debian package `prometheus`, whose
# `prometheus` and `promtool` binaries the tests in tests/observability/ run for real.
# Idempotent: does nothing when both binaries are already on PATH.
set -eu

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install-test-deps: prometheus/promtool are missing and this is not root;" >&2
        echo "  install them with: sudo apt-get install prometheus" >&2
        exit 1
    fi
else
    SUDO=""
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-deps: no apt-get here; install Prometheus (prometheus, promtool) by hand" >&2
    exit 1
fi

echo "install-test-deps: installing the Debian package prometheus" >&2
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    echo "install-test-deps: installed prometheus, but prometheus/promtool are not on PATH" >&2
    exit 1
fi
