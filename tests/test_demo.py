"""The README's "see it work" command must stay true: `bulktag demo` runs the whole tour
(interrupt, resume, pushback) against the fake server and exits 0 only if it went as designed."""

from __future__ import annotations

import subprocess
import sys


def test_the_demo_runs_the_tour_and_says_it_went_as_expected() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bulktag", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert 0 == done.returncode, done.stdout + done.stderr
    assert "--- exit code 130 ---" in done.stderr + done.stdout
    assert "demo: as expected" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
