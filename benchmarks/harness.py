"""The harness: which tools are here, how each client is invoked, and one measured run.

A *client* turns a :class:`Job` (input, endpoint, concurrency, rate) into a command line. The
harness runs that command pinned to the client core, measures it with ``wait4``, and reads the
server's own view of the run (PUTs, 503s, arrival times) from the endpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from endpoints import Server
from measure import Measurement, achieved_rate, run_measured, worst_window
from pinning import CLIENT_CORE, SERVER_CORE, can_pin, pinned

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
T = TypeVar("T")
TOKEN = "bench-token"  # the endpoints ignore it; it only has to be sent


@dataclass(frozen=True, slots=True)
class Tools:
    """What this machine offers; a missing piece skips rows instead of failing the run."""

    python: str  # the project's interpreter: runs bulktag, the minimal client and servers.py
    sdk_python: str | None  # the openstacksdk venv's interpreter
    nginx: str | None
    uvloop: bool
    bulktag_source: str  # which bulktag is measured, for the report
    bulktag_path: str | None  # put first on PYTHONPATH: a snapshot of a commit, or None
    bulktag_missing: str | None  # why ``python -m bulktag run`` cannot be used, or None
    client_core: int | None
    server_core: int | None

    @classmethod
    def discover(cls, python: str | None, source: str, workdir: Path) -> Tools:
        py = python or default_python()
        sdk = HERE / ".venv-sdk" / "bin" / "python"
        pin = can_pin()
        label, path = bulktag_snapshot(source, py)
        return cls(
            python=py,
            sdk_python=str(sdk) if sdk.exists() else None,
            nginx=shutil.which("nginx") or _first_existing("/usr/sbin/nginx"),
            uvloop=_succeeds([py, "-c", "import uvloop"], workdir),
            bulktag_source=label,
            bulktag_path=path,
            bulktag_missing=_bulktag_missing(py, child_env(path), workdir),
            client_core=CLIENT_CORE if pin else None,
            server_core=SERVER_CORE if pin else None,
        )

    @property
    def env(self) -> dict[str, str]:
        return child_env(self.bulktag_path)


def bulktag_snapshot(source: str, python: str) -> tuple[str, str | None]:
    """Which bulktag to measure: ``tree`` is the working tree as it is (edits included);
    anything else is a git revision, exported with ``git archive`` under ``benchmarks/work/``.

    Measuring a commit keeps the figures reproducible, and keeps a half-saved edit by someone
    working in the same tree from crashing or skewing the run. Neither the working tree nor
    the index is touched. Either way the byte code is compiled up front (into the cache
    prefix, never the source tree), so no measured run pays for compiling.
    """
    if source == "tree":
        label, path = f"working tree of {_git_describe('HEAD')} (uncommitted edits included)", None
        sources = REPO / "bulktag"
    else:
        commit = _git_describe(source)
        label = f"commit {commit} (`git archive` snapshot)"
        target = HERE / "work" / "snapshots" / commit
        if not (target / "bulktag").exists():
            _export(commit, target)
        path, sources = str(target), target / "bulktag"
    compile_all = [python, "-m", "compileall", "-q", str(sources)]
    subprocess.run(compile_all, env=child_env(path), capture_output=True, check=True, timeout=120)
    return label, path


def _export(commit: str, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "bulktag"],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True, timeout=60)


def _git_describe(revision: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", f"{revision}^{{commit}}"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return done.stdout.strip()


def child_env(bulktag_path: str | None) -> dict[str, str]:
    """The environment of every client and server process.

    Byte-code caching on, in a cache under ``benchmarks/work/``: an installed tool starts from
    cached byte code, and a ``PYTHONDONTWRITEBYTECODE`` inherited from the shell would otherwise
    make every run recompile bulktag (~0.1 s per start). The prefix keeps the caches out of
    the source tree. A snapshot of bulktag goes first on ``PYTHONPATH``, ahead of the editable
    install (whose finder only runs after the path entries).
    """
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")
    }
    env["PYTHONPYCACHEPREFIX"] = str(HERE / "work" / "pycache")
    if bulktag_path:
        env["PYTHONPATH"] = bulktag_path
    return env


def default_python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _first_existing(path: str) -> str | None:
    return path if Path(path).exists() else None


def _succeeds(cmd: list[str], cwd: Path) -> bool:
    done = subprocess.run(cmd, capture_output=True, timeout=60, check=False, cwd=cwd)
    return done.returncode == 0


def _bulktag_missing(python: str, env: dict[str, str], cwd: Path) -> str | None:
    cmd = [python, "-m", "bulktag", "run", "--help"]
    done = subprocess.run(cmd, capture_output=True, timeout=60, check=False, cwd=cwd, env=env)
    if done.returncode == 0:
        return None
    last = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()[-1:]
    return f"`python -m bulktag run --help` exited {done.returncode}: {' '.join(last)}"


@dataclass(frozen=True, slots=True)
class Job:
    """One client run's parameters."""

    input: Path
    pairs: int
    endpoint: str
    concurrency: int = 64
    rate: float = 1_000_000.0  # bulktag only: high enough that the limiter never binds
    burst: int = 64
    journal: Path | None = None  # bulktag only; a fresh one per run unless given
    timeout_s: float = 600.0


@dataclass(frozen=True, slots=True)
class Client:
    """A named way of tagging: builds the command line for a job."""

    name: str
    command: Callable[[Tools, Job], list[str]]
    needs: Callable[[Tools], str | None]  # why it cannot run here, or None
    loop: str | None = None  # the event loop it runs on, when fixed: "asyncio" or "uvloop"
    is_bulktag: bool = False  # writes a journal and logs a run summary
    hide_uvloop: bool = False  # run with uvloop made unimportable


def bulktag_command(tools: Tools, job: Job) -> list[str]:
    assert job.journal is not None
    # Everything on: journal, limiter, per-image scheduling and JSON logging (to a file).
    return [
        tools.python, "-m", "bulktag", "run", str(job.input),
        "--endpoint", job.endpoint, "--token", TOKEN, "--results", str(job.journal),
        "--rate", str(job.rate), "--burst", str(job.burst),
        "--concurrency", str(job.concurrency), "--log-format", "json",
    ]  # fmt: skip


def minimal_command(loop: str) -> Callable[[Tools, Job], list[str]]:
    def command(tools: Tools, job: Job) -> list[str]:
        return [
            tools.python, str(HERE / "baseline_client.py"), str(job.input),
            "--endpoint", job.endpoint, "--token", TOKEN,
            "--concurrency", str(job.concurrency), "--loop", loop,
        ]  # fmt: skip

    return command


def sdk_command(tools: Tools, job: Job) -> list[str]:
    assert tools.sdk_python is not None
    # Threads beyond a handful do not help (the GIL); 16 is what an operator would try.
    return [
        tools.sdk_python, str(HERE / "sdk_client.py"), str(job.input),
        "--endpoint", job.endpoint, "--token", TOKEN, "--threads", "16",
    ]  # fmt: skip


BULKTAG = Client("bulktag", bulktag_command, lambda t: t.bulktag_missing, is_bulktag=True)
# bulktag picks uvloop whenever it can import it; hiding it measures the stock loop too, so
# each minimal client has a bulktag on its own event loop to be compared with.
BULKTAG_ASYNCIO = Client(
    "bulktag, uvloop hidden",
    bulktag_command,
    lambda t: t.bulktag_missing or (None if t.uvloop else "uvloop is not installed anyway"),
    is_bulktag=True,
    hide_uvloop=True,
)
MINIMAL_ASYNCIO = Client(
    "minimal aiohttp (asyncio)", minimal_command("asyncio"), lambda t: None, "asyncio"
)
MINIMAL_UVLOOP = Client(
    "minimal aiohttp (uvloop)",
    minimal_command("uvloop"),
    lambda t: None if t.uvloop else "uvloop is not installed in the project venv",
    "uvloop",
)
OPENSTACKSDK = Client(
    "openstacksdk add_tag (16 threads)",
    sdk_command,
    lambda t: None if t.sdk_python else "benchmarks/.venv-sdk is missing (see README)",
)


@dataclass(frozen=True, slots=True)
class Sample:
    """One measured run: the client's cost and the server's view of it."""

    client: str
    pairs: int
    measurement: Measurement
    server_cpu_s: float
    puts: int
    accepted: int
    rejected: int
    server_rate: float  # PUT arrivals per second, first to last arrival
    worst_window: int  # most PUT arrivals in any one-second window
    failure: str | None  # why this run does not count, or None
    summary: dict[str, Any]  # bulktag's own run_finished log event ({} for other clients)

    @property
    def rate(self) -> float:
        """Pairs per second, process start to exit: what an operator waits for."""
        return self.pairs / self.measurement.wall_s

    @property
    def cpu_ms_per_pair(self) -> float:
        return 1000 * self.measurement.cpu_s / max(1, self.pairs)

    @property
    def goodput(self) -> float:
        """Accepted PUTs per second, first to last arrival."""
        return self.server_rate * self.accepted / max(1, self.puts)


@dataclass(slots=True)
class Harness:
    tools: Tools
    workdir: Path
    log: Callable[[str], None]
    failures: list[str] = field(default_factory=list)
    sequence: int = 0

    def run(self, client: Client, job: Job, server: Server, expect_puts: int | None) -> Sample:
        """Run ``client`` on ``job`` against ``server``; record why it failed, if it did."""
        self.sequence += 1
        stem = self.workdir / f"{self.sequence:04d}-{client.name.split()[0]}"
        owns_journal = client.is_bulktag and job.journal is None
        if owns_journal:
            job = _with_journal(job, stem.with_suffix(".jsonl"))
        server.reset()
        cpu_before = server.cpu_seconds()
        out, err = stem.with_suffix(".out"), stem.with_suffix(".err")
        cmd = pinned(client.command(self.tools, job), self.tools.client_core)
        env = self.tools.env
        if client.hide_uvloop:
            env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [env.get("PYTHONPATH"), uvloop_blocker()])
            )
        measurement = run_measured(cmd, job.timeout_s, out, err, env=env, cwd=self.workdir)
        # Read the server's CPU before asking for stats: serialising a million arrival times
        # is the server's work, not the client's load.
        server_cpu_s = server.cpu_seconds() - cpu_before
        stats = server.stats(arrivals=True)
        arrivals: Sequence[float] = stats["arrivals"]
        failure = _failure(measurement, stats["puts"], expect_puts)
        sample = Sample(
            client=client.name,
            pairs=job.pairs,
            measurement=measurement,
            server_cpu_s=server_cpu_s,
            puts=stats["puts"],
            accepted=stats["accepted"],
            rejected=stats["rejected"],
            server_rate=achieved_rate(arrivals),
            worst_window=worst_window(arrivals),
            failure=failure,
            summary=run_summary(err) if client.is_bulktag else {},
        )
        self._settle(client, sample, (out, err), job.journal if owns_journal else None)
        return sample

    def _settle(
        self, client: Client, sample: Sample, logs: tuple[Path, Path], journal: Path | None
    ) -> None:
        if journal is not None:
            journal.unlink(missing_ok=True)
        if sample.failure is None:
            for path in logs:
                path.unlink(missing_ok=True)  # a successful run's logs tell nothing new
            self.log(f"    {client.name}: {sample.rate:,.0f} pairs/s, {_brief(sample)}")
            return
        message = f"{client.name}: {sample.failure} (logs kept: {logs[1]})"
        self.failures.append(message)
        self.log(f"    FAILED {message}")


def uvloop_blocker() -> str:
    """A directory whose ``uvloop.py`` raises ImportError, to put on a child's PYTHONPATH."""
    blocker = HERE / "work" / "no-uvloop"
    blocker.mkdir(parents=True, exist_ok=True)
    (blocker / "uvloop.py").write_text(
        'raise ImportError("uvloop hidden by benchmarks/ to measure the stock asyncio loop")\n'
    )
    return str(blocker)


def run_summary(stderr: Path) -> dict[str, Any]:
    """bulktag's ``run_finished`` event (counts, ``pace_cuts``...) from its JSON log, plus the
    ``event_loop`` its ``run_started`` event names; {} when the log has neither.

    Only the head and the tail are read: the log of a long run can be large, and those two
    events are its first and last.
    """
    with stderr.open("rb") as log:
        head = log.read(65536)
        size = log.seek(0, os.SEEK_END)
        log.seek(max(0, size - 65536))
        tail = log.read()
    events = {e.get("event"): e for e in json_events(head + b"\n" + tail)}
    summary = dict(events.get("run_finished", {}))
    if "event_loop" in events.get("run_started", {}):
        summary["event_loop"] = events["run_started"]["event_loop"]
    return summary


def json_events(text: bytes) -> list[dict[str, Any]]:
    """The JSON objects among ``text``'s lines (a log, a journal); other lines are skipped."""
    events = []
    for line in text.decode(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line cut by the head/tail split, or not JSON
        if isinstance(event, dict):
            events.append(event)
    return events


def _with_journal(job: Job, journal: Path) -> Job:
    return Job(
        job.input, job.pairs, job.endpoint, job.concurrency, job.rate, job.burst, journal,
        job.timeout_s,
    )  # fmt: skip


def _failure(m: Measurement, puts: int, expect_puts: int | None) -> str | None:
    if m.timed_out:
        return f"killed after its time budget ({m.wall_s:.0f} s)"
    if m.returncode != 0:
        return f"exit status {m.returncode}"
    if expect_puts is not None and puts != expect_puts:
        return f"server saw {puts} PUTs, expected {expect_puts}"
    return None


def _brief(sample: Sample) -> str:
    m = sample.measurement
    return (
        f"wall {m.wall_s:.2f} s, CPU {sample.cpu_ms_per_pair:.3f} ms/pair, "
        f"RSS {m.peak_rss_mib:.0f} MiB, server saw {sample.puts} PUTs"
    )


def interleaved(items: Sequence[T], repetition: int) -> list[T]:
    """``items`` rotated by the repetition number, so no client always runs first or last."""
    if not items:
        return []
    shift = repetition % len(items)
    return [*items[shift:], *items[:shift]]


def prune_generated(path: Path) -> None:
    """Delete the generated inputs and journals of a work directory, keeping its logs."""
    for pattern in ("*.csv", "*.jsonl"):
        for generated in path.glob(pattern):
            generated.unlink(missing_ok=True)


def cleanup_dir(path: Path) -> None:
    """Delete a work directory; the generated inputs and journals are large."""
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
