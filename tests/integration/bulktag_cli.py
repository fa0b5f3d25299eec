"""Run the bulktag CLI as a user would: a subprocess of this interpreter, then read its journal."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

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


def write_input(path: Path, rows: Iterable[tuple[str, str]]) -> Path:
    """The CSV bulktag reads: a header, then one ``image_id,tag`` pair per line."""
    lines = ["image_id,tag", *(f"{image_id},{tag}" for image_id, tag in rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def grouped(images: Sequence[str], tags_per_image: int, prefix: str = "t") -> list[tuple[str, str]]:
    """Every image's tags next to each other: the input order that makes overlapping writes
    to one image most likely, and the way real inventories are usually exported."""
    return [(image, f"{prefix}{n:02d}") for image in images for n in range(tags_per_image)]


def isolated_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without anything that could point bulktag at another cloud:
    no OS_* variables, and a HOME with no clouds.yaml."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["HOME"] = str(home)
    env.pop("XDG_CONFIG_HOME", None)
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class Invocation:
    """One ``bulktag run``: its arguments, working directory and environment."""

    args: Sequence[str]
    cwd: Path
    env: Mapping[str, str]

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", "bulktag", "run", *self.args]

    def run(self, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv,
            cwd=self.cwd,
            env=dict(self.env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=dict(self.env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )


def describe(done: subprocess.CompletedProcess[str]) -> str:
    """For assertion messages: the exit code and the end of what bulktag printed."""
    return (
        f"exit {done.returncode}\n--- stdout ---\n{done.stdout[-3000:]}"
        f"\n--- stderr ---\n{done.stderr[-3000:]}"
    )


def read_journal(path: Path) -> list[dict[str, Any]]:
    """Every complete record; a torn last line (a run killed mid-write) is not a record."""
    records = []
    for line in path.read_text().splitlines(keepends=True):
        if line.endswith("\n") and line.strip():
            records.append(json.loads(line))
    return records


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
        held = len(read_journal(journal)) if journal.exists() else 0
        if held >= count:
            return held
        time.sleep(0.05)
    pytest.fail(f"fewer than {count} rows journaled after {timeout:.0f}s")
