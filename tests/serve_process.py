"""`streamkm serve` as a real process for tests: start, query /model and /readyz, stop or kill."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServeProcess:
    """One `streamkm serve` process with its own metrics port and log file."""

    def __init__(self, bootstrap: str, log: Path, *args: str) -> None:
        self.port = free_port()
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKM_")}
        argv = [
            sys.executable, "-m", "stream.cli", "serve", "--bootstrap", bootstrap,
            "--metrics-port", str(self.port), "--session-timeout", "3", *args,
        ]  # fmt: skip
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)

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
        """SIGTERM, then the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

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
