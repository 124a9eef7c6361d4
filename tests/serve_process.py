"""`streamkm serve` as a real process for tests: start it, query /model and /readyz, stop or kill.

Also the small pieces every process-level test needs: a free port, an environment without
inherited STREAMKM_* variables, and `serving`, a serve process that is killed if a test leaves it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def streamkm_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment without inherited STREAMKM_* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKM_")}
    env.update(extra or {})
    return env


def start_serve(*args: str, log: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Start `streamkm serve ARGS` with stdout and stderr appended to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "serve", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=streamkm_env(env),
        )


@contextlib.contextmanager
def serving(
    *args: str, log: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    """`streamkm serve` in the background; killed if the test leaves it running."""
    proc = start_serve(*args, log=log, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class ServeProcess:
    """One `streamkm serve` process with its own metrics port and log file."""

    def __init__(self, bootstrap: str, log: Path, *args: str) -> None:
        self.port = free_port()
        self.log = log
        self.proc = start_serve(
            "--bootstrap", bootstrap, "--metrics-port", str(self.port), "--session-timeout", "3",
            *args, log=log,
        )  # fmt: skip

    def _get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def model(self) -> dict[str, Any]:
        """The instance's `/model` document."""
        status, body = self._get("/model")
        assert status == 200, body
        return orjson.loads(body)

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason) from /readyz; (False, "down") while the endpoint is not up."""
        try:
            status, body = self._get("/readyz")
        except OSError:
            return False, "down"
        return status == 200, body.decode().strip()

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until /readyz answers 200 (partitions assigned, model present)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"serve exited early:\n{self.output()}"
            try:
                if self._get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"not ready within {timeout}s:\n{self.output()[-3000:]}")

    def wait_listening(self, timeout: float = 60.0) -> None:
        """Until the metrics endpoint answers at all."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"serve exited early:\n{self.output()}"
            try:
                self._get("/healthz")
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"metrics endpoint not up within {timeout}s")

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, then the exit code; a process still running after `timeout` fails the test
        with the end of its log (which says where a stuck shutdown waits)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running {timeout:g}s after SIGTERM:\n{self.output()[-6000:]}"
            ) from None

    def kill(self) -> None:
        """SIGKILL: no draining, no commit, no snapshot."""
        self.proc.kill()
        self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
