"""Issue 12 point 6: `pulse dev` restarts a worker that crashed, with a line saying so,
instead of tearing the stack down with a traceback (before: "worker died" and a traceback)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path


def test_pulse_dev_restarts_a_killed_worker(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "dev", "--no-simulate", "--duration", "25",
         "--interval", "0.5"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    try:
        killed = False
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            seen.append(line.rstrip())
            started = re.match(r"worker started \(pid (\d+)\)", line)
            if started and not killed:
                os.kill(int(started.group(1)), signal.SIGKILL)
                killed = True
            if line.startswith("worker restarted"):
                break
        out = "\n".join(seen)
        assert killed, out
        assert "worker exited (code -9); restarting it" in out, out
        assert "worker restarted (pid" in out, out
        assert (tmp_path / ".pulse/dev/appendonlydir").is_dir(), "Redis keeps an AOF"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rest = proc.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            rest = proc.communicate()[0]
    assert "Traceback" not in "\n".join(seen) + rest, rest
