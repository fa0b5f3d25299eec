"""Counting outcomes, the consecutive-failure breaker, and the exit code. Pure.

The exit codes themselves are listed in :mod:`bulktag.errors`.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from bulktag.errors import ExitCode
from bulktag.journal.format import error_class
from bulktag.model import Outcome, Result

# The version of what a run says about itself for programs to read: the ``run_finished`` log
# event, the ``--summary json`` document and ``bulktag_run_info`` in the metrics (and the
# ``report --format json`` object). Fields may be added within a version; one renamed or
# removed, or a meaning changed, is a new version.
SCHEMA_VERSION = 1


def new_run_id() -> str:
    """An id for one run, in every log event, the summary document and the metrics."""
    return uuid.uuid4().hex


def summary_document(
    run_id: str, code: ExitCode, fields: Mapping[str, Any] | None = None, error: str | None = None
) -> dict[str, Any]:
    """``--summary json``: what a wrapper script needs, without parsing logs. ``fields`` are
    the run's (those of ``run_finished``) or the dry run's counts; ``error`` the one line of
    a run that could not start."""
    document: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "exit_code": int(code),
        "exit_status": code.name.lower(),
    }
    if error is not None:
        document["error"] = error
    return document | dict(fields or {})


def write_summary(stream: TextIO, document: Mapping[str, Any]) -> None:
    """One line of JSON on ``stream`` (stdout): ``… | jq .exit_code`` works."""
    try:
        stream.write(json.dumps(document, ensure_ascii=False) + "\n")
        stream.flush()
    except (BrokenPipeError, ValueError, OSError):
        pass  # nobody reads stdout any more; the exit code still tells


@dataclass(slots=True)
class Tally:
    """Counters for one run."""

    outcomes: Counter[Outcome] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)  # every answer: "204", "connect"
    read: int = 0  # data rows read from the input
    skipped_done: int = 0  # ok in an earlier run: not sent, not recorded
    skipped_still_bad: int = 0  # failed or invalid in an earlier run: not sent, still not ok
    skipped_duplicate: int = 0  # the same pair earlier in this input
    skipped_other_shard: int = 0  # belongs to another --shard
    attempts: int = 0  # requests sent, retries included

    def add(self, result: Result) -> None:
        self.outcomes[result.outcome] += 1

    def answered(self, status: int | None, error: str | None) -> None:
        """Count one answer (every attempt, retries included)."""
        # error_class's first rule inline: this runs for every answer.
        self.statuses[str(status) if status is not None else error_class(status, error)] += 1

    @property
    def recorded(self) -> int:
        return sum(self.outcomes.values())

    @property
    def problems(self) -> int:
        """Rows not ok, this run's and earlier runs' alike: a rerun that skips a failed row
        must not exit 0 as if the tag were on the image."""
        return self.recorded - self.outcomes[Outcome.OK] + self.skipped_still_bad


def _status_label(result: Result) -> str:
    return error_class(result.status, result.error)


class FailureBreaker:
    """Trips after ``threshold`` consecutive rows failed the same way (0 disables it).

    A 403 on every image, or every request refused, means the run is pointed at the wrong
    project or endpoint: better to stop and say so than to burn through a million rows.
    """

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self._signature: tuple[Outcome, str] | None = None
        self._count = 0
        self.clear = True  # no failure since the last ok: an ok row changes nothing

    def observe(self, result: Result) -> str | None:
        """Feed a result; returns the reason to stop when the breaker trips."""
        if result.outcome is Outcome.INVALID:  # a local rejection says nothing about the cloud
            return None
        if result.attempts == 0 and result.outcome is Outcome.FAILED:
            return None  # not sent (its image refused an earlier row): nothing new either
        if result.outcome is Outcome.OK:
            self._signature, self._count, self.clear = None, 0, True
            return None
        self.clear = False
        signature = (result.outcome, _status_label(result))
        if signature == self._signature:
            self._count += 1
        else:
            self._signature, self._count = signature, 1
        if self.threshold and self._count >= self.threshold:
            what = f"HTTP {result.status}" if result.status else signature[1]
            return (
                f"stopped after {self._count} consecutive rows {result.outcome.value} with "
                f"{what} (last: {result.error or 'no message'}); check the endpoint, project "
                f"and permissions (threshold: --max-consecutive-failures)"
            )
        return None


def exit_code(
    tally: Tally,
    aborted: bool,
    interrupted: bool,
    incomplete: bool = False,
    outage: bool = False,
    *,
    accept_earlier_failures: bool = False,
) -> ExitCode:
    """The run's exit code. ``accept_earlier_failures``: rows that failed (or were invalid) in
    an earlier run and were skipped now count as done — they were reported that night — so a
    rerun over an inventory with a few gone images can exit 0 (and advance last-success)."""
    if aborted:
        return ExitCode.ABORTED
    if interrupted:
        return ExitCode.INTERRUPTED
    if outage:
        return ExitCode.TEMPFAIL
    if incomplete:
        return ExitCode.INCOMPLETE
    problems = tally.problems - (tally.skipped_still_bad if accept_earlier_failures else 0)
    return ExitCode.SOME_FAILED if problems else ExitCode.OK


def summary_fields(tally: Tally, elapsed: float) -> dict[str, object]:
    """The end-of-run numbers, as one flat mapping (the JSON log event and the table share it)."""
    return {
        "read": tally.read,
        "ok": tally.outcomes[Outcome.OK],
        "failed": tally.outcomes[Outcome.FAILED],
        "gave_up": tally.outcomes[Outcome.GAVE_UP],
        "invalid": tally.outcomes[Outcome.INVALID],
        "skipped_done": tally.skipped_done,
        "skipped_still_bad": tally.skipped_still_bad,
        "skipped_duplicate": tally.skipped_duplicate,
        "requests": tally.attempts,
        "statuses": dict(sorted(tally.statuses.items())),
        "elapsed_s": round(elapsed, 3),
        "request_rate": round(tally.attempts / elapsed, 2) if elapsed > 0 else 0.0,
    }


def summary_lines(tally: Tally, elapsed: float, headline: str) -> list[str]:
    """The human-readable end-of-run table."""
    f = summary_fields(tally, elapsed)
    lines = [headline]
    for outcome in Outcome:
        lines.append(f"  {outcome.value:<9}{tally.outcomes[outcome]:>10,}")
    if tally.skipped_done or tally.skipped_duplicate:
        lines.append(
            f"  skipped  {tally.skipped_done:>10,} already done by an earlier run"
            + (f", {tally.skipped_duplicate:,} duplicate rows" if tally.skipped_duplicate else "")
        )
    if tally.skipped_still_bad:
        lines.append(
            f"  earlier  {tally.skipped_still_bad:>10,} failed or invalid in an earlier run, not "
            "sent again (--retry-failed sends the failed ones)"
        )
    statuses = ", ".join(f"{k}: {v:,}" for k, v in sorted(tally.statuses.items()))
    lines.append(
        f"  requests {tally.attempts:>10,} in {elapsed:,.1f} s ({f['request_rate']:,.1f}/s)"
        + (f"; answers {statuses}" if statuses else "")
    )
    return lines
