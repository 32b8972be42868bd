"""Issue 12 point 6: `pulse dev` restarts a worker that crashed, with a line saying so,
instead of tearing the stack down with a traceback (before: "worker died" and a traceback),
and its redis-server keeps its data across a restart (before: no persistence)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis


def test_pulse_dev_restarts_a_killed_worker_and_redis_keeps_its_data(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.tools.cli", "dev", "--no-simulate", "--duration", "25",
         "--interval", "0.5"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    try:
        killed = False
        redis_pid = url = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            seen.append(line.rstrip())
            if m := re.match(r"redis-server started \(pid (\d+)", line):
                redis_pid = int(m.group(1))
            if m := re.search(r"PULSE_REDIS_URL=(\S+)", line):
                url = m.group(1)
                client = redis.Redis.from_url(url)
                client.set("kept", b"across the restart")
                os.kill(redis_pid, signal.SIGKILL)  # type: ignore[arg-type]
            started = re.match(r"worker started \(pid (\d+)\)", line)
            if started and not killed:
                os.kill(int(started.group(1)), signal.SIGKILL)
                killed = True
            if "worker restarted" in "\n".join(seen) and "redis-server restarted" in \
                    "\n".join(seen):
                break
        out = "\n".join(seen)
        assert killed and url, out
        assert "worker exited (code -9); restarting it" in out, out
        assert "worker restarted (pid" in out, out
        assert "redis-server exited (code -9); restarting it" in out, out
        assert redis.Redis.from_url(url).get("kept") == b"across the restart"
        assert (tmp_path / ".pulse/dev/appendonlydir").is_dir(), "Redis keeps an AOF"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rest = proc.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            rest = proc.communicate()[0]
    assert "Traceback" not in "\n".join(seen) + rest, rest
