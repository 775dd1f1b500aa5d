"""The broker process under test: start it, wait until it accepts
connections, crash it, restart it on the same data dir, read its log.

Used by conftest.py's fixtures; tests that need a broker with a lifetime of
their own (a module, say) use `Broker` directly.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import time
import uuid
import weakref
from pathlib import Path
from typing import Optional, Sequence

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ITEST_DATA_ROOT = REPO_ROOT / "target" / "itest-data"
LOOPBACK_HOST = "127.0.0.1"
SESSION_BROKER_PORT = 9092
BROKER_READY_TIMEOUT_S = float(os.environ.get("QUIVER_READY_TIMEOUT_S", "30"))
BROKER_STOP_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 80


_BROKERS_USED_KEY = pytest.StashKey[list]()


def register_broker(request: pytest.FixtureRequest, broker) -> None:
    """Attach `broker`'s log tail to this test's report if the test fails
    (conftest's pytest_runtest_makereport hook does the attaching)."""
    request.node.stash.setdefault(_BROKERS_USED_KEY, []).append(broker)


def brokers_used_by(item: pytest.Item) -> list:
    return item.stash.get(_BROKERS_USED_KEY, [])


# Brokers started and not yet seen to exit; killed at interpreter exit so an
# interrupted run leaves no broker holding a port.
_LIVE_BROKERS: "weakref.WeakSet[Broker]" = weakref.WeakSet()


@atexit.register
def _kill_leftover_brokers() -> None:
    for broker in list(_LIVE_BROKERS):
        if broker.is_running():
            broker.process.kill()
            broker.process.wait(timeout=BROKER_STOP_TIMEOUT_S)


def quiver_bin() -> Path:
    return Path(os.environ.get("QUIVER_BIN", REPO_ROOT / "target" / "release" / "quiver"))


# Longest we wait for a killed broker's listening socket to disappear.
GHOST_LISTENER_WAIT_S = 10.0


def extra_broker_args() -> list[str]:
    """Flags every spawned broker gets: QUIVER_CORES=N adds `--cores N`."""
    args: list[str] = []
    cores = os.environ.get("QUIVER_CORES")
    if cores:
        args += ["--cores", cores]
    return args


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK_HOST, 0))
        return sock.getsockname()[1]


def free_udp_port() -> int:
    """A UDP port for the broker's QUIC listener (the default, 9093, may be taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK_HOST, 0))
        return sock.getsockname()[1]


def port_accepts_connections(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def unique_topic(prefix: str) -> str:
    """A topic name no other test (or earlier run on a kept broker) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class BrokerError(RuntimeError):
    pass


class Broker:
    """One `quiver serve` child process with its own data dir and log file.

    The log file collects stdout and stderr of every start of this broker, each
    start preceded by a marker line, so a restart does not lose the log of the
    run that crashed.
    """

    def __init__(
        self,
        name: str,
        data_dir: Path,
        port: int,
        log_path: Path,
        extra_args: Sequence[str] = (),
        binary: Optional[Path] = None,
    ) -> None:
        self.name = name
        self.data_dir = data_dir
        self.port = port
        # Fixed for the broker's lifetime so restarts keep their address.
        self.quic_port = free_udp_port()
        self.host = LOOPBACK_HOST
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self.binary = binary or quiver_bin()
        self.process: Optional[subprocess.Popen] = None
        self.start_count = 0
        self.managed = True

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise BrokerError(f"{self.name} was never started")
        return self.process.pid

    def command(self) -> list[str]:
        return [
            str(self.binary),
            "serve",
            "--data-dir", str(self.data_dir),
            "--kafka-listen", f"{self.host}:{self.port}",
            "--advertised-host", self.host,
            "--quic-listen", f"{self.host}:{self.quic_port}",
            *extra_broker_args(),
            *self.extra_args,
        ]

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, ready_timeout_s: float = BROKER_READY_TIMEOUT_S) -> "Broker":
        if self.is_running():
            raise BrokerError(f"{self.name} is already running (pid {self.pid})")
        if not self.binary.is_file():
            raise BrokerError(
                f"broker binary {self.binary} not found: run `cargo build --release --bins` "
                "or set QUIVER_BIN"
            )
        # After SIGKILL the kernel tears down the dead broker's io_uring asynchronously,
        # and the listening socket it references can accept connections for a moment
        # after the process is reaped. Wait for it to go before starting over it.
        deadline = time.monotonic() + GHOST_LISTENER_WAIT_S
        while port_accepts_connections(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        if port_accepts_connections(self.host, self.port):
            raise BrokerError(
                f"{self.host}:{self.port} already accepts connections before {self.name} started: "
                "another broker is running there (set QUIVER_BOOTSTRAP to use it for session tests)"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.start_count += 1
        command = self.command()
        with open(self.log_path, "ab") as log_file:
            log_file.write(
                f"=== test harness: start #{self.start_count}: {' '.join(command)}\n".encode()
            )
            log_file.flush()
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                # Same process group as pytest on purpose: when `timeout` or a
                # Ctrl-C ends the run, the brokers go with it.
            )
        _LIVE_BROKERS.add(self)
        self.wait_ready(ready_timeout_s)
        return self

    def wait_ready(self, timeout_s: float = BROKER_READY_TIMEOUT_S) -> None:
        """Ready means: a TCP connect to the Kafka port succeeds."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise BrokerError(
                    f"{self.name} exited with status {self.process.returncode} before it was "
                    f"ready; log tail:\n{self.log_tail()}"
                )
            if port_accepts_connections(self.host, self.port, timeout_s=0.5):
                return
            time.sleep(0.05)
        raise BrokerError(
            f"{self.name} did not accept connections on {self.bootstrap} within {timeout_s} s; "
            f"log tail:\n{self.log_tail()}"
        )

    def kill9(self) -> None:
        """Crash the broker: SIGKILL, no chance to flush or close anything."""
        if not self.is_running():
            raise BrokerError(f"{self.name} is not running, cannot kill it")
        os.kill(self.pid, signal.SIGKILL)
        self.process.wait(timeout=BROKER_STOP_TIMEOUT_S)
        self._log_marker(f"killed with SIGKILL (status {self.process.returncode})")

    def terminate(self, timeout_s: float = BROKER_STOP_TIMEOUT_S) -> int:
        """Stop with SIGTERM; SIGKILL if it has not exited after `timeout_s`.

        Returns the exit status; raises BrokerError when SIGKILL was needed, so
        a broker that ignores SIGTERM is noticed.
        """
        if self.process is None:
            raise BrokerError(f"{self.name} was never started")
        if self.process.poll() is not None:
            return self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=BROKER_STOP_TIMEOUT_S)
            self._log_marker("did not stop on SIGTERM; killed with SIGKILL")
            raise BrokerError(f"{self.name} did not exit within {timeout_s} s of SIGTERM")
        self._log_marker(f"stopped by SIGTERM with status {status}")
        return status

    def restart(self, ready_timeout_s: float = BROKER_READY_TIMEOUT_S) -> "Broker":
        """Start again on the same data dir and port; stops it first if running."""
        if self.is_running():
            self.terminate()
        return self.start(ready_timeout_s)

    def _log_marker(self, text: str) -> None:
        with open(self.log_path, "ab") as log_file:
            log_file.write(f"=== test harness: {text}\n".encode())

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


class ExternalBroker:
    """A broker someone else started (QUIVER_BOOTSTRAP); it cannot be killed."""

    managed = False
    name = "external"
    log_path = None

    def __init__(self, bootstrap: str) -> None:
        host, _, port = bootstrap.rpartition(":")
        self.host = host or LOOPBACK_HOST
        self.port = int(port)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def is_running(self) -> bool:
        return port_accepts_connections(self.host, self.port)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "(external broker: its log is wherever you started it)"
