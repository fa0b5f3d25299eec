"""The metrics file: parsed back with prometheus-client's own parser, replaced atomically, and
rewritten periodically while a run goes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bulktag.metrics import MetricsWriter, periodically
from bulktag.model import Outcome
from bulktag.summary import Tally

NOW = 1_800_000_000.0
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(path: Path) -> Samples:
    """Every sample in the file: (name, sorted labels) -> value."""
    samples: Samples = {}
    for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def tally() -> Tally:
    t = Tally(read=14, skipped_done=3, skipped_duplicate=1, skipped_other_shard=2, attempts=11)
    t.outcomes.update({Outcome.OK: 6, Outcome.FAILED: 1, Outcome.GAVE_UP: 0, Outcome.INVALID: 1})
    t.statuses.update({"204": 6, "503": 3, "404": 1, "connect": 1})
    return t


def writer(path: Path, at: float = NOW) -> MetricsWriter:
    return MetricsWriter(path, wall=lambda: at)


def write(metrics: MetricsWriter, tally: Tally, **numbers: Any) -> None:
    """One whole write, as the runner makes it: snapshot the tally, then replace the file."""
    metrics.write(metrics.snapshot(tally, **numbers))


def test_the_file_holds_every_metric_with_the_tally_s_values(tmp_path: Path) -> None:
    path = tmp_path / "bulktag.prom"
    write(writer(path), tally(), allowed_rate=7.5, elapsed=4.0, finished=True, succeeded=False)
    samples = parse(path)
    assert 6 == value(samples, "bulktag_rows_total", outcome="ok")
    assert 1 == value(samples, "bulktag_rows_total", outcome="failed")
    assert 0 == value(samples, "bulktag_rows_total", outcome="gave_up")
    assert 1 == value(samples, "bulktag_rows_total", outcome="invalid")
    assert 3 == value(samples, "bulktag_requests_total", status="503")
    assert 1 == value(samples, "bulktag_requests_total", status="connect")
    assert 4 == value(samples, "bulktag_retries_total")  # 11 requests for 7 rows sent
    assert 3 == value(samples, "bulktag_skipped_rows_total", reason="done")
    assert 1 == value(samples, "bulktag_skipped_rows_total", reason="duplicate")
    assert 2 == value(samples, "bulktag_skipped_rows_total", reason="other_shard")
    assert 14 == value(samples, "bulktag_rows_read_total")
    assert 7.5 == value(samples, "bulktag_allowed_rate_requests_per_second")
    assert 2.75 == value(samples, "bulktag_request_rate_requests_per_second")
    assert 4.0 == value(samples, "bulktag_run_duration_seconds")
    assert NOW - 4.0 == value(samples, "bulktag_run_start_timestamp_seconds")
    assert 1 == value(samples, "bulktag_run_finished")


def test_no_created_samples_clutter_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bulktag.prom"
    write(writer(path), tally(), allowed_rate=1.0, elapsed=1.0, finished=False, succeeded=False)
    assert [] == [name for name, _ in parse(path) if name.endswith("_created")]


def test_a_running_run_says_it_is_not_finished_and_has_no_success_yet(tmp_path: Path) -> None:
    path = tmp_path / "bulktag.prom"
    write(writer(path), Tally(), allowed_rate=10.0, elapsed=0.0, finished=False, succeeded=False)
    samples = parse(path)
    assert 0 == value(samples, "bulktag_run_finished")
    assert 0.0 == value(samples, "bulktag_request_rate_requests_per_second")
    assert "bulktag_last_success_timestamp_seconds" not in {name for name, _ in samples}


def test_a_run_that_exited_0_sets_the_last_success_time(tmp_path: Path) -> None:
    path = tmp_path / "bulktag.prom"
    write(writer(path), tally(), allowed_rate=1.0, elapsed=1.0, finished=True, succeeded=True)
    assert NOW == value(parse(path), "bulktag_last_success_timestamp_seconds")


def test_a_failed_run_keeps_the_previous_run_s_last_success_time(tmp_path: Path) -> None:
    path = tmp_path / "bulktag.prom"
    write(writer(path, at=NOW), tally(), allowed_rate=1, elapsed=1, finished=True, succeeded=True)
    next_night = writer(path, at=NOW + 86400)
    write(next_night, tally(), allowed_rate=1, elapsed=1, finished=True, succeeded=False)
    samples = parse(path)
    assert NOW == value(samples, "bulktag_last_success_timestamp_seconds")
    assert NOW + 86400 - 1 == value(samples, "bulktag_run_start_timestamp_seconds")


def test_a_garbled_old_file_is_replaced_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "bulktag.prom"
    path.write_bytes(b"\xff\xfe this is not the text format {{{\n")
    write(writer(path), tally(), allowed_rate=1, elapsed=1, finished=True, succeeded=False)
    assert 6 == value(parse(path), "bulktag_rows_total", outcome="ok")


def test_the_start_time_stays_fixed_across_writes(tmp_path: Path) -> None:
    path = tmp_path / "bulktag.prom"
    clock = iter([NOW, NOW + 30.5])
    metrics = MetricsWriter(path, wall=lambda: next(clock))
    write(metrics, tally(), allowed_rate=1, elapsed=0.5, finished=False, succeeded=False)
    write(metrics, tally(), allowed_rate=1, elapsed=31.0, finished=False, succeeded=False)
    assert NOW - 0.5 == value(parse(path), "bulktag_run_start_timestamp_seconds")


def test_replacing_leaves_one_readable_file_and_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "bulktag.prom"
    metrics = writer(path)
    for _ in range(3):
        write(metrics, tally(), allowed_rate=1, elapsed=1, finished=False, succeeded=False)
    assert ["bulktag.prom"] == os.listdir(tmp_path)
    assert 0o644 == path.stat().st_mode & 0o777  # node_exporter runs as another user


def test_replacing_swaps_the_inode_instead_of_rewriting_the_file_in_place(tmp_path: Path) -> None:
    """A reader holding the old file open still reads the whole old content."""
    path = tmp_path / "bulktag.prom"
    metrics = writer(path)
    write(metrics, Tally(), allowed_rate=1, elapsed=1, finished=False, succeeded=False)
    with path.open("rb") as old:
        write(metrics, tally(), allowed_rate=1, elapsed=1, finished=True, succeeded=False)
        assert b"bulktag_run_finished 0.0" in old.read()
    assert b"bulktag_run_finished 1.0" in path.read_bytes()


def test_a_write_into_a_missing_directory_raises_and_leaves_nothing(tmp_path: Path) -> None:
    metrics = writer(tmp_path / "gone" / "bulktag.prom")
    with pytest.raises(FileNotFoundError):
        write(metrics, tally(), allowed_rate=1, elapsed=1, finished=False, succeeded=False)
    assert [] == os.listdir(tmp_path)


@dataclass
class _Pacer:
    rate: float
    accepted_total: int = 0


@dataclass
class _Engine:
    tally: Tally = field(default_factory=Tally)
    pacer: _Pacer = field(default_factory=lambda: _Pacer(rate=12.5))


@pytest.mark.asyncio
async def test_the_periodic_writer_rewrites_the_file_as_the_run_goes(tmp_path: Path) -> None:
    path = tmp_path / "bulktag.prom"
    engine = _Engine()
    seen: list[float] = []
    async with anyio.create_task_group() as group:
        group.start_soon(periodically, engine, MetricsWriter(path), 0.02)
        for done in range(1, 4):
            engine.tally.outcomes[Outcome.OK] = done
            await anyio.sleep(0.1)
            seen.append(value(parse(path), "bulktag_rows_total", outcome="ok"))
        group.cancel_scope.cancel()
    assert [1, 2, 3] == seen
    samples = parse(path)
    assert 12.5 == value(samples, "bulktag_allowed_rate_requests_per_second")
    assert 0 == value(samples, "bulktag_run_finished")
    assert ["bulktag.prom"] == os.listdir(tmp_path)


@pytest.mark.asyncio
async def test_the_periodic_writer_survives_a_failing_write(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    engine = _Engine()
    engine.tally.outcomes[Outcome.OK] = 5
    async with anyio.create_task_group() as group:
        group.start_soon(periodically, engine, MetricsWriter(directory / "bulktag.prom"), 0.02)
        await anyio.sleep(0.05)  # writes fail: the directory does not exist yet
        directory.mkdir()
        await anyio.sleep(0.1)
        group.cancel_scope.cancel()
    assert 5 == value(parse(directory / "bulktag.prom"), "bulktag_rows_total", outcome="ok")


def test_the_snapshot_copies_the_tally_s_counters(tmp_path: Path) -> None:
    """The snapshot is taken in the event loop; the write may run in a thread meanwhile."""
    live = tally()
    snapshot = writer(tmp_path / "m.prom").snapshot(
        live, allowed_rate=1, elapsed=1, finished=False, succeeded=False
    )
    live.outcomes[Outcome.OK] += 1
    live.statuses["204"] += 1
    assert (6, 6) == (snapshot.rows["ok"], snapshot.statuses["204"])
