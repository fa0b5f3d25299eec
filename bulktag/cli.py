"""The command line: the only module that reads argv, the environment and config files,
configures logging, installs signal handlers and picks the exit code.

    bulktag run [INPUT] --endpoint URL --token TOKEN [--results PATH] [...]
    bulktag demo
    bulktag serve-fake [--port 9292] [...]
    bulktag completion bash|zsh
    bulktag --version
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import gc
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO, cast

import anyio

from bulktag.config import BY_NAME, ConfigError, Settings, parse_toml, resolve
from bulktag.environment import STOP_SIGNALS, Environment
from bulktag.errors import BulktagError, ExitCode
from bulktag.logs import error_line, refusal_line
from bulktag.summary import new_run_id, summary_document, write_summary

DEFAULT_CONFIG = "bulktag.toml"


class UsageError(BulktagError):
    """The command line was refused: argparse's message, and the parser that refused it."""

    event = "usage_error"

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog
        self.message = message

    def line(self, hint: str = "") -> str:
        """The one-line error, with a hint (``did you mean …?``) before the pointer to help."""
        return f"{self.prog}: error: {self.message}{hint} (see {self.prog} --help)"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (not usage + error) that :func:`main` prints
    (as JSON in JSON mode) before exiting 2, and a flag is taken only by its full name:
    ``--rat 5`` must not quietly mean ``--rate 5``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(self.prog, message)


def known_flags(parser: argparse.ArgumentParser) -> list[str]:
    """Every flag of ``parser`` and of the subcommands it has defined flags for."""
    flags = [flag for action in parser._actions for flag in action.option_strings]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags += known_flags(sub)
    return flags


def did_you_mean(message: str, flags: Sequence[str]) -> str:
    """`` (did you mean --rate?)`` for the unknown flags in argparse's message that are close
    to a known one (``--rat``, ``--dryrun``, ``--project``); empty when none is."""
    unknown = message.partition("unrecognized arguments: ")[2].split()
    pairs = []  # (typed, meant)
    for typed in (word.partition("=")[0] for word in unknown if word.startswith("--")):
        close = difflib.get_close_matches(typed, flags, n=1, cutoff=0.75)
        pairs += [(typed, close[0])] if close else []
    if len(pairs) == 1:
        return f" (did you mean {pairs[0][1]}?)"
    if pairs:
        return f" (did you mean: {', '.join(f'{typed} → {meant}' for typed, meant in pairs)}?)"
    return ""


def _add_run_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "input",
        nargs="?",
        default="-",
        help="CSV of image_id,tag pairs (with --api ims: image_id,key[,value]); "
        "'-' (the default) reads stdin",
    )
    run.add_argument("--endpoint", help="image service URL, with or without /v2 [env OS_IMAGE_URL]")
    run.add_argument(
        "--token",
        help="auth token sent as X-Auth-Token [env OS_AUTH_TOKEN; "
        "prefer the variable: flags are visible in ps]",
    )
    run.add_argument(
        "--results",
        metavar="PATH",
        help="the journal; running again with the "
        f"same journal resumes [default {BY_NAME['results'].default}]",
    )
    run.add_argument(
        "--fresh",
        action="store_true",
        default=None,
        help="start a new journal (the old one is renamed, never deleted)",
    )
    run.add_argument(
        "--config",
        metavar="FILE",
        help=f"TOML settings file [default ./{DEFAULT_CONFIG} if present]",
    )
    numeric: list[tuple[str, type, str]] = [
        ("rate", float, "requests per second, retries included: a hard ceiling"),
        (
            "burst",
            int,
            "requests allowed at once above the steady rate [default: 20 ms "
            "worth of --rate, at least 1]",
        ),
        ("concurrency", int, "most requests in flight at once"),
        ("max_attempts", int, "attempts per row before it is recorded gave_up"),
        ("timeout", float, "seconds one request may take"),
        (
            "max_consecutive_failures",
            int,
            "stop the run after this many consecutive rows failed the same way (0: never)",
        ),
        ("grace_period", float, "seconds in-flight requests get to finish after Ctrl-C"),
        ("fsync_interval", float, "seconds between fsyncs of the journal (0: every write)"),
        (
            "progress_interval",
            float,
            "seconds between progress log events when stderr is not a terminal",
        ),
    ]
    for name, kind, text in numeric:
        default = BY_NAME[name].default
        suffix = "" if default is None else f" [default {default}]"
        run.add_argument("--" + name.replace("_", "-"), type=kind, metavar="N", help=text + suffix)
    run.add_argument("--cacert", metavar="FILE", help="CA bundle for TLS [env OS_CACERT]")
    run.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="do not verify TLS certificates (dangerous)",
    )
    _add_choice(run, "log_format", "auto: JSON unless stderr is a terminal")
    _add_choice(run, "log_level")
    _add_choice(
        run,
        "summary",
        "json: also print one JSON document on stdout at the end — exit code, run id, "
        "counts — even when the run could not start [default text: stderr only]",
    )
    batch = run.add_argument_group("batch operation")
    _add_choice(
        batch,
        "op",
        "add the tags (the default) or remove them (a tag already absent counts as "
        "done; with --api ims a row without a value removes the key whatever its value)",
    )
    batch.add_argument(
        "--tag",
        metavar="TAG",
        help="the input is a list of image ids, one a line (e.g. openstack image list -f value "
        "-c ID); give each this tag (with --api ims: KEY or KEY=VALUE)",
    )
    batch.add_argument(
        "--retry-failed",
        action="store_true",
        default=None,
        help="also send again the pairs the journal records as failed",
    )
    batch.add_argument(
        "--shard",
        metavar="K/N",
        help="handle only the images that hash to shard K of N (0 <= K < N); "
        "each shard needs its own --results",
    )
    batch.add_argument(
        "--max-duration",
        metavar="DURATION",
        help="stop dispatching after this long (90s, 30m, 6h, 1h30m), finish "
        "in-flight requests, exit 4; the next run continues [default and 0: no limit]",
    )
    batch.add_argument(
        "--max-items",
        type=int,
        metavar="N",
        help="send at most N rows this run, then exit 4 if rows are left",
    )
    batch.add_argument(
        "--metrics-file",
        metavar="PATH",
        help="write Prometheus text-format metrics here (node_exporter's textfile "
        "collector), atomically, during and after the run",
    )
    batch.add_argument(
        "--accept-earlier-failures",
        action="store_true",
        default=None,
        help="rows that failed or were invalid in an earlier run (reported then, skipped now) "
        "do not make this run exit 1, nor hold back the metrics' last-success time",
    )
    batch.add_argument(
        "--max-outage",
        metavar="DURATION",
        help="stop once the cloud has accepted nothing for this long, finish in-flight "
        "requests, exit 75 (try again later); the next run continues [default 5m; 0: never]",
    )
    batch.add_argument(
        "--lock-wait",
        metavar="DURATION",
        help="wait this long for another run on the same journal to finish "
        "[default 0: exit 5 at once]",
    )
    batch.add_argument(
        "--dry-run",
        action="store_true",
        help="validate the input and count what would be sent, offline: no credentials "
        "needed, nothing sent, nothing written",
    )
    batch.add_argument(
        "--dry-run-online",
        action="store_true",
        help="--dry-run, and first log in and read the image service once, as a run "
        "would (credentials, endpoint, project); still sends and writes nothing",
    )
    _add_ims_arguments(run)
    from bulktag.auth import add_credential_arguments

    add_credential_arguments(run)
    # Testing only: turns off per-image serialization to demonstrate Glance's lost updates.
    run.add_argument("--unsafe-no-image-lock", action="store_true", help=argparse.SUPPRESS)


def _add_choice(
    group: argparse.ArgumentParser | argparse._ArgumentGroup, name: str, text: str | None = None
) -> None:
    """``--name`` taking one of its option's choices: config.OPTIONS states them once."""
    group.add_argument("--" + name.replace("_", "-"), choices=BY_NAME[name].choices, help=text)


def _add_ims_arguments(run: argparse.ArgumentParser) -> None:
    ims = run.add_argument_group("Huawei Cloud IMS key/value tags")
    _add_choice(
        ims,
        "api",
        "glance: the native tag call (PUT /v2/images/{id}/tags/{tag}); ims: IMS's "
        "key/value tag API, several tags of an image per request [default glance]",
    )
    ims.add_argument(
        "--project-id",
        metavar="ID",
        help="project in IMS's URLs [default: the token's project; env OS_PROJECT_ID]",
    )
    _add_choice(
        ims,
        "ims_charset",
        "strict: keys of letters, digits, _ and -, values also '.'; relaxed: any "
        "printable character but = * < > \\ , | / [default strict]",
    )
    limits: list[tuple[str, type, str]] = [
        ("ims_max_key_length", int, "longest key accepted"),
        ("ims_max_value_length", int, "longest value accepted"),
        ("ims_tags_per_call", int, "tags of one image per request (at most 10)"),
        ("batch_linger", float, "seconds a request may wait for more tags of its image"),
        ("ims_read_ahead", int, "rows read ahead to group an image's tags (80-165 B each)"),
    ]
    for name, kind, text in limits:
        flag, default = "--" + name.replace("_", "-"), BY_NAME[name].default
        ims.add_argument(flag, type=kind, metavar="N", help=f"{text} [default {default}]")


class _Version(argparse.Action):
    """``--version``, reading the installed version only when asked."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        import bulktag

        sys.stdout.write(f"bulktag {bulktag.__version__}\n")
        parser.exit()


def _add_report(parser: argparse.ArgumentParser) -> None:
    from bulktag.report import add_report_arguments

    add_report_arguments(parser)


def _add_verify(parser: argparse.ArgumentParser) -> None:
    from bulktag.verify import add_verify_arguments

    add_verify_arguments(parser)


def _add_serve(parser: argparse.ArgumentParser) -> None:
    from bulktag.fake.serve import add_serve_arguments

    add_serve_arguments(parser)


def _add_completion(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shell", choices=("bash", "zsh"), help="the shell to complete in")


# Each command's flags are defined only when that command runs (or asks for --help): the
# others would import the fake server's aiohttp.web, the report and verify modules for nothing.
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "run": ("tag images listed in a CSV file", _add_run_arguments),
    "demo": ("a one-minute tour against a built-in local server", lambda parser: None),
    "report": ("summarise one or more journals (shards merge)", _add_report),
    "verify": ("read tagged images back; report tags that are lost", _add_verify),
    "serve-fake": ("run the built-in Glance-like server, to rehearse a run", _add_serve),
    "completion": ("print a shell completion script: bash or zsh", _add_completion),
}


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser; only the command named in ``argv`` gets its flags defined."""
    parser = _Parser(
        prog="bulktag",
        description="Add tags to many cloud images, politely "
        "and resumably (OpenStack Glance v2 / Huawei Cloud IMS).",
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="show the version")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    wanted = next((arg for arg in argv if arg in _COMMANDS), None)
    for name, (text, add_arguments) in _COMMANDS.items():
        sub = commands.add_parser(name, help=text)
        if name == wanted:
            add_arguments(sub)
    return parser


class _ReaderMayBeGone:
    """stdout or stderr whose reader may go away (``bulktag report | head -1``): a write to a
    pipe nobody reads is dropped, not raised, and the command's own exit code stands."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._gone = False

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                self._stream.write(text)
            except BrokenPipeError:
                self._went_away()
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._went_away()

    def _went_away(self) -> None:
        self._gone = True
        # What is still buffered goes to /dev/null at exit, not to a "BrokenPipeError" notice.
        with contextlib.suppress(OSError, ValueError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())
            os.close(null)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _guarded(stream: TextIO) -> TextIO:
    return (
        stream if isinstance(stream, _ReaderMayBeGone) else cast(TextIO, _ReaderMayBeGone(stream))
    )


def _real_environment() -> Environment:
    stdout, stderr = _guarded(sys.stdout), _guarded(sys.stderr)
    return Environment(os.environ, sys.stdin.buffer, stdout, stderr, Path.cwd())


def load_settings(args: argparse.Namespace, environment: Environment) -> Settings:
    file_values: dict[str, Any] = {}
    name = args.config or str(environment.cwd / DEFAULT_CONFIG)
    path = Path(name)
    if args.config or path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise ConfigError(f"cannot read config file {name}: {reason}") from None
        file_values = parse_toml(text, name)
    flags = {key: getattr(args, key, None) for key in BY_NAME}
    return resolve(flags, environment.env, file_values, name)


def main(argv: Sequence[str] | None = None, environment: Environment | None = None) -> int:
    environment = environment or _real_environment()
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        hint = did_you_mean(exc.message, known_flags(parser))
        return _early_failure(argv, environment, exc.line(hint), exc)
    handlers: dict[str | None, Callable[[argparse.Namespace, Environment], int]] = {
        "run": _command_run,
        "demo": _command_demo,
        "report": _command_report,
        "verify": _command_verify,
        "serve-fake": _command_serve_fake,
        "completion": _command_completion,
    }
    if args.command is None:
        build_parser().print_help(environment.stderr)
        return ExitCode.USAGE
    try:
        return handlers[args.command](args, environment)
    except BulktagError as exc:
        return _early_failure(argv, environment, refusal_line(exc), exc)


def _early_failure(
    argv: Sequence[str], environment: Environment, message: str, error: BulktagError
) -> int:
    """A command line or configuration refused before the settings are known: one line (JSON
    in JSON mode), and for ``run --summary json`` the summary document, then the exit code."""
    is_run = next((arg for arg in argv if arg in _COMMANDS), None) == "run"
    log_format = _early_choice(argv, environment, "log_format") if is_run else "console"
    as_json = log_format == "json" or (log_format != "console" and not environment.stderr.isatty())
    code = error.exit_code
    error_line(environment.stderr, message, as_json=as_json, event=error.event, exit_code=code)
    if is_run and _early_choice(argv, environment, "summary") == "json":
        document = summary_document(new_run_id(), code, error=message)
        write_summary(environment.stdout, document)
    return code


def _early_choice(argv: Sequence[str], environment: Environment, name: str) -> str:
    """A setting read before the settings are: its last flag in ``argv``, else its
    ``BULKTAG_*`` variable, else its default. A config file is not read (it may be the
    error)."""
    flag = "--" + name.replace("_", "-")
    chosen = environment.env.get(f"BULKTAG_{name.upper()}", str(BY_NAME[name].default))
    for arg, value in zip(argv, [*argv[1:], ""], strict=True):
        if arg == flag:
            chosen = value
        elif arg.startswith(flag + "="):
            chosen = arg.partition("=")[2]
    return chosen


def entry_point() -> NoReturn:
    """The program (``bulktag``, ``python -m bulktag``): :func:`main`, then exit.

    The garbage collector is frozen first: the interpreter's shutdown would otherwise run full
    collections over every object the run left (a noticeable share of a short run's time),
    and nothing left needs them — the journal, the log and the lock are closed by then, and
    the memory goes back with the process. ``main`` itself stays a plain function for tests
    and embedding.
    """
    _closed_std_streams_to_devnull()
    sys.stdout, sys.stderr = _guarded(sys.stdout), _guarded(sys.stderr)  # argparse writes too
    _large_blocks_mapped()
    code = main()
    gc.freeze()
    sys.exit(code)


def _large_blocks_mapped() -> None:
    """glibc: every block of 128 KiB or more gets its own mapping, given back when freed.

    By default glibc raises that threshold to the size of each mapped block freed (up to 32
    MiB), so once an IMS run's tables have grown a few times (the per-(image, key) KeyMap and
    the window's HeldMap: arrays of 100 KiB to 1 MiB, each replaced by a larger one as it
    grows) their later arrays come from the heap, where the old ones leave holes that the RSS
    keeps; mapping them returns that memory (benchmarks/RESULTS.md, section 8). Elsewhere
    (another libc) nothing happens.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
    except (OSError, AttributeError):  # no mallopt (not glibc): its default stays
        pass


_M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def _closed_std_streams_to_devnull() -> None:
    """A standard stream closed by the caller (``2>&-``, ``>&-``, ``<&-``) becomes /dev/null:
    what goes to it is dropped, and stdin reads as empty — no AttributeError on None.

    Done on the descriptor itself: left closed, the next file opened (the journal) would get
    its number, and anything written to "stderr" would land in the journal.
    """
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, mode, encoding="utf-8", closefd=False))  # noqa: SIM115


def _command_run(args: argparse.Namespace, environment: Environment) -> int:
    from bulktag.runner import Refusal, refuse, run_command

    install_interrupt_handlers()  # until the run's own handlers take over
    settings = load_settings(args, environment)
    run_id = new_run_id()
    try:
        return run_command(args, settings, environment, run_id)
    except BulktagError as exc:  # the settings are known now: they say how to report it
        code = exc.exit_code
        refuse(environment, settings, Refusal(run_id, refusal_line(exc), code, exc.event))
        return code


def _command_report(args: argparse.Namespace, environment: Environment) -> int:
    from bulktag.report import command_report

    return command_report(args, environment.stdout, environment.stderr)


def _command_verify(args: argparse.Namespace, environment: Environment) -> int:
    from bulktag.verify import command_verify

    install_interrupt_handlers()  # verify turns KeyboardInterrupt into exit 130
    return command_verify(args, environment.env, environment.stderr)


def _command_demo(args: argparse.Namespace, environment: Environment) -> int:
    from bulktag.demo import run_demo

    return run_demo(environment.stderr)


def _command_completion(args: argparse.Namespace, environment: Environment) -> int:
    from bulktag.completion import SHELLS, commands

    environment.stdout.write(SHELLS[args.shell](commands(build_parser)))
    return ExitCode.OK


def _command_serve_fake(args: argparse.Namespace, environment: Environment) -> int:
    from bulktag.fake.serve import config_from_args, serve_forever

    try:
        config = config_from_args(args)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(serve_forever, config, args.host, args.port)
    return ExitCode.OK


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def install_interrupt_handlers() -> None:
    """SIGINT, SIGTERM (systemd, Kubernetes) and SIGHUP (the terminal or the ssh session went
    away) raise KeyboardInterrupt at once, until the run's own handlers take over; the runner
    turns it into exit 130.

    Our own function, not ``signal.default_int_handler``: asyncio.Runner replaces that one with
    a handler that only cancels the main task on the first Ctrl-C, and a SIGINT during the
    preflight could then leave the process running (SIGTERM, which always raised at once,
    never hung). One path for both signals.
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, _interrupt)
