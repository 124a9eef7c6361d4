#!/bin/sh
# Installs what `make bench` needs beyond Python: the load generators of bench/bench_api.py,
# `wrk` (HTTP/1.1, Debian package wrk) and `h2load` (HTTP/2 and so gRPC over h2c, Debian package
# nghttp2-client). Idempotent: does nothing when both are already on PATH.
set -eu
exec sh "$(dirname "$0")/install-debian.sh" install-bench-deps "wrk h2load" wrk nghttp2-client
