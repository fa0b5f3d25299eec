"""Run the bulktag CLI as a user would: a subprocess of this interpreter, then read its journal."""

from __future__ import annotations

import functools
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import read_journal

#: Far above what real Glance does here (15-35 PUTs/s): the tests measure Glance, not the limiter.
UNLIMITED_RATE = "10000"


@functools.cache
def supports(flag: str) -> bool:
    """Whether ``bulktag run`` accepts ``flag``, hidden testing flags included (``--help``
    does not list those, and argparse exits 0 on ``--help`` before it sees unknown flags)."""
    from bulktag.cli import build_parser

    # "1" is the flag's value if it takes one, else the input file: either way the flag lands
    # in the leftovers only if ``run`` does not know it. argparse exits only over a value it
    # could not convert, which means it knew the flag.
    try:
        _, leftovers = build_parser(["run"]).parse_known_args(["run", flag, "1"])
    except SystemExit:
        return True
    return flag not in leftovers


def require(flag: str, why: str) -> None:
    """Skip the calling test until the bulktag CLI has ``flag`` (work landing in parallel).

    Checked at run time, not as a collection-time ``skipif``: probing the CLI costs a
    subprocess, which the default (integration-deselected) test run should not pay.
    """
    if not supports(flag):
        pytest.skip(f"bulktag run has no {flag} yet ({why})")


@dataclass(frozen=True)
class Invocation:
    """One ``bulktag run``: its arguments, working directory and environment."""

    args: Sequence[str]
    cwd: Path
    env: Mapping[str, str]

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", "bulktag", "run", *self.args]

    def _spawn(self) -> dict[str, Any]:
        """How either way of running it starts the process: no terminal, nothing on stdin."""
        return {"cwd": self.cwd, "env": dict(self.env), "stdin": subprocess.DEVNULL}

    def run(self, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv, **self._spawn(), capture_output=True, text=True, timeout=timeout, check=False
        )

    def start(self, log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                self.argv, **self._spawn(), stdout=out, stderr=subprocess.STDOUT
            )


def describe(done: subprocess.CompletedProcess[str]) -> str:
    """For assertion messages: the exit code and the end of what bulktag printed."""
    return (
        f"exit {done.returncode}\n--- stdout ---\n{done.stdout[-3000:]}"
        f"\n--- stderr ---\n{done.stderr[-3000:]}"
    )


def settled_by_line(records: Iterable[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The last record of each input line (a resumed run appends; the latest word counts)."""
    return {int(r["line"]): r for r in records}


def wait_for_records(
    journal: Path, count: int, proc: subprocess.Popen[bytes], timeout: float = 120
) -> int:
    """Wait until the journal holds ``count`` records while ``proc`` is still running; return
    how many it holds. Fails if the run ends first: a mid-run action would then prove nothing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"bulktag exited ({proc.returncode}) before {count} rows were journaled")
        held = len(read_journal(journal, torn_tail=True)) if journal.exists() else 0
        if held >= count:
            return held
        time.sleep(0.05)
    pytest.fail(f"fewer than {count} rows journaled after {timeout:.0f}s")
