#!/bin/sh
# Installs what `make bench` needs beyond Python: the load generators of bench/bench_api.py,
# `wrk` (HTTP/1.1, Debian package wrk) and `h2load` (HTTP/2 and so gRPC over h2c, Debian package
# nghttp2-client). Idempotent: does nothing when both are already on PATH.
set -eu

if command -v wrk >/dev/null 2>&1 && command -v h2load >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install-bench-deps: wrk/h2load are missing and this is not root;" >&2
        echo "  install them with: sudo apt-get install wrk nghttp2-client" >&2
        exit 1
    fi
else
    SUDO=""
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-bench-deps: no apt-get here; install wrk and h2load (nghttp2) by hand" >&2
    exit 1
fi

echo "install-bench-deps: installing the Debian packages wrk and nghttp2-client" >&2
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    wrk nghttp2-client

if ! command -v wrk >/dev/null 2>&1 || ! command -v h2load >/dev/null 2>&1; then
    echo "install-bench-deps: installed the packages, but wrk/h2load are not on PATH" >&2
    exit 1
fi
