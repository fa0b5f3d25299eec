"""Why a command stops before it could do its work, and the exit code each cause maps to.

Every refusal is a :class:`BulktagError`: its message is the one line the operator reads (never
a secret), its class names the cause, and its ``exit_code`` and ``event`` say how the command
ends. Modules raise the cause where they find it and let it travel; a command's entry point
(the CLI, ``verify.command_verify``) ends with ``logs.refusal_line(error)`` and
``error.exit_code``, so a cause maps to the same code whichever command meets it.

Exit codes (also in the README):

    0    every row ok (or already done by an earlier run)
    1    the run finished, but some rows failed, gave up or were invalid
    2    usage or configuration error: a retry will not help (nothing was sent)
    3    the run was aborted (credentials refused, breaker tripped, journal unwritable)
    4    stopped by --max-duration or --max-items with rows left: run again to go on
    5    another run holds the journal's lock
    75   try again later: the cloud or its identity service is unreachable or failing
    130  interrupted (SIGINT/SIGTERM/SIGHUP); run the same command again to resume
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar


class ExitCode(IntEnum):
    OK = 0
    SOME_FAILED = 1
    USAGE = 2
    ABORTED = 3
    INCOMPLETE = 4
    LOCKED = 5
    TEMPFAIL = 75  # sysexits' EX_TEMPFAIL: the cloud is not taking requests; run again later
    INTERRUPTED = 130


class BulktagError(Exception):
    """A command cannot do its work; by default a usage or configuration error (exit 2), which
    a retry will not fix. ``event`` names it in JSON logs; ``hint`` follows the message."""

    exit_code: ClassVar[ExitCode] = ExitCode.USAGE
    event: ClassVar[str] = "config_error"
    hint: ClassVar[str] = ""  # said after the message: what the operator may do about it


class CloudUnavailable(BulktagError):
    """The image service could not be reached at start: not the command's fault."""

    exit_code = ExitCode.TEMPFAIL
    event = "cloud_unavailable"
    hint = "; try again later"
