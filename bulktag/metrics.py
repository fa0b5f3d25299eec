"""Prometheus metrics of a run, for node_exporter's textfile collector (``--metrics-file``).

The file is rewritten whole, atomically: the text goes to a temporary file in the same
directory (``.<name>.<random>.tmp``, which the collector ignores: it reads only ``*.prom``),
is fsync-ed, and replaces the old file with ``os.replace``. node_exporter therefore reads
either the previous file or the new one, never half of one, and a crash leaves the previous
file in place. The text itself comes from prometheus-client (``generate_latest``), not from
our own formatting.

    bulktag_rows_total{outcome}                  counter rows recorded, by outcome (all four)
    bulktag_requests_total{status}               counter answers, by HTTP status or transport
                                                         error class ("connect", "timeout" ...)
    bulktag_retries_total                        counter requests beyond the first per row sent
    bulktag_skipped_rows_total{reason}           counter "done" (ok in an earlier run),
                                                         "earlier_failure", "duplicate",
                                                         "other_shard"
    bulktag_rows_read_total                      counter data rows read from the input
    bulktag_allowed_rate_requests_per_second     gauge   the rate pacing allows now (≤ --rate)
    bulktag_request_rate_requests_per_second     gauge   requests / run duration
    bulktag_accepted_rate_requests_per_second    gauge   requests the cloud accepted / run
                                                         duration: the pace it takes
    bulktag_run_duration_seconds                 gauge
    bulktag_run_start_timestamp_seconds          gauge
    bulktag_last_success_timestamp_seconds       gauge   end of the last run that exited 0
    bulktag_exit_code                            gauge   the finished run's exit code (absent
                                                         while it runs)
    bulktag_run_finished                         gauge   0 while running, 1 once finished
    bulktag_run_info{run_id,schema_version}      gauge   1: which run wrote the file (the
                                                         run_id of its log events and summary)

With ``--shard K/N`` (N > 1) every sample also carries ``shard="K/N"``: four shards on one
node write four files, and node_exporter refuses the same sample from two files.

Counters describe the current run and start again from 0 with the next one (Prometheus reads
that as a counter reset). The last-success timestamp outlives runs: it is read back from the
file being replaced, so a failing night keeps the last good night's time and
``time() - bulktag_last_success_timestamp_seconds > 86400`` alerts. Before any run succeeded
the metric is absent (alert on ``absent(...)``). A run "succeeded" when it exited 0; with
``--accept-earlier-failures``, rows that failed on an earlier night (a gone image's 404,
reported then) do not stop that.

``bulktag_retries_total`` is exact once the run finished; while it runs it also counts the
first attempt of rows not settled yet (at most ``--concurrency`` plus rows waiting to retry).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import anyio
import anyio.to_thread
import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from bulktag.model import Outcome
from bulktag.summary import Tally

LAST_SUCCESS = "bulktag_last_success_timestamp_seconds"
_FILE_MODE = 0o644  # node_exporter usually runs as another user: it must be able to read it


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The numbers of one write, copied out of the live tally."""

    rows: dict[str, int]
    statuses: dict[str, int]
    retries: int
    skipped_done: int
    skipped_still_bad: int
    skipped_duplicate: int
    skipped_other_shard: int
    read: int
    allowed_rate: float
    request_rate: float
    accepted_rate: float
    duration: float
    started_at: float
    last_success: float | None
    finished: bool
    exit_code: int | None = None  # once finished
    labels: tuple[tuple[str, str], ...] = ()  # on every sample (the shard)
    info: tuple[tuple[str, str], ...] = ()  # bulktag_run_info's labels


def _counter(name: str, text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, text, value=value)


def _labelled(name: str, text: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, text, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def families(s: Snapshot) -> list[Metric]:
    """The metric families of one snapshot, in the order the module docstring lists them."""
    found: list[Metric] = [
        _labelled("bulktag_rows", "Rows recorded in the journal, by outcome.", "outcome", s.rows),
        _labelled(
            "bulktag_requests", "Answers, by HTTP status or transport error.", "status", s.statuses
        ),
        _counter("bulktag_retries", "Requests beyond the first for each row sent.", s.retries),
        _labelled(
            "bulktag_skipped_rows",
            "Rows not sent: done by an earlier run, failed or invalid in an earlier run, "
            "a duplicate, or another shard's.",
            "reason",
            {
                "done": s.skipped_done,
                "earlier_failure": s.skipped_still_bad,
                "duplicate": s.skipped_duplicate,
                "other_shard": s.skipped_other_shard,
            },
        ),
        _counter("bulktag_rows_read", "Data rows read from the input.", s.read),
        GaugeMetricFamily(
            "bulktag_allowed_rate_requests_per_second",
            "Requests per second pacing allows now (at most --rate).",
            value=s.allowed_rate,
        ),
        GaugeMetricFamily(
            "bulktag_request_rate_requests_per_second",
            "Requests sent per second, averaged over the run.",
            value=s.request_rate,
        ),
        GaugeMetricFamily(
            "bulktag_accepted_rate_requests_per_second",
            "Requests per second the cloud accepted, averaged over the run: its pace.",
            value=s.accepted_rate,
        ),
        GaugeMetricFamily("bulktag_run_duration_seconds", "Run time so far.", value=s.duration),
        GaugeMetricFamily(
            "bulktag_run_start_timestamp_seconds", "When the run started.", value=s.started_at
        ),
    ]
    if s.last_success is not None:
        found.append(
            GaugeMetricFamily(LAST_SUCCESS, "When a run last exited 0.", value=s.last_success)
        )
    if s.exit_code is not None:
        found.append(
            GaugeMetricFamily(
                "bulktag_exit_code", "The finished run's exit code.", value=s.exit_code
            )
        )
    found.append(
        GaugeMetricFamily(
            "bulktag_run_finished",
            "1 once the run finished, 0 while it runs.",
            value=float(s.finished),
        )
    )
    if s.info:
        info = GaugeMetricFamily(
            "bulktag_run_info", "The run that wrote this file.", labels=[k for k, _ in s.info]
        )
        info.add_metric([v for _, v in s.info], 1)
        found.append(info)
    return _with_labels(found, dict(s.labels))


def _with_labels(found: list[Metric], labels: dict[str, str]) -> list[Metric]:
    """Every sample of ``found`` with ``labels`` added (its own labels kept)."""
    if labels:
        for family in found:
            family.samples = [s._replace(labels=labels | s.labels) for s in family.samples]
    return found


class _Fixed(Collector):
    """A collector that yields families computed beforehand (one registry per write)."""

    def __init__(self, found: list[Metric]) -> None:
        self._found = found

    def collect(self) -> Iterable[Metric]:
        return self._found


def render(snapshot: Snapshot) -> bytes:
    """The Prometheus text format of ``snapshot``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families(snapshot)))
    return generate_latest(registry)


def previous_success(path: Path) -> float | None:
    """The last-success timestamp in an existing metrics file (None if none or unreadable)."""
    try:
        text = path.read_text(encoding="utf-8")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS:
                    return float(sample.value)
    except (OSError, ValueError, UnicodeDecodeError):
        return None  # an old or foreign file must not stop the run: it is about to be replaced
    return None


def replace_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), _FILE_MODE)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


class MetricsWriter:
    """Rewrites one metrics file from a run's :class:`~bulktag.summary.Tally`."""

    def __init__(
        self,
        path: Path,
        *,
        wall: Callable[[], float] = time.time,
        labels: Mapping[str, str] | None = None,
        info: Mapping[str, str] | None = None,
    ) -> None:
        self.path = path
        self._wall = wall
        self._labels = tuple(sorted((labels or {}).items()))
        self._info = tuple(sorted((info or {}).items()))
        self._started_at: float | None = None  # fixed at the first write
        self._last_success = previous_success(path)

    def snapshot(
        self,
        tally: Tally,
        *,
        allowed_rate: float,
        elapsed: float,
        finished: bool,
        succeeded: bool,
        accepted: int = 0,
        exit_code: int | None = None,
    ) -> Snapshot:
        """Copy the numbers out of ``tally`` (call it in the event loop that updates it)."""
        now = self._wall()
        if self._started_at is None:
            self._started_at = now - elapsed
        if finished and succeeded:
            self._last_success = now
        sent = tally.recorded - tally.outcomes[Outcome.INVALID]
        return Snapshot(
            rows={outcome.value: tally.outcomes[outcome] for outcome in Outcome},
            statuses=dict(tally.statuses),
            retries=max(0, tally.attempts - sent),
            skipped_done=tally.skipped_done,
            skipped_still_bad=tally.skipped_still_bad,
            skipped_duplicate=tally.skipped_duplicate,
            skipped_other_shard=tally.skipped_other_shard,
            read=tally.read,
            allowed_rate=allowed_rate,
            request_rate=tally.attempts / elapsed if elapsed > 0 else 0.0,
            accepted_rate=accepted / elapsed if elapsed > 0 else 0.0,
            duration=elapsed,
            started_at=self._started_at,
            last_success=self._last_success,
            finished=finished,
            exit_code=exit_code,
            labels=self._labels,
            info=self._info,
        )

    def write(self, snapshot: Snapshot) -> None:
        """Rewrite the file now with ``snapshot`` (raises OSError: missing directory, disk full...).

        Take the snapshot in the event loop that updates the tally; the write itself may then run
        in a thread."""
        replace_atomically(self.path, render(snapshot))


# ── during a run ────────────────────────────────────────────────────────────────────────────


class _PacerView(Protocol):
    @property
    def rate(self) -> float: ...

    @property
    def accepted_total(self) -> int: ...


class RunningEngine(Protocol):
    """What :func:`periodically` reads of :class:`bulktag.engine.Engine`."""

    @property
    def tally(self) -> Tally: ...

    @property
    def pacer(self) -> _PacerView: ...


async def periodically(
    engine: RunningEngine,
    writer: MetricsWriter,
    interval: float,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Write the metrics now and every ``interval`` seconds, until cancelled.

    A failed write is logged once and retried next time: metrics must never stop a run."""
    started = clock()
    log = structlog.get_logger()
    warned = False
    while True:
        snapshot = writer.snapshot(
            engine.tally,
            allowed_rate=engine.pacer.rate,
            accepted=engine.pacer.accepted_total,
            elapsed=clock() - started,
            finished=False,
            succeeded=False,
        )
        try:  # the fsync may take a while on a busy disk: not in the event loop
            await anyio.to_thread.run_sync(writer.write, snapshot)
            warned = False
        except OSError as exc:
            if not warned:
                log.warning(
                    "metrics_write_failed", path=str(writer.path), error=exc.strerror or str(exc)
                )
            warned = True
        await anyio.sleep(interval)
