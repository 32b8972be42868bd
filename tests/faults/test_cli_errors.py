"""Issue 12 point 4: every `pulse` command, with Kafka or Redis unreachable, wrong
credentials or a bad setting, says in one or two lines what failed and which setting to
check, exits with the documented code, and never prints a password.

Before: `pulse worker` printed ~96 lines of traceback with Redis down and 68 `Unable connect`
lines then a traceback with Kafka down; `pulse customer` / `customers export` printed raw
tracebacks; PULSE_WEB_PORT=0 gave a Faust traceback; a settings error echoed the password.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import redis

from streams.tools.devstack import free_port

SECRET = "s3cr3t-pw"
CLOSED_KAFKA = f"127.0.0.1:{free_port()}"
CLOSED_REDIS = f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"


def pulse(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    full.update({"PULSE_CONNECT_TIMEOUT_S": "1", **env})
    return subprocess.run([sys.executable, "-m", "streams.tools.cli", *args], env=full,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def said(done: subprocess.CompletedProcess[str]) -> list[str]:
    """The command's own lines (the worker's start-up log lines aside)."""
    return [ln for ln in (done.stderr + done.stdout).splitlines()
            if ln.strip() and " WARNING " not in ln]


def check(done: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    lines = said(done)
    assert done.returncode == code, (done.returncode, lines)
    assert 1 <= len(lines) <= 2, lines
    assert "Traceback" not in done.stderr
    assert SECRET not in done.stderr + done.stdout
    for w in words:
        assert w in "\n".join(lines), (w, lines)


# member operations need both (README "Member operations"): each names what is down
OPERATIONS = [("points", "adjust", "C1", "--points", "5", "--operator", "o", "--reason", "r"),
              ("rewards", "redeem", "C1", "--reward", "r", "--points", "5"),
              ("customers", "erase", "C1")]
REDIS_COMMANDS = [("customer", "C1"), ("customer", "C1", "--json"),
                  ("customers", "export", "--as-of", "2024-01-01"), *OPERATIONS]
KAFKA_COMMANDS = [("topics", "create"), ("simulate", "--duration", "1"),
                  ("rebuild", "--yes"), *OPERATIONS]


@pytest.mark.parametrize("args", [*REDIS_COMMANDS, ("worker",)])
def test_redis_unreachable(args, stack):
    done = pulse(*args, PULSE_REDIS_URL=CLOSED_REDIS, PULSE_KAFKA_BOOTSTRAP=stack.kafka_bootstrap)
    check(done, 3, "Redis unreachable", "PULSE_REDIS_URL", ":***@")


@pytest.mark.parametrize("args", [*KAFKA_COMMANDS, ("worker",)])
def test_kafka_unreachable(args, stack):
    done = pulse(*args, PULSE_KAFKA_BOOTSTRAP=CLOSED_KAFKA, PULSE_REDIS_URL=stack.redis_url)
    check(done, 3, "Kafka unreachable", "PULSE_KAFKA_BOOTSTRAP")


def test_replay_kafka_unreachable(stack, tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("customer_id,occurred_at,amount\nC1,2024-01-01,10.00\n")
    done = pulse("replay", str(f), PULSE_KAFKA_BOOTSTRAP=CLOSED_KAFKA)
    assert done.returncode == 3, said(done)
    assert "Traceback" not in done.stderr


def test_wrong_redis_password(tmp_path):
    from streams.tools.devstack import start_redis

    server = start_redis(tmp_path, persist=False)
    try:
        client = redis.Redis(port=server.port)
        client.config_set("requirepass", "right-one")
        client.close()
        url = f"redis://:{SECRET}@127.0.0.1:{server.port}/0"
        for args in (("customer", "C1"), ("worker",)):
            check(pulse(*args, PULSE_REDIS_URL=url), 3, "refused our credentials",
                  "PULSE_REDIS_URL")
    finally:
        server.stop()


@pytest.mark.parametrize("var,value,words", [
    ("PULSE_WEB_PORT", "0", ("PULSE_WEB_PORT",)),
    ("PULSE_REDIS_URL", f"http://:{SECRET}@h:1/0", ("PULSE_REDIS_URL", ":***@")),
    ("PULSE_ON_STATE_LOSS", "ignore", ("PULSE_ON_STATE_LOSS",)),
    ("PULSE_CONNECT_TIMEOUT_S", "soon", ("PULSE_CONNECT_TIMEOUT_S",)),
    ("PULSE_PROCESSES", "two", ("PULSE_PROCESSES", "'auto' or a number")),
])
def test_bad_setting(var, value, words):
    for args in (("worker",), ("customer", "C1"), ("topics", "create")):
        check(pulse(*args, **{var: value}), 2, "bad setting", *words)


def test_web_port_in_use(stack):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = pulse("worker", PULSE_WEB_PORT=str(port), PULSE_REDIS_URL=stack.redis_url,
                     PULSE_KAFKA_BOOTSTRAP=stack.kafka_bootstrap)
    check(done, 2, f"PULSE_WEB_PORT={port}")


def test_worker_processes_errors_come_before_any_process_starts(stack):
    check(pulse("worker", "--processes", "zero"), 2, "--processes zero", "'auto' or a number")
    # the supervisor checks Kafka and Redis once, like one worker, before starting children
    done = pulse("worker", "--processes", "2", PULSE_REDIS_URL=CLOSED_REDIS,
                 PULSE_KAFKA_BOOTSTRAP=stack.kafka_bootstrap)
    check(done, 3, "Redis unreachable", "PULSE_REDIS_URL")
