"""``bulktag verify JOURNAL``: read every tagged image back and check its tags are really there.

Glance answers 204 to a tag write that a concurrent write then silently undoes (the lost-update
race, see API-FACTS.md). The journal cannot know; only reading the image back can. So:

    journal ─► {image: tags recorded ok} ─► producer ─► bounded stream ─► N workers:
        attempt loop: Pacer ─► GET /v2/images/{id} ─► decide ─► pace ─► retry | judge
                                                                     │
        missing (added tags absent) · not_removed (removed tags present, ``--op remove``)
        gone (404) · unverified (no usable answer after the retries: 403, 5xx, timeouts)
                                                                     ▼
                                               one line per problem (--output: JSON lines)

Each image is read once (plus retries of 429/502/503/504 and connection errors, with the run's
back-off policy), at most ``--rate`` requests a second and ``--concurrency`` at a time, slower
when the cloud pushes back: the GETs go through the run's own attempt loop
(:mod:`bulktag.attempt`: pacing by the answers, the token renewed once after a 401), so a
verify is as polite as the run it checks. Memory: the tags per image recorded ok (the one thing
verify must hold); the GETs themselves stream through a bounded channel.

Problem lines (``--output PATH``), one JSON object each, keys in this order:

    {"image_id": "…", "problem": "missing" | "not_removed" | "gone" | "unverified",
     "tags": [...],          # the tags concerned: missing ones, lingering ones, or all of them
     "status": 200 | 404 | … | null, "error": "…" | null, "request_id": "…" | null}

Exit codes:

    0    every image's tags are as the journal says (or the journal records no ok tag)
    1    a tag is missing or not removed, an image is gone, or an image could not be read
    2    usage error, unreadable journal or not a journal, endpoint not an image service,
         token refused by the first GET (after one renewal): nothing was verified
    3    the token was refused part-way
    75   the image service or the identity service cannot be reached: try again later
    130  interrupted

Credentials, the login and the first GET are the run's own (:mod:`bulktag.service`), and the
GETs go through :mod:`bulktag.transport`, the one module that speaks HTTP.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol, TextIO

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream as ObjectReceiveStream
from anyio.streams.memory import MemoryObjectSendStream as ObjectSendStream

from bulktag.attempt import AttemptLoop, Attempts, Sent
from bulktag.auth import AuthSpec, TokenProvider, add_credential_arguments, options_from_namespace
from bulktag.config import BY_NAME, ConfigError
from bulktag.environment import STOP_SIGNALS
from bulktag.errors import BulktagError, ExitCode
from bulktag.journal import FileStats, read_records, which_is_not_a_journal
from bulktag.logs import CLEAR_LINE, refusal_line
from bulktag.model import Answer, Outcome
from bulktag.pacing import Pacer
from bulktag.policy import RetryPolicy, Settle
from bulktag.progress import clock, redraw
from bulktag.service import auth_spec, open_image_service, tls_context
from bulktag.transport import GlanceTransport, ImageRead, ImageReader

DEFAULT_RATE = 10.0
DEFAULT_CONCURRENCY = 8
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_PROGRESS_INTERVAL = float(BY_NAME["progress_interval"].default)  # `bulktag run`'s
_SHOWN_PROBLEMS = 20  # problems listed on stderr without --output


# ── reading images ──────────────────────────────────────────────────────────────────────────


class Reader(Protocol):
    async def get_image(self, image_id: str, token: str) -> ImageRead: ...


# ── what the journal says ───────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the journal says one image's tags should be."""

    present: frozenset[str]  # recorded ok as added
    absent: frozenset[str] = frozenset()  # recorded ok as removed (--op remove)

    @property
    def tags(self) -> int:
        return len(self.present) + len(self.absent)


@dataclass(slots=True)
class JournalsRead:
    """What the journals say the images' tags should be, and what reading them met."""

    expected: dict[str, dict[str, bool]]  # image id -> {tag: should be on the image}
    files: list[FileStats]
    ims_ok: int = 0  # ok IMS key/value records: Glance's tag list does not hold them


def expected_tags(paths: Sequence[Path]) -> JournalsRead:
    """Image id -> {tag: should be on the image}, from the ``ok`` records of the journals in
    the order given (raises OSError), and what was read of each.

    The last ``ok`` record of a tag decides: added then removed means it should be absent.
    Across journals, as ``bulktag report`` merges them, the journal named last wins; shards
    never share an image, so for their journals the order does not matter."""
    read = JournalsRead({}, [])
    for path in paths:
        stats = FileStats(str(path))
        for _, record in read_records(path, stats):
            if record.outcome is not Outcome.OK or not (record.image_id and record.tag):
                continue
            if record.api != "glance":  # IMS key/value tags are not in Glance's tag list
                read.ims_ok += 1
                continue
            tags = read.expected.setdefault(record.image_id, {})
            tags[record.tag] = record.op != "remove"
        read.files.append(stats)
    return read


def expectation(tags: Mapping[str, bool]) -> Expectation:
    return Expectation(
        present=frozenset(tag for tag, wanted in tags.items() if wanted),
        absent=frozenset(tag for tag, wanted in tags.items() if not wanted),
    )


# ── checking ────────────────────────────────────────────────────────────────────────────────

MISSING = "missing"  # tags recorded added that the image lacks: a lost update
NOT_REMOVED = "not_removed"  # tags recorded removed that the image still has
GONE = "gone"  # the image answers 404
UNVERIFIED = "unverified"  # no usable answer after the retries (403, 5xx, timeouts...)


@dataclass(frozen=True, slots=True)
class Problem:
    image_id: str
    kind: str  # MISSING | NOT_REMOVED | GONE | UNVERIFIED
    tags: tuple[str, ...]  # the tags concerned
    status: int | None = None
    error: str | None = None
    request_id: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "image_id": self.image_id,
                "problem": self.kind,
                "tags": list(self.tags),
                "status": self.status,
                "error": self.error,
                "request_id": self.request_id,
            },
            ensure_ascii=False,
        )

    def human(self) -> str:
        tags = ", ".join(self.tags)
        if self.kind == MISSING:
            return f"  missing      {self.image_id}  lacks {tags}"
        if self.kind == NOT_REMOVED:
            return f"  not removed  {self.image_id}  still has {tags}"
        if self.kind == GONE:
            return f"  gone         {self.image_id}  404 (expected {tags})"
        why = self.error or f"HTTP {self.status}"
        return f"  unverified   {self.image_id}  {self.status or 'no answer'}: {why}"


@dataclass(slots=True)
class VerifyTally:
    images: int = 0  # images read back (or given up on)
    tags: int = 0  # tags checked on them
    complete: int = 0  # images whose tags are as the journal says
    missing_images: int = 0
    missing_tags: int = 0
    not_removed_images: int = 0
    not_removed_tags: int = 0
    gone: int = 0
    unverified: int = 0
    requests: int = 0  # GETs sent, retries included
    aborted: str | None = None

    def note(self, problem: Problem) -> None:
        if problem.kind == MISSING:
            self.missing_images += 1
            self.missing_tags += len(problem.tags)
        elif problem.kind == NOT_REMOVED:
            self.not_removed_images += 1
            self.not_removed_tags += len(problem.tags)
        elif problem.kind == GONE:
            self.gone += 1
        else:
            self.unverified += 1

    @property
    def problems(self) -> int:
        return self.missing_images + self.not_removed_images + self.gone + self.unverified


@dataclass(frozen=True, slots=True)
class VerifySettings:
    rate: float = DEFAULT_RATE  # GETs per second, retries included: a hard ceiling
    burst: int = 1
    concurrency: int = DEFAULT_CONCURRENCY
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(DEFAULT_MAX_ATTEMPTS))


def judge(image_id: str, expect: Expectation, read: ImageRead) -> list[Problem]:
    """What a settled read says about the image; [] when its tags are as the journal says."""
    answer, actual = read.answer, read.tags
    if actual is not None:
        found = [
            (MISSING, tuple(sorted(expect.present - actual))),
            (NOT_REMOVED, tuple(sorted(expect.absent & actual))),
        ]
        return [
            Problem(image_id, kind, tags, answer.status, None, answer.request_id)
            for kind, tags in found
            if tags
        ]
    if answer.status == 404:  # tags recorded removed went with the image: not a problem
        present = tuple(sorted(expect.present))
        return [Problem(image_id, GONE, present, 404, None, answer.request_id)] if present else []
    every = tuple(sorted(expect.present | expect.absent))
    return [Problem(image_id, UNVERIFIED, every, answer.status, answer.error, answer.request_id)]


_Item = tuple[str, Expectation]  # what the producer hands a worker


@dataclass(slots=True)
class _Reading:
    """One image being read back: its id, and the last read of it."""

    image_id: str
    read: ImageRead | None = None


class Verifier(AttemptLoop[_Reading, ImageRead | None]):
    """Reads images back, paced and bounded; ``on_problem`` receives each problem in turn.
    Each GET goes through the run's attempt loop (:mod:`bulktag.attempt`): the same retries,
    the same pacing by the cloud's answers, the same token renewal after a 401."""

    def __init__(
        self,
        reader: Reader,
        tokens: TokenProvider,
        settings: VerifySettings,
        on_problem: Callable[[Problem], None],
        *,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        pacer = Pacer(settings.rate, burst=settings.burst, wall_clock=wall)
        super().__init__(pacer, tokens, settings.retry, wall=wall, rng=rng or random.Random())
        self.tally = VerifyTally()
        self._reader = reader
        self._settings = settings
        self._on_problem = on_problem
        self._sleep = sleep
        self._scope = anyio.CancelScope()

    async def run(self, expected: Mapping[str, Mapping[str, bool]]) -> VerifyTally:
        """Check every image of ``expected`` (image id -> {tag: should be present})."""
        width = self._settings.concurrency
        send, receive = anyio.create_memory_object_stream[_Item](width)
        with self._scope:
            async with anyio.create_task_group() as group:
                with send, receive:  # the clones keep the stream open; close the originals
                    group.start_soon(self._produce, expected, send.clone())
                    for _ in range(width):
                        group.start_soon(self._work, receive.clone())
        return self.tally

    async def _produce(
        self, expected: Mapping[str, Mapping[str, bool]], send: ObjectSendStream[_Item]
    ) -> None:
        with send:
            for image_id, tags in expected.items():
                await send.send((image_id, expectation(tags)))

    async def _work(self, receive: ObjectReceiveStream[_Item]) -> None:
        with receive:
            async for image_id, expect in receive:
                read = await self.attempt(_Reading(image_id), Attempts(time.monotonic()))
                if read is None:
                    return
                self._judge(image_id, expect, read)

    def _judge(self, image_id: str, expect: Expectation, read: ImageRead) -> None:
        self.tally.images += 1
        self.tally.tags += expect.tags
        problems = judge(image_id, expect, read)
        if not problems:
            self.tally.complete += 1
        for problem in problems:
            self.tally.note(problem)
            self._on_problem(problem)

    # ── the attempt loop's hooks ────────────────────────────────────────────────────────────

    async def send(self, reading: _Reading, token: str, grow: bool) -> Sent | None:
        sent_at = self.pacer.free_now()
        if sent_at is None:
            sent_at = await self.pacer.wait_turn()
        level = self.pacer.level
        self.tally.requests += 1
        try:
            reading.read = await self._reader.get_image(reading.image_id, token)
        finally:
            self.pacer.returned()
        return reading.read.answer, sent_at, level

    def settled(
        self, reading: _Reading, decision: Settle, answer: Answer, attempts: Attempts
    ) -> ImageRead | None:
        return reading.read

    def unsettled(self) -> ImageRead | None:
        return None

    def refused_again(self) -> None:
        self.abort("the image service refused the token (401) part-way")

    def abort(self, reason: str) -> None:
        if self.tally.aborted is None:
            self.tally.aborted = reason
        self._scope.cancel()

    async def wait_or_stop(self, delay: float) -> bool:
        await self._sleep(delay)
        return True


# ── the command ─────────────────────────────────────────────────────────────────────────────


def _positive(kind: type[float] | type[int]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value" errors
    return parse


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``bulktag verify``."""
    parser.add_argument(
        "journals",
        metavar="JOURNAL",
        nargs="+",
        help="the journals of the run to check (shards merge; for a pair in several, the one "
        "named last wins)",
    )
    parser.add_argument(
        "--endpoint", help="image service URL, with or without /v2 [env OS_IMAGE_URL]"
    )
    parser.add_argument(
        "--token", help="auth token sent as X-Auth-Token [env OS_AUTH_TOKEN; prefer the variable]"
    )
    add_credential_arguments(parser)
    numeric: list[tuple[str, type[float] | type[int], float, str]] = [
        ("rate", float, DEFAULT_RATE, "GETs per second, retries included: a hard ceiling"),
        ("burst", int, 1, "GETs allowed at once above the steady rate"),
        ("concurrency", int, DEFAULT_CONCURRENCY, "most GETs in flight at once"),
        ("max_attempts", int, DEFAULT_MAX_ATTEMPTS, "attempts per image on 429/503/timeouts"),
        ("timeout", float, DEFAULT_TIMEOUT, "seconds one GET may take"),
        (
            "progress_interval",
            float,
            DEFAULT_PROGRESS_INTERVAL,
            "seconds between progress lines when stderr is not a terminal",
        ),
    ]
    for name, kind, default, text in numeric:
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=_positive(kind),
            default=default,
            metavar="N",
            help=f"{text} [default {default:g}]",
        )
    parser.add_argument("--output", metavar="PATH", help="write every problem as a JSON line")
    parser.add_argument("--cacert", metavar="FILE", help="CA bundle for TLS [env OS_CACERT]")
    parser.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")


@dataclass(frozen=True, slots=True)
class _Plan:
    spec: AuthSpec
    tls: ssl.SSLContext | bool
    read: JournalsRead
    settings: VerifySettings
    timeout: float
    progress_interval: float

    @property
    def expected(self) -> dict[str, dict[str, bool]]:
        return self.read.expected

    def outline(self) -> str:
        """What is about to happen, and the least time it can take at ``--rate``."""
        images = len(self.expected)
        tags = sum(len(tags) for tags in self.expected.values())
        rate = self.settings.rate
        return (
            f"bulktag verify: reading back {images:,} images ({tags:,} tags) at up to "
            f"{rate:,g} GETs/s (--rate): {clock(images / rate)} at least"
        )


def _plan(args: argparse.Namespace, env: Mapping[str, str]) -> _Plan:
    spec = auth_spec(options_from_namespace(args), env)  # exactly as ``bulktag run``
    tls = tls_context(spec)
    paths = [Path(name) for name in args.journals]
    try:
        problem = which_is_not_a_journal(paths)
        if problem is not None:
            raise ConfigError(problem)
        read = expected_tags(paths)
    except OSError as exc:
        raise ConfigError(f"cannot read journal {exc.filename}: {exc.strerror or exc}") from None
    settings = VerifySettings(
        rate=args.rate,
        burst=args.burst,
        concurrency=args.concurrency,
        retry=RetryPolicy(max_attempts=args.max_attempts),
    )
    return _Plan(spec, tls, read, settings, args.timeout, args.progress_interval)


async def _verify(
    plan: _Plan, on_problem: Callable[[Problem], None], stderr: TextIO
) -> VerifyTally:
    concurrency, timeout = plan.settings.concurrency, plan.timeout
    opened = open_image_service(plan.spec, plan.tls, concurrency=concurrency, timeout=timeout)
    async with opened as service:
        status = service.preflight.status
        if status is not None and status >= 300:  # the reads will retry: go on
            stderr.write(f"bulktag verify: warning: GET /v2/images answered {status}\n")
        assert isinstance(service.transport, GlanceTransport)  # verify reads Glance's tags
        reader = ImageReader(service.transport)
        verifier = Verifier(reader, service.credentials.provider, plan.settings, on_problem)
        stderr.write(plan.outline() + "\n")
        # Past the preflight, a stop signal cancels the reads here rather than raising
        # KeyboardInterrupt wherever a task happens to be (inside the task group that came
        # out as a traceback in `run`): the caller turns the interruption into exit 130.
        stopped: list[str] = []
        with _stop_signals() as signals:
            async with anyio.create_task_group() as group:
                group.start_soon(_cancel_on_signal, signals, group.cancel_scope, stopped)
                total, every = len(plan.expected), plan.progress_interval
                group.start_soon(_show_progress, verifier.tally, total, stderr, every)
                tally = await verifier.run(plan.expected)
                group.cancel_scope.cancel()
        if stopped:
            raise KeyboardInterrupt
        return tally


def _stop_signals() -> contextlib.AbstractContextManager[AsyncIterator[signal.Signals]]:
    """The stop signals, where a process can take them: only its main thread may (a verify
    called from another thread, as the tests do, takes none)."""
    if threading.current_thread() is threading.main_thread():
        return anyio.open_signal_receiver(*STOP_SIGNALS)
    return contextlib.nullcontext(_no_signals())


async def _no_signals() -> AsyncIterator[signal.Signals]:
    await anyio.sleep_forever()
    yield signal.SIGTERM  # never reached: the shape of a signal receiver


async def _cancel_on_signal(
    signals: AsyncIterator[signal.Signals], scope: anyio.CancelScope, stopped: list[str]
) -> None:
    async for received in signals:
        stopped.append(signal.Signals(received).name)
        scope.cancel()
        return


def progress_text(tally: VerifyTally, total: int, elapsed: float) -> str:
    """How far a verify is: images read back of all, problems, GETs/s, and an ETA from the
    images done so far."""
    done = tally.images
    pace = done / elapsed if elapsed > 0 else 0.0
    eta = f" · ETA {clock((total - done) / pace)}" if pace and done < total else ""
    gets = tally.requests / elapsed if elapsed > 0 else 0.0
    return (
        f"{done:,}/{total:,} images read back · {tally.problems:,} problems · "
        f"{gets:,.1f} GETs/s{eta}"
    )


async def _show_progress(tally: VerifyTally, total: int, stderr: TextIO, every: float) -> None:
    """Until cancelled: on a terminal, a status line redrawn in place; elsewhere (cron, a
    pipe) a line every ``every`` seconds, so that a long verify's log is never silent."""
    if stderr.isatty():
        await redraw(lambda elapsed: progress_text(tally, total, elapsed), stderr)
    started = time.monotonic()
    while True:
        await anyio.sleep(every)
        elapsed = time.monotonic() - started
        try:
            stderr.write(f"bulktag verify: {progress_text(tally, total, elapsed)}\n")
            stderr.flush()
        except (BrokenPipeError, ValueError, OSError):
            return  # nobody reads stderr any more; the summary and the exit code still tell


class _ProblemLines:
    """The single writer of problem lines: JSON to ``--output``, the first few to stderr
    (over the status line, on a terminal)."""

    def __init__(self, output: IO[str] | None, stderr: TextIO) -> None:
        self._output = output
        self._stderr = stderr
        self._prefix = CLEAR_LINE if stderr.isatty() else ""
        self.shown = 0
        self.hidden = 0

    def __call__(self, problem: Problem) -> None:
        if self._output is not None:
            self._output.write(problem.to_json() + "\n")
        elif self.shown < _SHOWN_PROBLEMS:
            self._stderr.write(self._prefix + problem.human() + "\n")
            self.shown += 1
        else:
            self.hidden += 1


@contextlib.contextmanager
def _open_output(name: str | None) -> Iterator[IO[str] | None]:
    if name is None:
        yield None
        return
    try:
        output = Path(name).open("w", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ConfigError(f"cannot write {name}: {exc.strerror or exc}") from None
    with output:
        yield output


def summary_line(tally: VerifyTally, elapsed: float) -> str:
    not_removed = (
        f"{tally.not_removed_images:,} still with {tally.not_removed_tags:,} removed tags, "
        if tally.not_removed_images
        else ""
    )
    return (
        f"bulktag verify: {tally.images:,} images ({tally.tags:,} tags) read back with "
        f"{tally.requests:,} requests in {elapsed:,.1f} s: {tally.complete:,} complete, "
        f"{tally.missing_images:,} missing {tally.missing_tags:,} tags, {not_removed}"
        f"{tally.gone:,} gone, {tally.unverified:,} unverified"
    )


def exit_code(tally: VerifyTally) -> ExitCode:
    if tally.aborted is not None:
        return ExitCode.ABORTED
    return ExitCode.SOME_FAILED if tally.problems else ExitCode.OK


def command_verify(
    args: argparse.Namespace, environment_env: Mapping[str, str], stderr: TextIO
) -> int:
    """Run ``bulktag verify`` (exit codes in the module docstring). Never prints the token."""
    started = time.monotonic()
    try:
        plan = _plan(args, environment_env)
        if not plan.expected:
            if plan.read.ims_ok:
                stderr.write(_only_ims(args.journals, plan.read.ims_ok))
                return ExitCode.OK
            named = " ".join(args.journals)
            records = "records" if len(args.journals) == 1 else "hold"
            stderr.write(f"bulktag verify: nothing to verify: {named} {records} no ok tag\n")
            return ExitCode.OK
        with _open_output(args.output) as output:
            lines = _ProblemLines(output, stderr)
            tally = anyio.run(_verify, plan, lines, stderr)
    except BulktagError as exc:  # plain text, as verify writes all it says
        stderr.write(refusal_line(exc, "bulktag verify") + "\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    _write_summary(tally, plan.read.files, lines, time.monotonic() - started, stderr)
    return exit_code(tally)


def _only_ims(journals: list[str], records: int) -> str:
    hold = "holds" if len(journals) == 1 else "hold"
    return (
        f"bulktag verify: nothing to verify: {' '.join(journals)} {hold} only IMS key/value tags "
        f"({records:,} ok records), which Glance's tag list, the one verify reads back, does "
        "not show\n"
    )


def _write_summary(
    tally: VerifyTally,
    journals: list[FileStats],
    lines: _ProblemLines,
    elapsed: float,
    stderr: TextIO,
) -> None:
    if lines.hidden:
        stderr.write(f"  … and {lines.hidden:,} more problems (--output PATH lists them all)\n")
    stderr.write(summary_line(tally, elapsed) + "\n")
    for journal in journals:
        skipped = journal.unreadable + journal.torn
        if skipped:
            name = "the journal" if len(journals) == 1 else journal.path
            stderr.write(f"  {name} had {skipped:,} unreadable or torn lines (ignored)\n")
    if tally.aborted is not None:
        stderr.write(f"bulktag verify: stopped: {tally.aborted}\n")
