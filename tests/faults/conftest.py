"""Fault fixtures: services of one test's own, started and killed by pid.

The session stack (tests/conftest.py) is shared by every test, so a test that kills Redis or
the broker starts its own on a free port, kills it with SIGKILL and starts it again on the
same port: empty (no persistence, Tansu's memory storage) or with its data (Redis with an
append-only file).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.tools.devstack import Child, free_port, start_redis, start_tansu


class Service:
    """A child service that can be killed and started again on the same port."""

    def __init__(self, start: object, workdir: Path) -> None:
        self._start = start
        self.workdir = workdir
        self.port = free_port()
        self.child: Child = self._start(workdir, self.port)  # type: ignore[operator]

    def kill(self) -> None:
        self.child.proc.send_signal(signal.SIGKILL)
        self.child.proc.wait(10)

    def restart(self) -> None:
        self.child = self._start(self.workdir, self.port)  # type: ignore[operator]

    def stop(self) -> None:
        self.child.stop()


def _redis(tmp_path: Path, **options: object) -> Service:
    d = tmp_path / "redis"
    d.mkdir()
    return Service(lambda w, p: start_redis(w, p, **options), d)  # type: ignore[arg-type]


@pytest.fixture
def volatile_redis(tmp_path: Path) -> Iterator[Service]:
    """A redis-server without persistence: it restarts empty."""
    svc = _redis(tmp_path, persist=False)
    yield svc
    svc.stop()


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[Service]:
    """A redis-server with an append-only file fsynced before every reply."""
    svc = _redis(tmp_path, appendfsync="always")
    yield svc
    svc.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Service]:
    """A Tansu broker with memory storage: it restarts with no topics at all."""
    d = tmp_path / "tansu"
    d.mkdir()
    svc = Service(start_tansu, d)
    yield svc
    svc.stop()
