"""``bulktag run``: wire the edges (input file, journal, HTTP session, signals, progress) to the
engine, then report and pick the exit code. Called only by the CLI."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import structlog

from bulktag.auth import AuthRefused, StaticToken, TokenProvider
from bulktag.config import ConfigError, Settings
from bulktag.engine import Engine, EngineSettings, RunReport
from bulktag.journal import JournalError, JournalWriter, ResumeIndex, prepare
from bulktag.logs import SCRUBBER, configure, wants_json
from bulktag.policy import RetryPolicy
from bulktag.progress import show_progress
from bulktag.source import Parsed, open_text, read_rows
from bulktag.summary import ExitCode, exit_code, summary_fields, summary_lines
from bulktag.transport import GlanceTransport, make_session, normalize_endpoint, ssl_context

if TYPE_CHECKING:
    from bulktag.cli import Environment

log = structlog.get_logger()


def run_command(args: argparse.Namespace, settings: Settings, environment: Environment) -> int:
    configure(settings.log_format, settings.log_level, environment.stderr)
    token = args.token or environment.env.get("OS_AUTH_TOKEN")
    SCRUBBER.add(token)
    endpoint = _endpoint(settings, token)
    assert token is not None
    with ExitStack() as stack:
        rows = _open_input(args.input, environment, stack)
        journal_path = Path(settings.results)
        index = _load_journal(journal_path, bool(args.fresh))
        journal = _open_journal(journal_path, settings.fsync_interval)
        if settings.insecure:
            log.warning(
                "tls_verification_disabled",
                hint="--insecure: anyone on the path can read the token and forge answers",
            )
        plan = _Plan(args, settings, endpoint, StaticToken(token), journal, index, rows)
        try:
            report = anyio.run(_run, plan, environment)
        except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
            return ExitCode.INTERRUPTED
    _report(report, settings, journal_path, environment)
    return exit_code(report.tally, report.aborted is not None, report.interrupted)


def _endpoint(settings: Settings, token: str | None) -> str:
    if not settings.endpoint or not token:
        missing = " and ".join(
            name
            for name, value in (
                ("--endpoint (or OS_IMAGE_URL)", settings.endpoint),
                ("--token (or OS_AUTH_TOKEN)", token),
            )
            if not value
        )
        raise ConfigError(f"no credentials: give {missing}")
    try:
        return normalize_endpoint(settings.endpoint)
    except ValueError as exc:
        raise ConfigError(f"--endpoint: {exc}") from None


def _open_input(name: str, environment: Environment, stack: ExitStack) -> Iterator[Parsed]:
    if name == "-":
        return read_rows(open_text(environment.stdin))
    path = Path(name)
    if path.is_dir():
        raise ConfigError(f"input {name} is a directory, not a CSV file")
    try:
        binary = stack.enter_context(path.open("rb"))
    except OSError as exc:
        raise ConfigError(f"cannot read input {name}: {exc.strerror or exc}") from None
    return read_rows(open_text(binary))


def _load_journal(path: Path, fresh: bool) -> ResumeIndex:
    try:
        index, torn, moved = prepare(path, fresh)
    except JournalError as exc:
        raise ConfigError(str(exc)) from None
    if moved is not None:
        log.info("journal_moved_aside", journal=str(path), moved_to=str(moved))
    if torn:
        log.warning(
            "journal_torn_line_removed",
            journal=str(path),
            bytes=torn,
            kept_in=str(path) + ".torn",
            hint="an earlier run was killed mid-write; its rows are sent again",
        )
    if index.unreadable:
        log.warning("journal_unreadable_lines", journal=str(path), lines=index.unreadable)
    if index.records:
        log.info(
            "resuming",
            journal=str(path),
            records=index.records,
            settled=len(index.done) + len(index.failed),
        )
    return index


def _open_journal(path: Path, fsync_interval: float) -> JournalWriter:
    try:
        return JournalWriter(path, fsync_interval)
    except OSError as exc:
        raise ConfigError(f"cannot write journal {path}: {exc.strerror or exc}") from None


def _engine_settings(args: argparse.Namespace, settings: Settings) -> EngineSettings:
    return EngineSettings(
        rate=settings.rate,
        burst=settings.burst,
        concurrency=settings.concurrency,
        retry=RetryPolicy(max_attempts=settings.max_attempts),
        max_consecutive_failures=settings.max_consecutive_failures,
        grace_period=settings.grace_period,
        serialize_images=not args.unsafe_no_image_lock,
    )


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything the async part of a run needs, prepared (and validated) beforehand."""

    args: argparse.Namespace
    settings: Settings
    endpoint: str
    tokens: TokenProvider
    journal: JournalWriter
    index: ResumeIndex
    rows: Iterator[Parsed]


async def _run(plan: _Plan, environment: Environment) -> RunReport:
    settings, endpoint, tokens, journal = plan.settings, plan.endpoint, plan.tokens, plan.journal
    tls = ssl_context(settings.cacert, settings.insecure)
    async with make_session(settings.concurrency, settings.timeout, tls) as session:
        transport = GlanceTransport(session, endpoint, settings.timeout)
        try:
            await _preflight(transport, tokens, endpoint)
        except BaseException:
            journal.close()
            raise
        engine = Engine(
            _engine_settings(plan.args, settings), transport, tokens, journal, plan.index
        )
        log.info(
            "run_started",
            endpoint=endpoint,
            journal=str(journal.path),
            rate=settings.rate,
            concurrency=settings.concurrency,
        )
        tty = environment.stderr.isatty() and not wants_json(
            settings.log_format, environment.stderr
        )
        async with anyio.create_task_group() as helpers:
            helpers.start_soon(_watch_signals, engine, settings.grace_period)
            helpers.start_soon(
                show_progress, engine, environment.stderr, settings.progress_interval, tty
            )
            report = await engine.run(plan.rows)
            helpers.cancel_scope.cancel()
        return report


async def _preflight(transport: GlanceTransport, tokens: TokenProvider, endpoint: str) -> None:
    """One ``GET /v2/images?limit=1`` so a wrong URL or token fails in a second, not a row at
    a time: exit 2 with one line, before anything is sent."""
    answer = await transport.preflight(await tokens.token())
    if answer.status == 401:
        try:
            answer = await transport.preflight(await tokens.refresh(await tokens.token()))
        except AuthRefused as exc:
            raise ConfigError(f"credentials refused: {exc}") from None
    if answer.status is None:
        raise ConfigError(f"cannot reach the image service at {endpoint}: {answer.error}")
    if answer.status in (400, 404, 405):
        raise ConfigError(
            f"{endpoint} does not look like an OpenStack image service: "
            f"GET /v2/images answered {answer.status}"
        )
    if answer.status == 401:
        raise ConfigError(f"credentials refused: the image service at {endpoint} answered 401")
    if answer.status >= 300:
        log.warning(
            "preflight_unexpected_answer",
            status=answer.status,
            error=answer.error,
            request_id=answer.request_id,
        )


async def _watch_signals(engine: Engine, grace_period: float) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for received in signals:
            if engine.stopping:
                log.warning("stopping_now", signal=signal.Signals(received).name)
                engine.cancel_now()
                return
            log.warning(
                "stopping",
                signal=signal.Signals(received).name,
                grace_period_s=grace_period,
                hint="finishing requests in flight; signal again to stop at once",
            )
            engine.request_stop()


def _report(report: RunReport, settings: Settings, journal: Path, environment: Environment) -> None:
    if report.aborted:
        log.error("run_aborted", reason=report.aborted)
    fields = summary_fields(report.tally, report.elapsed)
    if wants_json(settings.log_format, environment.stderr):
        log.info(
            "run_finished",
            journal=str(journal),
            interrupted=report.interrupted,
            aborted=report.aborted is not None,
            pace_cuts=report.pace_cuts,
            **fields,
        )
        return
    state = "aborted" if report.aborted else "interrupted" if report.interrupted else "finished"
    headline = f"bulktag: run {state} after {report.elapsed:,.1f} s; journal {journal}"
    lines = summary_lines(report.tally, report.elapsed, headline)
    if report.pace_cuts:
        lines.append(f"  pacing   the cloud pushed back; the rate was cut {report.pace_cuts} times")
    if report.interrupted:
        lines.append("  run the same command again to resume")
    environment.stderr.write("\n".join(lines) + "\n")
    environment.stderr.flush()


__all__ = ["run_command"]
