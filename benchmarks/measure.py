"""Run one client process and measure it: wall time, CPU time and peak RSS, from the kernel.

``os.wait4`` returns the rusage of exactly the child waited for, so each run gets its own peak
RSS and CPU figures without psutil. The children are started by a small spawner process
(spawner.py), because a child's peak RSS includes its spawner's size at the spawn.
Pure helpers for the figures (median, range, windows) live here too.
"""

from __future__ import annotations

import atexit
import json
import statistics
import subprocess
import sys
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


class Spawner:
    """The small process that starts and reaps every client (see spawner.py for why).

    Start it before the harness generates any input, so its own size stays below any client's.
    """

    def __init__(self, python: str = sys.executable) -> None:
        self._proc = subprocess.Popen(
            [python, "-S", str(Path(__file__).with_name("spawner.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, request: dict[str, object]) -> dict[str, float | int | bool]:
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        answer = self._proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"the spawner exited ({self._proc.wait()})")
        result: dict[str, float | int | bool] = json.loads(answer)
        return result

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()  # kills a client it may still be measuring
            self._proc.wait(30)


class _Shared:
    spawner: Spawner | None = None


def start_spawner() -> Spawner:
    """Start the spawner now, while this process is small. Idempotent."""
    if _Shared.spawner is None:
        _Shared.spawner = Spawner()
        atexit.register(_Shared.spawner.close)
    return _Shared.spawner


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

    The spawner runs the command and reaps it with ``wait4``; the wall clock stops the moment
    ``wait4`` returns. On Ctrl-C the spawner is stopped, which kills the client.
    """
    spawner = start_spawner()
    request = {
        "cmd": list(cmd), "env": dict(env), "cwd": str(cwd),
        "stdout": str(stdout), "stderr": str(stderr), "timeout_s": timeout_s,
    }  # fmt: skip
    try:
        answer = spawner.run(request)
    except BaseException:  # Ctrl-C while the client runs: it must not outlive the harness
        spawner.close()
        _Shared.spawner = None
        raise
    return Measurement(
        wall_s=float(answer["wall_s"]),
        cpu_s=float(answer["cpu_s"]),
        peak_rss_mib=float(answer["maxrss_kib"]) / 1024,  # ru_maxrss is in KiB on Linux
        returncode=int(answer["status"]),
        timed_out=bool(answer["timed_out"]),
    )


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
