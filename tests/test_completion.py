"""``bulktag completion bash|zsh``: scripts generated from the parser, so every flag the CLI has
completes, and the bash one completes what a user types (run by a real bash here)."""

from __future__ import annotations

import io
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from bulktag.cli import _COMMANDS, build_parser, known_flags, main
from bulktag.environment import Environment


def _script(shell: str, tmp_path: Path) -> str:
    stdout = io.StringIO()
    environment = Environment({}, io.BytesIO(), stdout, io.StringIO(), tmp_path)
    assert 0 == main(["completion", shell], environment)
    return stdout.getvalue()


def _every_flag() -> dict[str, set[str]]:
    """Each command's flags, as the parser has them (the hidden testing flag aside)."""
    found = {}
    for name in _COMMANDS:
        parser = build_parser([name])
        found[name] = set(known_flags(parser)) - {"--unsafe-no-image-lock", "--version"}
    return found


def _complete(script: Path, words: list[str]) -> list[str]:
    """What bash offers for the last of ``words`` (COMP_WORDS as bash sets them)."""
    program = (
        f"source {shlex.quote(str(script))}; COMP_WORDS=({shlex.join(words)});"
        f" COMP_CWORD={len(words) - 1}; _bulktag; printf '%s\\n' \"${{COMPREPLY[@]}}\""
    )
    done = subprocess.run(
        ["bash", "--norc", "-c", program], capture_output=True, text=True, timeout=30, check=True
    )
    return [line for line in done.stdout.splitlines() if line]


@pytest.fixture
def bash_script(tmp_path: Path) -> Path:
    if shutil.which("bash") is None:
        pytest.skip("no bash here")
    path = tmp_path / "bulktag.bash"
    path.write_text(_script("bash", tmp_path))
    return path


# what is typed → what must be offered (and, where given, nothing else)
TYPED: dict[tuple[str, ...], set[str]] = {
    ("bulktag", ""): {"run", "report", "verify", "serve-fake", "demo", "completion"},
    ("bulktag", "run", "--ra"): {"--rate"},
    ("bulktag", "run", "--dry"): {"--dry-run", "--dry-run-online"},
    ("bulktag", "run", "in.csv", "--log-format", ""): {"auto", "console", "json"},
    ("bulktag", "run", "--api", "i"): {"ims"},
    ("bulktag", "report", "--format", ""): {"text", "json"},
    ("bulktag", "serve-fake", "--limiter-st"): {"--limiter-status"},
    ("bulktag", "completion", ""): {"bash", "zsh"},
}


@pytest.mark.parametrize("typed", list(TYPED), ids=" ".join)
def test_bash_completes_what_is_typed(bash_script: Path, typed: tuple[str, ...]) -> None:
    assert TYPED[typed] == set(_complete(bash_script, list(typed)))


@pytest.mark.parametrize("command", [c for c in _COMMANDS if c != "completion"])
def test_bash_offers_every_flag_of_every_command(bash_script: Path, command: str) -> None:
    offered = set(_complete(bash_script, ["bulktag", command, "-"]))
    assert _every_flag()[command] == offered


def test_zsh_names_every_flag_and_parses(tmp_path: Path) -> None:
    script = _script("zsh", tmp_path)
    assert script.startswith("#compdef bulktag")
    for command, flags in _every_flag().items():
        for flag in flags:
            assert f"'{flag}[" in script, (command, flag)
    if shutil.which("zsh") is None:
        pytest.skip("no zsh here to check the syntax")
    path = tmp_path / "_bulktag"
    path.write_text(script)
    subprocess.run(["zsh", "-n", str(path)], check=True, timeout=30)


def test_an_unknown_shell_is_a_usage_error(tmp_path: Path) -> None:
    environment = Environment({}, io.BytesIO(), io.StringIO(), io.StringIO(), tmp_path)
    assert 2 == main(["completion", "fish"], environment)
