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


def test_a_config_file_with_a_mistyped_key_is_refused_naming_the_setting_meant(
    tmp_path: Path,
) -> None:
    (tmp_path / "in.csv").write_text("image_id,tag\n")
    (tmp_path / "night.toml").write_text("ratee = 20\nmax-attempts = 3\n")
    code, stderr = _run(("run", "in.csv", "--config", str(tmp_path / "night.toml")), tmp_path)
    assert 2 == code
    [line] = stderr.splitlines()
    assert "'ratee' (did you mean 'rate'?)" in line, line
    assert "'max-attempts' (did you mean 'max_attempts'?)" in line, line


def test_a_mistyped_variable_is_warned_of_and_the_run_goes_on(tmp_path: Path) -> None:
    """Read by nothing, ``BULKTAG_RAET`` in a systemd unit would leave the rate at its default
    every night with no word of it. Other ``BULKTAG_*`` names are other tools' (the
    integration tier's set-up reads ``BULKTAG_OPENSTACK_VENV``): not a word of those."""
    (tmp_path / "in.csv").write_text(f"image_id,tag\n{'1' * 8}-1111-1111-1111-{'1' * 12},a\n")
    stderr = io.StringIO()
    env = {
        "BULKTAG_LOG_FORMAT": "console",
        "BULKTAG_RAET": "5",
        "BULKTAG_OPENSTACK_VENV": "/venv",
    }
    environment = Environment(env, io.BytesIO(), io.StringIO(), stderr, tmp_path)
    code = main(["run", str(tmp_path / "in.csv"), "--dry-run"], environment)
    assert 0 == code, stderr.getvalue()
    [warning] = [line for line in stderr.getvalue().splitlines() if "unknown_variable" in line]
    assert "variable=BULKTAG_RAET" in warning
    assert "did_you_mean=BULKTAG_RATE" in warning
    assert "OPENSTACK_VENV" not in stderr.getvalue()
