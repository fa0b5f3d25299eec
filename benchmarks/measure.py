"""Run one client process and measure it: wall time, CPU time and peak RSS, from the kernel.

``os.wait4`` returns the rusage of exactly the child we waited for, so each run gets its own peak
RSS and CPU figures without psutil and without a ``/usr/bin/time`` wrapper process in between.
Pure helpers for the figures (median, range, windows) live here too.
"""

from __future__ import annotations

import os
import resource
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Measurement:
    """What the kernel says one client process cost."""

    wall_s: float
    cpu_s: float  # user + system
    peak_rss_mib: float
    returncode: int
    timed_out: bool


def run_measured(
    cmd: Sequence[str],
    timeout_s: float,
    stdout: Path,
    stderr: Path,
    *,
    env: Mapping[str, str],
    cwd: Path,
) -> Measurement:
    """Run ``cmd`` in ``cwd`` to completion (killing it after ``timeout_s``) and measure it.

    ``cwd`` matters: ``python -m`` puts it first on ``sys.path``, so running from the repo root
    would import the working tree's bulktag whatever ``PYTHONPATH`` says.

    The blocking ``wait4`` runs in a helper thread so the main thread can enforce the time budget;
    the wall clock stops the moment ``wait4`` returns, not when we get round to polling.
    """
    with stdout.open("wb") as out, stderr.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd), stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=dict(env), cwd=cwd
        )
    reaped = _Reaped()
    reaper = threading.Thread(target=reaped.wait, args=(proc.pid,), daemon=True)
    reaper.start()
    try:
        reaper.join(timeout_s)
    except BaseException:  # Ctrl-C while the client runs: it must not outlive the harness
        proc.send_signal(signal.SIGKILL)
        reaper.join(30)
        raise
    timed_out = reaper.is_alive()
    if timed_out:
        proc.send_signal(signal.SIGKILL)
        reaper.join(30)
    # We reaped the child ourselves; tell Popen so it does not try (and fail) again.
    proc.returncode = os.waitstatus_to_exitcode(reaped.status)
    return Measurement(
        wall_s=reaped.ended - started,
        cpu_s=reaped.usage.ru_utime + reaped.usage.ru_stime,
        peak_rss_mib=reaped.usage.ru_maxrss / 1024,  # ru_maxrss is in KiB on Linux
        returncode=proc.returncode,
        timed_out=timed_out,
    )


class _Reaped:
    """Filled in by ``wait`` in the reaper thread; read only after that thread has ended."""

    status: int
    ended: float
    usage: resource.struct_rusage

    def wait(self, pid: int) -> None:
        _, self.status, self.usage = os.wait4(pid, 0)
        self.ended = time.perf_counter()


@dataclass(frozen=True, slots=True)
class Spread:
    """Median and range of repeated measurements of one figure."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values), len(values))


def achieved_rate(arrivals: Sequence[float]) -> float:
    """Arrivals per second between the first and the last arrival (0 for fewer than two)."""
    if len(arrivals) < 2 or arrivals[-1] <= arrivals[0]:
        return 0.0
    return (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])


def worst_window(arrivals: Sequence[float], width_s: float = 1.0) -> int:
    """The most arrivals in any window ``[t, t + width_s)``, over sorted arrival times.

    Every maximal window starts at an arrival, so two pointers over the sorted list find it in
    linear time.
    """
    worst = 0
    end = 0
    for start, t in enumerate(arrivals):
        while end < len(arrivals) and arrivals[end] < t + width_s:
            end += 1
        worst = max(worst, end - start)
    return worst
