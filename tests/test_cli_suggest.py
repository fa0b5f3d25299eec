"""A mistyped flag is refused (exit 2, one line) and the line names the flag meant; argparse's
abbreviations stay off (``--rat 5`` is not ``--rate 5``)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bulktag.cli import main
from bulktag.environment import Environment

# typed → meant (None: nothing close enough to suggest)
TYPOS: dict[tuple[str, ...], str | None] = {
    ("run", "in.csv", "--rat", "5"): "--rate",
    ("run", "in.csv", "--dryrun"): "--dry-run",
    ("run", "in.csv", "--project", "x"): "--project-id",
    ("run", "in.csv", "--metric-file", "m.prom"): "--metrics-file",
    ("run", "in.csv", "--summery=json"): "--summary",
    ("run", "in.csv", "--endpont", "http://x"): "--endpoint",
    ("report", "j.jsonl", "--formt", "json"): "--format",
    ("verify", "j.jsonl", "--outptu", "x"): "--output",
    ("serve-fake", "--capacty", "5"): "--capacity",
    ("run", "in.csv", "--frobnicate"): None,
}


def _run(argv: tuple[str, ...], tmp_path: Path) -> tuple[int, str]:
    stderr = io.StringIO()
    plain = {"BULKTAG_LOG_FORMAT": "console"}  # the human line itself
    environment = Environment(plain, io.BytesIO(), io.StringIO(), stderr, tmp_path)
    code = main(list(argv), environment)
    return code, stderr.getvalue()


@pytest.mark.parametrize("argv", list(TYPOS), ids=" ".join)
def test_a_typo_is_refused_and_the_flag_meant_is_named(
    argv: tuple[str, ...], tmp_path: Path
) -> None:
    code, stderr = _run(argv, tmp_path)
    assert 2 == code
    [line] = stderr.splitlines()
    meant = TYPOS[argv]
    if meant is None:
        assert "did you mean" not in line
    else:
        assert f"did you mean {meant}?" in line, line


def test_several_typos_are_each_answered(tmp_path: Path) -> None:
    code, stderr = _run(("run", "in.csv", "--rat", "5", "--concurency", "3"), tmp_path)
    assert 2 == code
    assert "--rat → --rate" in stderr
    assert "--concurency → --concurrency" in stderr
