"""Start client processes for the harness and report what the kernel says they cost.

Why a separate process: Linux's peak RSS of a process (``ru_maxrss``) includes the resident
size of the process that spawned it, as it was at the spawn (at ``exec`` the kernel folds the
old address space's high-water mark into the new program's; with ``vfork`` that space is the
parent's own). Spawned straight from the harness, which holds generated inputs and grows to
~90 MiB, every client read at least that much (a 1M-pair bulktag run measured 92 MiB from the
harness, 68 MiB from a small parent). This process is started first, while the harness is small,
imports little, and stays ~10 MiB: below any client, so it never shows in their figures.

Protocol: one JSON object per line on stdin — ``{"cmd", "env", "cwd", "stdout", "stderr",
"timeout_s"}`` — answered by one JSON line on stdout: ``{"wall_s", "cpu_s", "maxrss_kib",
"status", "timed_out"}``. SIGTERM kills the client being measured, then this process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any


class _Measuring:
    """The client being measured, for the signal handler to kill."""

    process: subprocess.Popen[bytes] | None = None


def _stop(signum: int, frame: object) -> None:
    client = _Measuring.process
    if client is not None and client.poll() is None:
        client.kill()
    os._exit(128 + signum)


def measure(request: dict[str, Any]) -> dict[str, Any]:
    with open(request["stdout"], "wb") as out, open(request["stderr"], "wb") as err:
        started = time.perf_counter()
        _Measuring.process = proc = subprocess.Popen(
            request["cmd"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=request["env"],
            cwd=request["cwd"],
        )
    reaped: dict[str, Any] = {}

    def reap() -> None:
        _, reaped["status"], reaped["usage"] = os.wait4(proc.pid, 0)
        reaped["ended"] = time.perf_counter()  # the wall clock stops when wait4 returns

    reaper = threading.Thread(target=reap, daemon=True)
    reaper.start()
    reaper.join(request["timeout_s"])
    timed_out = reaper.is_alive()
    if timed_out:
        proc.kill()
        reaper.join(30)
    proc.returncode = os.waitstatus_to_exitcode(reaped["status"])  # reaped here, not by Popen
    _Measuring.process = None
    usage = reaped["usage"]
    return {
        "wall_s": reaped["ended"] - started,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "maxrss_kib": usage.ru_maxrss,
        "status": proc.returncode,
        "timed_out": timed_out,
    }


def main() -> int:
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    for line in sys.stdin:
        answer = measure(json.loads(line))
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
