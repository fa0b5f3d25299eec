"""The builders every kind of test shares: image ids, pairs and their CSV, reading a CSV or a
journal back, and an environment that nothing of the caller's leaks into.

The unit tests, the CLI tests (:mod:`clitools`), the engine tests (:mod:`engine_harness`) and
the integration tests against real OpenStack all take these from here.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bulktag.source import (
    GLANCE_RULES,
    ConstantTag,
    InputRefused,
    Parsed,
    TagRules,
    open_text,
    read_rows,
    read_stream,
)

#: Two image ids and a time (it renders as 2026-11-28T02:00:01.123Z) for the rows and journal
#: records tests write by hand.
U1 = "8a3f1c2e-5b7d-4c1e-9f00-3c2b1a0d9e87"
U2 = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
AT = datetime(2026, 11, 28, 2, 0, 1, 123000, tzinfo=UTC).timestamp()


# ── image ids and pairs ───────────────────────────────────────────────────────────────────────


def image(n: int) -> str:
    """Image ``n``'s id: a UUID easy to read back in a journal (its int is n + 1)."""
    return str(uuid.UUID(int=n + 1))


def image_ids(count: int, seed: int = 0) -> list[str]:
    """Deterministic, distinct version-4 image UUIDs; another seed gives other ids."""
    return [str(uuid.UUID(int=(seed << 64) | (n + 1), version=4)) for n in range(count)]


def grouped(images: Iterable[str], tags_per_image: int, prefix: str = "t") -> list[tuple[str, str]]:
    """Every image's tags next to each other: the order real inventories are exported in, and
    the one that makes overlapping writes to one image most likely."""
    return [(image_id, f"{prefix}{n}") for image_id in images for n in range(tags_per_image)]


def make_pairs(images: int, tags_per_image: int, seed: int = 0) -> list[tuple[str, str]]:
    """``images`` fresh image ids (:func:`image_ids`), each with ``tags_per_image`` tags."""
    return grouped(image_ids(images, seed), tags_per_image)


def csv_text(pairs: Iterable[tuple[str, str]], header: bool = True) -> str:
    """The input bulktag reads: an ``image_id,tag`` header, then one pair a line."""
    lines = (["image_id,tag"] if header else []) + [f"{i},{t}" for i, t in pairs]
    return "".join(line + "\n" for line in lines)


def csv_of(pairs: Iterable[tuple[str, str]]) -> bytes:
    """:func:`csv_text` with a header, as the bytes a reader is handed."""
    return csv_text(pairs).encode()


def write_csv(path: Path, pairs: Iterable[tuple[str, str]], header: bool = True) -> Path:
    path.write_text(csv_text(pairs, header))
    return path


# ── reading an input back ─────────────────────────────────────────────────────────────────────


def read_csv(
    data: bytes, rules: TagRules = GLANCE_RULES, constant: ConstantTag | None = None
) -> list[Parsed]:
    """The rows of ``data`` read as a file (``constant``: ``--tag``'s); a problem of the whole
    input raises InputRefused."""
    return list(read_rows(open_text(io.BytesIO(data)), rules, constant))


def read_both_ways(
    data: bytes, rules: TagRules = GLANCE_RULES, constant: ConstantTag | None = None
) -> list[Parsed]:
    """The rows of ``data`` read as a file (:func:`read_csv`); read as a pipe, it must give
    the same rows, or raise the same refusal."""
    try:
        from_file = read_csv(data, rules, constant)
    except InputRefused as refused:
        from_file_refused = str(refused)
    else:
        assert from_file == list(read_stream(io.BytesIO(data), rules, constant))
        return from_file
    with pytest.raises(InputRefused) as again:
        list(read_stream(io.BytesIO(data), rules, constant))
    assert from_file_refused == str(again.value)
    raise again.value


# ── the journal ───────────────────────────────────────────────────────────────────────────────


def journal_lines(path: Path) -> list[bytes]:
    """The journal's raw lines, newline included (a torn last line has none)."""
    return path.read_bytes().splitlines(keepends=True) if path.exists() else []


def read_journal(path: Path, *, torn_tail: bool = False) -> list[dict[str, Any]]:
    """Every record. A line that is not a JSON record fails the test — a torn last line too,
    unless ``torn_tail`` says the run was killed mid-write (then it is not a record)."""
    lines = journal_lines(path)
    if torn_tail and lines and not lines[-1].endswith(b"\n"):
        lines.pop()
    records = []
    for number, raw in enumerate(lines, 1):
        assert raw.endswith(b"\n"), f"{path}:{number}: unterminated last line {raw[:80]!r}"
        try:
            records.append(json.loads(raw))
        except ValueError as exc:
            raise AssertionError(f"{path}:{number}: not JSON ({exc}): {raw[:200]!r}") from None
    return records


# ── the environment ───────────────────────────────────────────────────────────────────────────


def isolated_env(home: Path, token: str | None = None, **extra: str) -> dict[str, str]:
    """The caller's environment minus anything that could change bulktag's behaviour or point
    it at another cloud: no ``OS_*`` or ``BULKTAG_*`` variables, no XDG config, and ``home``
    (with no clouds.yaml) as HOME. ``token`` becomes ``OS_AUTH_TOKEN``; ``extra`` is added."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OS_", "BULKTAG_")) and k != "XDG_CONFIG_HOME"
    }
    env["HOME"] = str(home)
    if token is not None:
        env["OS_AUTH_TOKEN"] = token
    env.update(extra)
    return env
