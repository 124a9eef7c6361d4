#!/bin/sh
# Installs what `make test` needs beyond Python: the Debian package `prometheus`, whose
# `prometheus` and `promtool` binaries the tests in tests/observability/ run for real.
# Idempotent: does nothing when both binaries are already on PATH.
set -eu
exec sh "$(dirname "$0")/install-debian.sh" install-test-deps "prometheus promtool" prometheus
