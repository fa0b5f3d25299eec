"""``bulktag report JOURNAL...``: what one or more journals (shards) say, the morning after.

The journals are read once, line by line, in the order given; nothing holds all the records.
What is kept, and what it costs:

* counters per outcome, HTTP status and error class: a few dozen entries;
* the last outcome of every pair, so that a pair that ``gave_up`` and then went ``ok`` on the
  next night counts once, as ``ok``: a dict keyed by :func:`bulktag.journal.pair_key` (a 128-bit
  int), under a hundred bytes per pair. Its values are interned small ints, so they cost
  nothing more. For a pair found in several journals, the journal named last wins: give an
  old journal moved aside by ``--fresh`` before the new one. Shards never share a pair
  (``--shard`` splits by image id), so their order does not matter;
* records per minute of the ``at`` field: one counter entry per minute that saw a record;
* the ``--top`` slowest and most-retried records: two heaps of ``--top`` entries;
* failures grouped by reason: at most ``MAX_REASONS`` groups (the rest are pooled), each with a
  count and the last three examples.

A line that is not a journal record is counted as unreadable; an unterminated last line (a run
killed mid-write) is counted as torn. Neither stops the report.

Human output is a plain-text table. ``--format json`` prints one object whose keys are stable
(new keys may be added; none will be renamed or removed):

    journals        [{path, records, unreadable, torn}] in the order read
    records         journal lines that were records (every attempt-night of a pair counts)
    pairs           distinct pairs (an invalid row is keyed by its input line and content;
                    removing a tag is a pair of its own, apart from adding it; an IMS key
                    set to another value is another pair)
    unreadable      lines that were not records;   torn: unterminated last lines
    outcomes        {ok, failed, gave_up, invalid}: pairs, by their LAST record
    record_outcomes {ok, failed, gave_up, invalid}: every record
    statuses        {"204": n, ..., "none": n}: the last HTTP status of every record
    error_classes   {"404": n, "connect": n, "timeout": n, "invalid": n, ...}: records not ok
    timeline        {first, last, peak_minute, peak_records, per_minute: [{minute, records}]}
                    (RFC 3339 UTC; first/last/peak_minute null when no record has a time)
    slowest         [item] by elapsed_ms, largest first;  most_retried: [item] by attempts
                    item = {journal, journal_line, line, image_id, tag, op, outcome,
                            status, attempts, elapsed_ms, request_id, at}
    failures        [{outcome, error_class, reason, records, pairs_not_ok,
                      examples: [{image_id, tag, request_id}]}] by records, most first;
                    ``records`` counts failure records (history, including pairs that later
                    went ok); ``pairs_not_ok`` counts pairs whose last record is in this group
    all_ok          true when every pair's last outcome is ok (the exit code is then 0)
    schema_version  1 (bulktag.summary.SCHEMA_VERSION, shared with run_finished and metrics)

Exit codes: 0 every pair's last outcome is ok; 1 otherwise; 2 a journal is missing,
unreadable or not a journal at all — a CSV, a binary or an empty file (one line on stderr,
nothing on stdout).
"""

from __future__ import annotations

import argparse
import heapq
import json
import re
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from bulktag.errors import ExitCode
from bulktag.journal import FileStats, Record, read_records, which_is_not_a_journal
from bulktag.model import Outcome
from bulktag.summary import SCHEMA_VERSION
from bulktag.text import escaped, without_controls

DEFAULT_TOP = 10
MAX_REASONS = 500  # distinct failure reasons kept; beyond that, one pooled group
EXAMPLES = 3  # example pairs kept per failure reason
_REASON_LENGTH = 200
_TABLE_ROWS = 24  # the human rate table is squeezed into at most this many buckets
_NICE_WIDTHS = (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440)  # minutes
_OUTCOMES = tuple(Outcome)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
POOLED_REASON = "(more distinct reasons than the report keeps)"
_POOLED_GROUP = ("-", "-", POOLED_REASON)


# ── reading: bulktag.journal.read_records, the one reader ──────────────────────────────────

Item = tuple[str, int, Record]  # (journal, journal_line, record): where a listed record is


# ── classifying ─────────────────────────────────────────────────────────────────────────────


def reason_of(record: Record) -> str:
    """The error message with what varies per row taken out, so that equal causes group."""
    text = " ".join((record.error or "no message").split())
    if record.outcome is Outcome.INVALID:  # "image_id is not a UUID: <the bad value>"
        text = text.split(": ", 1)[0]
    text = _UUID.sub("<uuid>", text)
    return text if len(text) <= _REASON_LENGTH else text[:_REASON_LENGTH] + "…"


# ── aggregating ─────────────────────────────────────────────────────────────────────────────


@dataclass(slots=True)
class FailureGroup:
    outcome: str
    error_class: str
    reason: str
    records: int = 0
    examples: deque[tuple[str | None, str | None, str | None]] = field(
        default_factory=lambda: deque(maxlen=EXAMPLES)
    )


class _Top:
    """The ``size`` records with the largest value; ties go to the record read first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._heap: list[tuple[int, int, Item]] = []

    def offer(self, value: int, order: int, item: Item) -> None:
        entry = (value, -order, item)  # -order: among equals, the newest is evicted first
        if len(self._heap) < self._size:
            heapq.heappush(self._heap, entry)
        elif self._size and entry[:2] > self._heap[0][:2]:
            heapq.heapreplace(self._heap, entry)

    def ranked(self) -> list[Item]:
        return [item for *_, item in sorted(self._heap, key=lambda e: e[:2], reverse=True)]


class Report:
    """Everything the report shows, folded in one record at a time."""

    def __init__(self, top: int = DEFAULT_TOP) -> None:
        self.files: list[FileStats] = []
        self.record_outcomes: Counter[Outcome] = Counter()
        self.statuses: Counter[str] = Counter()
        self.error_classes: Counter[str] = Counter()
        self.minutes: Counter[int] = Counter()  # epoch minute -> records
        self.first: float | None = None
        self.last: float | None = None
        self.slowest = _Top(top)
        self.most_retried = _Top(top)
        self.groups: list[FailureGroup] = []
        self._group_ids: dict[tuple[str, str, str], int] = {}
        # pair fingerprint -> code of its last record: (group id + 1) * 4 + outcome index
        self._last: dict[int, int] = {}
        self._codes: dict[int, int] = {}  # interning: equal codes share one int object
        self._order = 0

    def read(self, paths: Iterable[Path]) -> None:
        """Fold in every journal (raises OSError when one cannot be read)."""
        for path in paths:
            stats = FileStats(str(path))
            self.files.append(stats)
            for number, record in read_records(path, stats):
                self.add(record, stats.path, number)

    def add(self, record: Record, journal: str = "", journal_line: int = 0) -> None:
        self._order += 1
        self.record_outcomes[record.outcome] += 1
        self.statuses["none" if record.status is None else str(record.status)] += 1
        group = -1
        if record.outcome is not Outcome.OK:
            self.error_classes[record.error_class] += 1
            group = self._group(record)
        self._remember_last(record.key, group, record.outcome)
        self._note_time(record.at or None)  # 0: the line named no time
        item = (journal, journal_line, record)
        if record.elapsed_ms > 0:  # invalid rows were never sent: not "fast", just not timed
            self.slowest.offer(record.elapsed_ms, self._order, item)
        if record.attempts > 1:  # one attempt is not a retry
            self.most_retried.offer(record.attempts, self._order, item)

    def _group(self, record: Record) -> int:
        key = (record.outcome.value, record.error_class, reason_of(record))
        group_id = self._group_ids.get(key)
        if group_id is None:
            if len(self.groups) >= MAX_REASONS:
                key = _POOLED_GROUP
                group_id = self._group_ids.get(key)
            if group_id is None:
                group_id = self._group_ids[key] = len(self.groups)
                self.groups.append(FailureGroup(*key))
        group = self.groups[group_id]
        group.records += 1
        group.examples.append((record.image_id, record.tag, record.request_id))
        return group_id

    def _remember_last(self, key: int, group: int, outcome: Outcome) -> None:
        code = (group + 1) * 4 + _OUTCOMES.index(outcome)
        self._last[key] = self._codes.setdefault(code, code)

    def _note_time(self, at: float | None) -> None:
        if at is None:
            return
        self.minutes[int(at // 60)] += 1
        self.first = at if self.first is None else min(self.first, at)
        self.last = at if self.last is None else max(self.last, at)

    # ── results ─────────────────────────────────────────────────────────────────────────

    @property
    def records(self) -> int:
        return sum(self.record_outcomes.values())

    @property
    def pairs(self) -> int:
        return len(self._last)

    @property
    def unreadable(self) -> int:
        return sum(stats.unreadable for stats in self.files)

    @property
    def torn(self) -> int:
        return sum(stats.torn for stats in self.files)

    def outcomes(self) -> Counter[Outcome]:
        """Pairs by the outcome of their last record."""
        by_code = Counter(self._last.values())
        counts: Counter[Outcome] = Counter()
        for code, n in by_code.items():
            counts[_OUTCOMES[code % 4]] += n
        return counts

    def pairs_not_ok(self) -> Counter[int]:
        """Group id -> pairs whose last record is a failure of that group."""
        by_code = Counter(self._last.values())
        return Counter({code // 4 - 1: n for code, n in by_code.items() if code // 4})

    @property
    def all_ok(self) -> bool:
        return self.pairs == self.outcomes()[Outcome.OK]


# ── JSON ────────────────────────────────────────────────────────────────────────────────────


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def to_json(report: Report) -> dict[str, Any]:
    """The ``--format json`` object (its keys are documented in the module docstring)."""
    return {
        "journals": [_file_json(stats) for stats in report.files],
        "records": report.records,
        "pairs": report.pairs,
        "unreadable": report.unreadable,
        "torn": report.torn,
        "outcomes": _outcome_json(report.outcomes()),
        "record_outcomes": _outcome_json(report.record_outcomes),
        "statuses": dict(sorted(report.statuses.items())),
        "error_classes": dict(report.error_classes.most_common()),
        "timeline": _timeline_json(report),
        "slowest": [_item_json(item) for item in report.slowest.ranked()],
        "most_retried": [_item_json(item) for item in report.most_retried.ranked()],
        "failures": _failures_json(report),
        "all_ok": report.all_ok,
        "schema_version": SCHEMA_VERSION,
    }


def _file_json(stats: FileStats) -> dict[str, Any]:
    return {
        "path": stats.path,
        "records": stats.records,
        "unreadable": stats.unreadable,
        "torn": stats.torn,
    }


def _outcome_json(counts: Counter[Outcome]) -> dict[str, int]:
    return {outcome.value: counts[outcome] for outcome in Outcome}


def _timeline_json(report: Report) -> dict[str, Any]:
    peak = max(report.minutes.items(), key=lambda item: (item[1], -item[0]), default=None)
    return {
        "first": iso(report.first),
        "last": iso(report.last),
        "peak_minute": iso(peak[0] * 60) if peak else None,
        "peak_records": peak[1] if peak else 0,
        "per_minute": [
            {"minute": iso(minute * 60), "records": n}
            for minute, n in sorted(report.minutes.items())
        ],
    }


def _item_json(item: Item) -> dict[str, Any]:
    journal, journal_line, record = item
    return {
        "journal": journal,
        "journal_line": journal_line,
        "line": record.line or None,  # 0: the line named no input line
        "image_id": record.image_id,
        "tag": record.tag,
        "op": record.op,
        "outcome": record.outcome.value,
        "status": record.status,
        "attempts": record.attempts,
        "elapsed_ms": record.elapsed_ms,
        "request_id": record.request_id,
        "at": iso(record.at or None),
    }


def _failures_json(report: Report) -> list[dict[str, Any]]:
    not_ok = report.pairs_not_ok()
    ranked = sorted(enumerate(report.groups), key=lambda item: -item[1].records)
    return [
        {
            "outcome": group.outcome,
            "error_class": group.error_class,
            "reason": group.reason,
            "records": group.records,
            "pairs_not_ok": not_ok[group_id],
            "examples": [
                {"image_id": image_id, "tag": tag, "request_id": request_id}
                for image_id, tag, request_id in group.examples
            ],
        }
        for group_id, group in ranked
    ]


# ── human ───────────────────────────────────────────────────────────────────────────────────


def table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    """Aligned plain-text columns; the columns in ``right`` (numbers) are right-aligned.
    Cells come from journals (tags, errors quoting a server): control characters escaped."""
    header, rows = [escaped(cell) for cell in header], [[escaped(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        parts = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return ("  " + "  ".join(parts)).rstrip()

    return [line(header), *(line(row) for row in rows)]


def human_lines(data: dict[str, Any]) -> list[str]:
    """The default output, built from the same object as ``--format json``."""
    return [
        *_headline(data),
        *_counts("Outcomes (pairs, by their last record)", data["outcomes"], "outcome"),
        *_counts("HTTP status (every record; none: no answer)", data["statuses"], "status"),
        *_counts("Error classes (records not ok)", data["error_classes"], "class"),
        *_timeline_lines(data["timeline"]),
        *_items("Slowest (elapsed from first attempt to outcome)", data["slowest"]),
        *_items("Most retried", data["most_retried"]),
        *_failure_lines(data["failures"]),
    ]


def _headline(data: dict[str, Any]) -> list[str]:
    extra = [
        f"{data['unreadable']:,} unreadable lines" if data["unreadable"] else "",
        f"{data['torn']:,} torn last lines" if data["torn"] else "",
    ]
    notes = ", ".join(part for part in extra if part)
    files = data["journals"]
    lines = [
        f"bulktag report: {len(files)} journal{'s' if len(files) != 1 else ''}, "
        f"{data['records']:,} records, {data['pairs']:,} pairs" + (f" ({notes})" if notes else "")
    ]
    if len(files) > 1:
        rows = [
            [f["path"], f"{f['records']:,}", f"{f['unreadable']:,}", f"{f['torn']:,}"]
            for f in files
        ]
        lines += table(["journal", "records", "unreadable", "torn"], rows, right={1, 2, 3})
    return lines


def _counts(title: str, counts: dict[str, int], name: str) -> list[str]:
    if not any(counts.values()):
        return []
    rows = [[key, f"{value:,}"] for key, value in counts.items()]
    return ["", title, *table([name, "count"], rows, right={1})]


def _timeline_lines(timeline: dict[str, Any]) -> list[str]:
    if timeline["first"] is None:
        return []
    per_minute = {_minute(entry["minute"]): entry["records"] for entry in timeline["per_minute"]}
    first, last = min(per_minute), max(per_minute)
    width = bucket_width(last - first + 1)
    rows = []
    for start in range(first - first % width, last + 1, width):
        count = sum(per_minute.get(minute, 0) for minute in range(start, start + width))
        rows.append([_clock(start * 60), f"{count:,}", f"{count / width:,.1f}"])
    return [
        "",
        f"Rate over time: {_clock(_minute(timeline['first']) * 60)} to "
        f"{_clock(_minute(timeline['last']) * 60)} UTC; peak {timeline['peak_records']:,} "
        f"records in the minute from {_clock(_minute(timeline['peak_minute']) * 60)}",
        *table([f"{width}-minute bucket from", "records", "per minute"], rows, right={1, 2}),
    ]


def _minute(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() // 60)


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M")


def bucket_width(span_minutes: int) -> int:
    """The smallest round bucket width (minutes) that fits the span into the table."""
    for width in _NICE_WIDTHS:
        if span_minutes <= width * _TABLE_ROWS:
            return width
    days = -(-span_minutes // (1440 * _TABLE_ROWS))
    return days * 1440


def _items(title: str, items: list[dict[str, Any]]) -> list[str]:
    if not items:
        return []
    rows = [
        [
            f"{item['elapsed_ms']:,}",
            str(item["attempts"]),
            item["outcome"],
            "none" if item["status"] is None else str(item["status"]),
            str(item["image_id"]),
            str(item["tag"]),
            item["request_id"] or "-",
        ]
        for item in items
    ]
    header = ["ms", "attempts", "outcome", "status", "image_id", "tag", "request_id"]
    return ["", title, *table(header, rows, right={0, 1})]


def _failure_lines(failures: list[dict[str, Any]]) -> list[str]:
    if not failures:
        return []
    lines = ["", "Failures by reason (records: every failure; not ok: pairs still failing)"]
    for group in failures:
        lines.append(
            f"  {group['records']:>8,} records  {group['pairs_not_ok']:>8,} not ok  "
            f"{group['outcome']} {group['error_class']}: {group['reason']}"
        )
        for example in group["examples"]:
            lines.append(
                f"      e.g. {example['image_id']} {example['tag']} "
                f"request_id {example['request_id'] or '-'}"
            )
    return lines


# ── the command ─────────────────────────────────────────────────────────────────────────────


def _top_count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``bulktag report``."""
    parser.add_argument(
        "journals",
        nargs="+",
        metavar="JOURNAL",
        help="journal files (shards merge; for a pair in several, the one named last wins)",
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: aligned tables (default); json: one object with stable keys",
    )
    parser.add_argument(
        "--top",
        type=_top_count,
        default=DEFAULT_TOP,
        metavar="N",
        help=f"how many slowest and most-retried items to list [default {DEFAULT_TOP}]",
    )


def command_report(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    """Run ``bulktag report``: 0 all pairs ok, 1 some not, 2 a journal cannot be read."""
    paths = [Path(name) for name in args.journals]
    report = Report(top=args.top)
    try:
        problem = which_is_not_a_journal(paths)
        if problem is not None:
            stderr.write(f"bulktag report: error: {problem}\n")
            return ExitCode.USAGE
        report.read(paths)
    except OSError as exc:
        reason = exc.strerror or exc
        stderr.write(f"bulktag report: error: cannot read journal {exc.filename}: {reason}\n")
        return ExitCode.USAGE
    data = to_json(report)
    if args.format == "json":
        stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    else:
        stdout.write("\n".join(without_controls(line) for line in human_lines(data)) + "\n")
    return ExitCode.OK if report.all_ok else ExitCode.SOME_FAILED
