"""CPU pinning: clients on one core, servers on the other, so they never steal each other's time."""

from __future__ import annotations

import os
import shutil

CLIENT_CORE = 0
SERVER_CORE = 1


def can_pin() -> bool:
    """Pinning needs taskset and at least two cores we are allowed to run on."""
    return shutil.which("taskset") is not None and len(os.sched_getaffinity(0)) >= 2


def pinned(cmd: list[str], core: int | None) -> list[str]:
    """``cmd`` prefixed with ``taskset -c core``; unchanged when ``core`` is None.

    taskset execs the command, so the pid we get back is the measured program's own pid and its
    rusage is the program's alone.
    """
    if core is None:
        return cmd
    return ["taskset", "-c", str(core), *cmd]
