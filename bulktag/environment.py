"""What the outside world gives a command: environment variables, the standard streams, the
working directory, and the signals that stop a run. The CLI builds the real one; tests pass
their own. A module of its own so that the runner, which takes it, never imports the CLI."""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

#: What stops a run the same way (summary, final fsync, exit 130): Ctrl-C, a service manager,
#: a closed terminal or ssh session. SIGHUP's default action would kill the process mid-write.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True, slots=True)
class Environment:
    """What the outside world gives the CLI; tests pass their own."""

    env: Mapping[str, str]
    stdin: BinaryIO
    stdout: TextIO
    stderr: TextIO
    cwd: Path
