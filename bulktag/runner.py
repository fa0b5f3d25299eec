"""``bulktag run``: wire the edges (input, journal and its lock, credentials, HTTP session,
signals, progress) to the engine, then report and pick the exit code. Called only by the CLI."""

from __future__ import annotations

import argparse
import gc
import os
import signal
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import anyio
import structlog

from bulktag.admission import Admission, Shard
from bulktag.auth import (
    AuthSpec,
    options_from_namespace,
)
from bulktag.config import BY_NAME, ConfigError, Settings, default_burst, misspelt_variables
from bulktag.engine import Engine, EngineSettings, RunReport, SendBatch
from bulktag.environment import STOP_SIGNALS, Environment
from bulktag.errors import BulktagError, ExitCode
from bulktag.journal import (
    JournalLock,
    JournalWriter,
    ResumeIndex,
    load_index,
    prepare,
    read_blocks,
)
from bulktag.logs import configure, error_line, wants_json
from bulktag.model import Api, InvalidRow, Op
from bulktag.pacing import describe
from bulktag.policy import RetryPolicy
from bulktag.progress import count_lines, show_progress
from bulktag.service import (
    ImageService,
    auth_spec,
    checked_endpoint,
    open_image_service,
    tls_context,
)
from bulktag.source import (
    GLANCE_RULES,
    ConstantTag,
    InputRefused,
    Parsed,
    TagRules,
    constant_tag,
    ims_rules,
    read_input,
)
from bulktag.summary import (
    SCHEMA_VERSION,
    Tally,
    exit_code,
    new_run_id,
    summary_document,
    summary_fields,
    summary_lines,
    write_summary,
)

if TYPE_CHECKING:
    from bulktag.metrics import MetricsWriter

log = structlog.get_logger()
_SHOWN_INVALID = 20  # invalid rows a dry run lists by line
_DRY_RUN_BATCH = 2048  # rows a dry run screens at once, like the engine
_YOUNG_GENERATION = 10_000  # allocations between collections of the youngest generation


def run_command(
    args: argparse.Namespace, settings: Settings, environment: Environment, run_id: str = ""
) -> int:
    """The run, its exit code; every log event of it carries ``run_id``. A run that cannot
    start raises a BulktagError, which the CLI reports."""
    run_id = run_id or new_run_id()
    configure(settings.log_format, settings.log_level, environment.stderr)
    with structlog.contextvars.bound_contextvars(run_id=run_id):
        return _run_command(args, settings, environment, run_id)


def _run_command(
    args: argparse.Namespace, settings: Settings, environment: Environment, run_id: str
) -> int:
    for name, meant in misspelt_variables(environment.env):
        log.warning("unknown_variable", variable=name, did_you_mean=meant, hint="read by nothing")
    op, shard = _op_and_shard(settings)
    api = Api(settings.api)
    # An offline dry run reads no credentials: spec and tls exist only when a later step
    # (the online check, the run) uses them.
    if args.dry_run and not args.dry_run_online:
        if settings.endpoint:
            checked_endpoint(settings.endpoint, "--endpoint")
    else:
        spec = _auth_spec(args, settings, environment)
        tls = tls_context(spec)
    try:
        with ExitStack() as stack:
            rules = tag_rules(settings)
            rows = _open_input(args.input, environment, stack, rules, _tag(args, rules))
            journal = Path(settings.results)
            _refuse_input_as_journal(args.input, journal)
            if args.dry_run_online:
                anyio.run(_check_cloud, spec, tls, settings, backend_options=loop_options())
            if args.dry_run or args.dry_run_online:
                return _dry_run(rows, journal, settings, (op, shard), environment)
            if settings.metrics_file is not None:
                _refuse_a_path_that_cannot_be_a_file(
                    Path(settings.metrics_file), "--metrics-file", "bulktag.prom"
                )
            _refuse_a_path_that_cannot_be_a_file(journal, "--results", BY_NAME["results"].default)
            lock = _lock(journal, settings.lock_wait, stack)
            index = _load_journal(journal, bool(args.fresh), lock)
            stack.enter_context(frozen_for_the_run())
            total = _lines_of_a_file(args.input)
            plan = _Plan(
                args, settings, spec, tls, op, shard, None, index, rows, total, api, run_id
            )
            report = _run_with_journal(plan, journal, environment, stack, lock.created)
    except InputRefused as exc:  # the input as a whole: nothing was sent
        exc.input_name = "stdin" if args.input == "-" else args.input
        raise
    except KeyboardInterrupt:  # a stop signal before the run's own handlers took over
        message = "bulktag: interrupted before the run started; nothing sent"
        interrupted = Refusal(run_id, message, ExitCode.INTERRUPTED, "interrupted")
        refuse(environment, settings, interrupted)
        return ExitCode.INTERRUPTED
    code = report_exit_code(report, settings)
    _report(report, settings, journal, environment, code)
    return code


def _run_id() -> str:
    """This run's id: run_command binds it for the whole run (every log event carries it)."""
    return str(structlog.contextvars.get_contextvars()["run_id"])


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a run could not start: the one line, its exit code and log event."""

    run_id: str
    message: str
    code: ExitCode
    event: str


def refuse(environment: Environment, settings: Settings, refusal: Refusal) -> None:
    """A run that could not start: its one line on stderr (JSON in JSON mode) and, with
    ``--summary json``, its document on stdout."""
    as_json = wants_json(settings.log_format, environment.stderr)
    code, message = refusal.code, refusal.message
    error_line(
        environment.stderr,
        message,
        as_json=as_json,
        event=refusal.event,
        exit_code=int(code),
        run_id=refusal.run_id,
    )
    if settings.summary == "json":
        write_summary(environment.stdout, summary_document(refusal.run_id, code, error=message))


def report_exit_code(report: RunReport, settings: Settings) -> ExitCode:
    return exit_code(
        report.tally,
        report.aborted is not None,
        report.interrupted,
        report.incomplete,
        outage=report.outage,
        accept_earlier_failures=settings.accept_earlier_failures,
    )


def _run_with_journal(
    plan: _Plan, path: Path, environment: Environment, stack: ExitStack, created: bool
) -> RunReport:
    """Open the journal for appending and run; a journal this run created (to lock it) is
    removed again if the run could not even start (no empty files left behind by a typo)."""
    journal = _open_journal(path, plan.settings.fsync_interval)
    stack.callback(journal.close)  # idempotent: the engine normally closes it first
    try:
        return _in_the_loop(replace(plan, journal=journal), environment)
    except BulktagError:
        journal.close()
        if created and path.stat().st_size == 0:
            path.unlink()
        raise


def _in_the_loop(plan: _Plan, environment: Environment) -> RunReport:
    try:
        return anyio.run(_run, plan, environment, backend_options=loop_options())
    except* InputRefused as refused:  # a pipe's first row, read in the run: nothing was sent
        first: BaseException = refused
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


def loop_options() -> dict[str, bool]:
    """uvloop when it is installed (the ``speed`` extra): the same run costs less CPU per row
    (see benchmarks/RESULTS.md); without it, the standard asyncio loop."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


def _refuse_input_as_journal(input_name: str, journal: Path) -> None:
    """``--results inventory.csv`` would append records to the input and read them back."""
    if input_name != "-" and journal.exists() and Path(input_name).exists():
        try:
            same = os.path.samefile(input_name, journal)
        except OSError:
            return
        if same:
            raise ConfigError(f"--results {journal} is the input file; name another journal")


def tag_rules(settings: Settings) -> TagRules:
    """How input rows are checked: Glance's tag rule, or IMS's key/value limits."""
    if settings.api != Api.IMS.value:
        return GLANCE_RULES
    return ims_rules(
        settings.ims_max_key_length, settings.ims_max_value_length, settings.ims_charset
    )


def _op_and_shard(settings: Settings) -> tuple[Op, Shard]:
    try:
        return Op(settings.op), Shard.parse(settings.shard)
    except ValueError as exc:
        raise ConfigError(f"--shard: {exc}") from None


def _auth_spec(args: argparse.Namespace, settings: Settings, environment: Environment) -> AuthSpec:
    """Credentials as the openstack CLI finds them; bulktag's own settings fill in the
    endpoint and TLS options (flag > BULKTAG_* > OS_* > bulktag.toml)."""
    flags = options_from_namespace(args)  # --os-image-url/--os-cacert are flags too
    options = replace(
        flags,
        endpoint=flags.endpoint or settings.endpoint,
        cacert=flags.cacert or settings.cacert,
        insecure=settings.insecure or None,
    )
    spec = auth_spec(options, environment.env)
    if spec.tls_verify is False:
        log.warning(
            "tls_verification_disabled",
            hint="anyone on the network path can read the token and forge answers",
        )
    return spec


def _tag(args: argparse.Namespace, rules: TagRules) -> ConstantTag | None:
    """``--tag``: one tag for every image id of a list of ids."""
    text = getattr(args, "tag", None)
    if text is None:
        return None
    try:
        return constant_tag(text, rules)
    except ValueError as exc:
        raise ConfigError(f"--tag {text!r}: {exc}") from None


def _open_input(
    name: str,
    environment: Environment,
    stack: ExitStack,
    rules: TagRules,
    constant: ConstantTag | None,
) -> Iterator[Parsed]:
    """The input's rows. A file is read up to its first row here, so that a problem of the
    whole input (encoding, header, columns) is refused before anything else happens
    (InputRefused); a pipe, a FIFO or ``<(...)`` is read exactly once, as its producer
    writes, in the run (see source.read_input), whose first row is checked the same way,
    before anything is sent — here it would wait for a producer that may take hours."""
    binary = environment.stdin if name == "-" else _opened(Path(name), stack)
    if name == "-" and binary.isatty():
        # No file given and nothing piped in: a forgotten argument, most likely (GNU
        # parallel warns the same way); the run would wait silently for typed rows.
        log.warning(
            "reading_rows_from_the_terminal",
            hint="type CSV rows and end with Ctrl-D; or give a CSV file, or pipe one in",
        )
    rows = read_input(binary, rules, constant)
    if not rows.may_wait:
        rows.check_head()
    return rows


def _opened(path: Path, stack: ExitStack) -> BinaryIO:
    if path.is_dir():
        raise ConfigError(f"input {path} is a directory, not a CSV file")
    try:
        return stack.enter_context(path.open("rb"))
    except OSError as exc:
        raise ConfigError(f"cannot read input {path}: {exc.strerror or exc}") from None


def _lines_of_a_file(name: str) -> int | None:
    """Lines in the input, for progress and ETA: only a regular file's. Counting reads it
    to its end, which would leave a pipe, a FIFO or ``<(...)`` with nothing for the run."""
    path = Path(name)
    return count_lines(path) if name != "-" and path.is_file() else None


def _refuse_a_path_that_cannot_be_a_file(path: Path, flag: str, name: str) -> None:
    """A file the run writes, at a path that cannot be one: refused before anything is sent,
    saying why. In a directory that is not there (a mistyped path), the OS's ENOENT alone
    ("cannot lock journal: No such file or directory") read as if a first run's journal had
    to exist, and for the metrics file it was a warning in the night's log and, the day
    after, the alert on a missed night. A directory given for the file ("--results /var/lib
    /bulktag") read "cannot lock journal: not a regular file"."""
    if not path.parent.exists():
        raise ConfigError(
            f"{flag} {path}: its directory {path.parent} does not exist (create it, or give "
            f"another {flag})"
        )
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a directory: give a file in it, e.g. {path / name}")


def _lock(journal: Path, wait: float, stack: ExitStack) -> JournalLock:
    lock = JournalLock(journal)
    try:
        lock.acquire(wait)
    except OSError as exc:
        raise ConfigError(f"cannot lock journal {journal}: {exc.strerror or exc}") from None
    stack.callback(lock.release)
    return lock


def _load_journal(path: Path, fresh: bool, lock: JournalLock) -> ResumeIndex:
    index, torn, moved = prepare(path, fresh, lock)
    if moved is not None:
        log.info("journal_moved_aside", journal=str(path), moved_to=str(moved))
    if torn:
        log.warning(
            "journal_torn_line_removed",
            journal=str(path),
            bytes=torn,
            kept_in=str(path) + ".torn",
            hint="an earlier run was killed mid-write; its row is sent again",
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


@contextmanager
def frozen_for_the_run() -> Iterator[None]:
    """Keep what is alive now — above all the resume index — out of the cyclic collector.

    The index holds a key object per settled pair and lives for the whole run, and every full
    collection walked all of it: resuming over 10M records took 89 s, 42 s with it frozen
    (a script timing ``bulktag run`` over the benchmark's files). Ints and sets of ints
    cannot form cycles, so nothing is lost by freezing them; the freeze ends with the run.

    And the youngest generation is collected less often. The requests in flight keep
    thousands of young objects alive (their coroutines, aiohttp's requests and responses);
    every collection walked all of them and handed them to the next generation, whose
    collections walked them again, while nearly all were about to be freed by their reference
    counts anyway. Only garbage in cycles waits longer to be freed.
    """
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(_YOUNG_GENERATION, *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def _open_journal(path: Path, fsync_interval: float) -> JournalWriter:
    try:
        return JournalWriter(path, fsync_interval)
    except OSError as exc:
        raise ConfigError(f"cannot write journal {path}: {exc.strerror or exc}") from None


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything the async part of a run needs, prepared (and validated) beforehand."""

    args: argparse.Namespace
    settings: Settings
    spec: AuthSpec
    tls: ssl.SSLContext | bool
    op: Op
    shard: Shard
    journal: JournalWriter | None  # opened last, just before the run
    index: ResumeIndex
    rows: Iterator[Parsed]
    total_lines: int | None  # lines in the input file (None for stdin): progress and ETA
    api: Api = Api.GLANCE
    run_id: str = ""

    def engine_settings(self) -> EngineSettings:
        settings = self.settings
        ims = self.api is Api.IMS
        return EngineSettings(
            rate=settings.rate,
            burst=settings.burst or default_burst(settings.rate),
            concurrency=settings.concurrency,
            retry=RetryPolicy(max_attempts=settings.max_attempts),
            max_consecutive_failures=settings.max_consecutive_failures,
            grace_period=settings.grace_period,
            retry_failed=settings.retry_failed,
            op=self.op,
            shard=self.shard,
            max_items=settings.max_items,
            max_outage=settings.max_outage or None,
            serialize_images=not self.args.unsafe_no_image_lock,
            api=self.api,
            batch_size=settings.ims_tags_per_call if ims else 1,
            batch_linger=settings.batch_linger if ims else 0.0,
            read_ahead=settings.ims_read_ahead,
        )


async def _check_cloud(spec: AuthSpec, tls: ssl.SSLContext | bool, settings: Settings) -> None:
    """``--dry-run-online``: log in and read the image service once, as a run would first."""
    async with _open_service(spec, tls, settings, concurrency=1) as service:
        endpoint = service.credentials.endpoint
    log.info("dry_run_cloud_ok", endpoint=endpoint, api=settings.api)


@asynccontextmanager
async def _open_service(
    spec: AuthSpec, tls: ssl.SSLContext | bool, settings: Settings, concurrency: int
) -> AsyncIterator[ImageService]:
    """The run's image service (its API and project), the preflight passed; a preflight
    answered 403, 429 or 5xx is logged and left to the run's retries and pacing."""
    api, project_id, timeout = Api(settings.api), settings.project_id, settings.timeout
    opened = open_image_service(
        spec, tls, concurrency=concurrency, timeout=timeout, api=api, project_id=project_id
    )
    async with opened as service:
        answer = service.preflight
        if answer.status is not None and answer.status >= 300:
            log.warning(
                "preflight_unexpected_answer",
                status=answer.status,
                error=answer.error,
                request_id=answer.request_id,
            )
        yield service


async def _run(plan: _Plan, environment: Environment) -> RunReport:
    settings = plan.settings
    assert plan.journal is not None
    async with _open_service(plan.spec, plan.tls, settings, settings.concurrency) as service:
        credentials, transport = service.credentials, service.transport
        send: SendBatch = transport.add_tags if plan.op is Op.ADD else transport.remove_tags
        engine = Engine(
            plan.engine_settings(), send, credentials.provider, plan.journal, plan.index
        )
        # The run's own signal handlers take over here, with nothing awaited since the
        # preflight: until now a stop signal raises KeyboardInterrupt at once (the preflight
        # may hang on a silent endpoint); from now on it must not, since one raised inside
        # the run's task group came out as a traceback, or left the process hanging. Signals
        # that arrive before the watcher runs wait in the receiver.
        with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
            log.info(
                "run_started",
                endpoint=credentials.endpoint,
                journal=str(plan.journal.path),
                op=plan.op.value,
                api=plan.api.value,
                rate=settings.rate,
                concurrency=settings.concurrency,
                event_loop="uvloop" if loop_options() else "asyncio",
            )
            return await _drive(engine, plan, environment, signals)


async def _drive(
    engine: Engine, plan: _Plan, environment: Environment, signals: AsyncIterator[signal.Signals]
) -> RunReport:
    """Run the engine with its companions: signal handling, progress, the time window."""
    settings = plan.settings
    tty = environment.stderr.isatty() and not wants_json(settings.log_format, environment.stderr)
    metrics = _metrics_writer(settings, plan.run_id)
    async with anyio.create_task_group() as companions:
        if metrics is not None:
            from bulktag.metrics import periodically

            companions.start_soon(periodically, engine, metrics, settings.progress_interval)
        companions.start_soon(_watch_signals, engine, settings.grace_period, signals)
        companions.start_soon(
            show_progress,
            engine,
            environment.stderr,
            settings.progress_interval,
            tty,
            plan.total_lines,
        )
        if settings.max_duration:  # None or 0: no time window
            companions.start_soon(_time_window, engine, settings.max_duration)
        report = await engine.run(plan.rows)
        companions.cancel_scope.cancel()
    if metrics is not None:  # after the periodic writer stopped, so the two never race
        _final_metrics(metrics, engine, report, report_exit_code(report, settings))
    return report


def _metrics_writer(settings: Settings, run_id: str) -> MetricsWriter | None:
    if settings.metrics_file is None:
        return None
    from bulktag.metrics import MetricsWriter  # prometheus-client only when asked for

    # Shards on one node write one file each; the label keeps their samples apart.
    shard = Shard.parse(settings.shard)
    labels = {"shard": f"{shard.index}/{shard.count}"} if shard.count > 1 else {}
    info = {"run_id": run_id, "schema_version": str(SCHEMA_VERSION)}
    return MetricsWriter(Path(settings.metrics_file), labels=labels, info=info)


def _final_metrics(
    metrics: MetricsWriter, engine: Engine, report: RunReport, code: ExitCode
) -> None:
    try:
        snapshot = metrics.snapshot(
            report.tally,
            allowed_rate=engine.pacer.rate,
            accepted=engine.pacer.accepted_total,
            elapsed=report.elapsed,
            finished=True,
            succeeded=code == ExitCode.OK,
            exit_code=int(code),
        )
        metrics.write(snapshot)
    except OSError as exc:
        log.warning("metrics_write_failed", path=str(metrics.path), error=exc.strerror or str(exc))


async def _watch_signals(
    engine: Engine, grace_period: float, signals: AsyncIterator[signal.Signals]
) -> None:
    async for received in signals:
        name = signal.Signals(received).name
        if engine.stopping:
            log.warning("stopping_now", signal=name)
            engine.cancel_now()
            return
        log.warning(
            "stopping",
            signal=name,
            grace_period_s=grace_period,
            hint="finishing requests in flight; signal again to stop at once",
        )
        engine.request_stop()


async def _time_window(engine: Engine, max_duration: float) -> None:
    await anyio.sleep(max_duration)
    log.info(
        "time_window_reached",
        max_duration_s=max_duration,
        hint="finishing requests in flight; the next run continues from the journal",
    )
    engine.request_stop("max_duration")


def _dry_run(
    rows: Iterator[Parsed],
    journal: Path,
    settings: Settings,
    work: tuple[Op, Shard],
    environment: Environment,
) -> int:
    """Validate and filter exactly as a run would; send nothing, write nothing."""
    op, shard = work
    index = ResumeIndex.empty()
    if journal.is_file():  # read-only: a torn last line is just an unreadable line here
        index = load_index(read_blocks(journal))
    tally = Tally()
    admission = Admission(
        index,
        tally,
        op=op,
        retry_failed=settings.retry_failed,
        shard=shard,
        api=Api(settings.api),
    )
    would_send, invalid_count = 0, 0
    invalid: list[InvalidRow] = []
    with frozen_for_the_run():  # as in a run: the index stays out of the collector's walks
        while batch := list(islice(rows, _DRY_RUN_BATCH)):
            for item in admission.screen(batch):  # what a run would send or record
                if isinstance(item, InvalidRow):
                    invalid_count += 1
                    if len(invalid) < _SHOWN_INVALID:  # examples only: memory stays flat
                        invalid.append(item)
                else:
                    would_send += 1
    fields = {
        "read": tally.read,
        "would_send": would_send,
        "invalid": invalid_count,
        "skipped_done": tally.skipped_done,
        "skipped_still_bad": tally.skipped_still_bad,
        "skipped_duplicate": tally.skipped_duplicate,
        "skipped_other_shard": tally.skipped_other_shard,
        "op": op.value,
        "min_duration_s": round(would_send / settings.rate, 1),
    }
    if settings.api == Api.IMS.value:  # rows of one image share requests: fewer, not more
        fields |= {"api": settings.api, "tags_per_call": settings.ims_tags_per_call}
    if wants_json(settings.log_format, environment.stderr):
        log.info(
            "dry_run",
            **fields,
            invalid_rows=[{"line": i.line, "error": i.error} for i in invalid],
        )
    else:
        _print_dry_run(fields, invalid, environment)
    earlier = 0 if settings.accept_earlier_failures else tally.skipped_still_bad
    code = ExitCode.SOME_FAILED if invalid_count or earlier else ExitCode.OK
    if settings.summary == "json":
        document = summary_document(_run_id(), code, {"dry_run": True, **fields})
        write_summary(environment.stdout, document)
    return code


def _print_dry_run(
    fields: Mapping[str, Any], invalid: list[InvalidRow], environment: Environment
) -> None:
    out = environment.stderr
    if "tags_per_call" in fields:
        out.write(
            f"bulktag: dry run — would send {fields['would_send']:,} {fields['op']} rows "
            f"to IMS, up to {fields['tags_per_call']} tags of an image per request (at most "
            f"{fields['min_duration_s']:,} s at the configured rate, retries aside)\n"
        )
    else:
        out.write(
            f"bulktag: dry run — would send {fields['would_send']:,} {fields['op']} "
            f"requests (at least {fields['min_duration_s']:,} s at the configured rate)\n"
        )
    keys = (
        "read",
        "invalid",
        "skipped_done",
        "skipped_still_bad",
        "skipped_duplicate",
        "skipped_other_shard",
    )
    for key in keys:
        out.write(f"  {key.replace('_', ' '):<20}{fields[key]:>10,}\n")
    for item in invalid:
        out.write(f"  line {item.line}: {item.error}\n")
    if fields["invalid"] > len(invalid):
        out.write(f"  … and {fields['invalid'] - len(invalid):,} more invalid rows\n")


def _report(
    report: RunReport,
    settings: Settings,
    journal: Path,
    environment: Environment,
    code: ExitCode,
) -> None:
    if report.aborted:
        log.error("run_aborted", reason=report.aborted)
    if report.outage:
        log.error(
            "cloud_unavailable",
            reason=f"the cloud accepted nothing for {settings.max_outage:g} s (--max-outage); "
            "run the same command later to go on",
        )
    fields = {
        "journal": str(journal),
        "stopped_by": report.stopped_by,
        "aborted": report.aborted is not None,
        "rows_left": report.left,
        # Nothing sent (every row done before): not the outage's "accepted nothing".
        "pace": describe(report.pacing) if report.tally.attempts else "nothing was sent",
        **report.pacing,
        **summary_fields(report.tally, report.elapsed),
    }
    if settings.summary == "json":
        write_summary(environment.stdout, summary_document(_run_id(), code, fields))
    if wants_json(settings.log_format, environment.stderr):
        log.info("run_finished", schema_version=SCHEMA_VERSION, exit_code=int(code), **fields)
        return
    state = {
        None: "finished",
        "signal": "interrupted",
        "abort": "aborted",
        "max_duration": "stopped at --max-duration",
        "max_items": "stopped at --max-items",
        "outage": "stopped: the cloud accepted nothing for --max-outage",
    }[report.stopped_by]
    headline = f"bulktag: run {state} after {report.elapsed:,.1f} s; journal {journal}"
    lines = summary_lines(report.tally, report.elapsed, headline)
    if report.pace_cuts:
        cuts = "once" if report.pace_cuts == 1 else f"{report.pace_cuts} times"
        lines.append(f"  pacing   {describe(report.pacing)} (rate cut {cuts})")
    elif report.pacing.get("held_by_rate"):
        lines.append(f"  pacing   {describe(report.pacing)}")
    if report.left:
        lines.append(f"  left     {report.left:>10,} rows for the next run")
    if report.outage:
        lines.append("  the cloud took nothing for a while: run the same command later to go on")
    elif report.interrupted or report.incomplete:
        lines.append("  run the same command again to go on")
    try:
        environment.stderr.write("\n".join(lines) + "\n")
        environment.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass  # nobody reads stderr any more; the journal and the exit code still tell
