"""Fixtures for the real-client integration tests: they start the real `quiver`
binary as a child process and talk to it with real Kafka clients.

Brokers:
- `broker`: one broker for the whole session on 127.0.0.1:9092, because the
  classic client snippets name `localhost:9092` verbatim. Tests on it use
  unique topic names so they do not see each other's data.
- `broker_factory` / `isolated_broker`: a fresh broker on a free port with its
  own data dir, for tests that crash, restart or abuse a broker.

Set QUIVER_BOOTSTRAP=host:port to run the session-broker tests against a broker
you started yourself; tests that need their own broker still spawn one from
QUIVER_BIN (default target/release/quiver).

Data dirs live under target/itest-data/ (not /tmp, which may be tmpfs, where
O_DIRECT fails). A session's directory is removed when every test passed and
kept for inspection otherwise. When a test fails, the tail of the log of every
broker it used is attached to the failure report.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import pytest

from broker_harness import (
    ITEST_DATA_ROOT,
    SESSION_BROKER_PORT,
    Broker,
    BrokerError,
    ExternalBroker,
    brokers_used_by,
    free_port,
    register_broker,
    unique_topic,
)

# ---------------------------------------------------------------------------
# Session data dir and failure reporting


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: a test that takes tens of seconds (load or crash scenario)"
    )


@pytest.fixture(scope="session")
def session_data_root(request: pytest.FixtureRequest) -> Iterator[Path]:
    root = ITEST_DATA_ROOT / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    root.mkdir(parents=True, exist_ok=True)
    yield root
    if request.session.testsfailed == 0 and os.environ.get("QUIVER_KEEP_DATA") != "1":
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"\nbroker data dirs and logs kept in {root}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed:
        for broker in brokers_used_by(item):
            where = f" ({broker.log_path})" if broker.log_path else ""
            report.sections.append(
                (f"quiver log tail: {broker.name}{where}", broker.log_tail())
            )
    return report


# ---------------------------------------------------------------------------
# Brokers


@pytest.fixture(scope="session")
def session_broker(session_data_root: Path) -> Iterator[object]:
    external = os.environ.get("QUIVER_BOOTSTRAP")
    if external:
        broker = ExternalBroker(external)
        if not broker.is_running():
            raise BrokerError(f"QUIVER_BOOTSTRAP={external} but nothing accepts connections there")
        yield broker
        return
    broker = Broker(
        name="session-broker",
        data_dir=session_data_root / "session-broker" / "data",
        port=SESSION_BROKER_PORT,
        log_path=session_data_root / "session-broker" / "quiver.log",
    )
    broker.start()
    yield broker
    broker.terminate()


@pytest.fixture
def broker(request: pytest.FixtureRequest, session_broker) -> object:
    """The shared broker on 127.0.0.1:9092 (or QUIVER_BOOTSTRAP)."""
    register_broker(request, session_broker)
    if not session_broker.is_running():
        raise BrokerError(
            f"the session broker is no longer running; log tail:\n{session_broker.log_tail()}"
        )
    return session_broker


@pytest.fixture
def broker_factory(
    request: pytest.FixtureRequest, session_data_root: Path
) -> Iterator[Callable[..., Broker]]:
    """Starts fresh brokers on free ports; all are stopped after the test."""
    started: list[Broker] = []

    def start(extra_args: Sequence[str] = (), name: Optional[str] = None) -> Broker:
        test_name = request.node.name.replace("/", "_").replace("[", "-").replace("]", "")
        broker_name = name or f"{test_name}-{len(started)}"
        broker_dir = session_data_root / broker_name
        new_broker = Broker(
            name=broker_name,
            data_dir=broker_dir / "data",
            port=free_port(),
            log_path=broker_dir / "quiver.log",
            extra_args=extra_args,
        )
        started.append(new_broker)
        register_broker(request, new_broker)
        return new_broker.start()

    yield start
    for started_broker in started:
        try:
            started_broker.terminate()
        except BrokerError as error:
            print(f"teardown: {error}")


@pytest.fixture
def isolated_broker(broker_factory: Callable[..., Broker]) -> Broker:
    """A broker of this test's own, with default flags."""
    return broker_factory()


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    """A unique topic name derived from the test's name."""
    stem = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60].strip("-")
    return unique_topic(stem or "topic")
