"""Benchmark bulktag against the minimal aiohttp loop and openstacksdk, on this machine.

    python benchmarks/run.py                 # full run (~15-20 min), writes benchmarks/RESULTS.md
    python benchmarks/run.py --quick         # smaller sizes, 2 repetitions (~4 min)
    python benchmarks/run.py --smoke         # tiny sizes, 1 repetition, < 60 s: for CI
    python benchmarks/run.py --only rate     # one scenario (repeatable, or comma-separated)
    python benchmarks/run.py --only pacing   # the pacing matrix of issue 13 (~4.5-9 min)
    python benchmarks/run.py --only pacing --model bucket   # its models whose name has "bucket"

Exit status: 0 when every run of every scenario completed, 1 when a client or a scenario
crashed (timings are never judged here: a missed target is reported, not failed), 2 for usage
errors, 130 on Ctrl-C. All servers are stopped and generated files deleted in every case.

The harness itself needs only the standard library; the clients and servers run with the
project's interpreter (``.venv/bin/python``) and openstacksdk with ``benchmarks/.venv-sdk``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
import traceback
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import measure
import report
import scenarios
from harness import HERE, REPO, Harness, Tools, cleanup_dir, prune_generated
from report import Table


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller sizes, 2 repetitions")
    size.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repetition (CI)")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only these scenarios: {', '.join(scenarios.SCENARIOS)}",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="TEXT",
        help="pacing matrix: run only the models whose name contains TEXT (repeatable)",
    )
    parser.add_argument("--output", type=Path, help="where to write the results table")
    parser.add_argument("--python", help="interpreter for bulktag and the minimal client")
    parser.add_argument(
        "--bulktag",
        default="HEAD",
        metavar="REV",
        help="git revision of bulktag to measure (exported with git archive), or 'tree' for "
        "the working tree as it is [default HEAD]",
    )
    args = parser.parse_args(argv)
    args.only = _names(parser, args.only)
    return args


def _names(parser: argparse.ArgumentParser, only: list[str] | None) -> list[str]:
    if not only:
        return list(scenarios.SCENARIOS)
    names = [n.strip() for item in only for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in scenarios.SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}")
    return names


def output_path(args: argparse.Namespace) -> Path:
    """Only a full run of every scenario replaces the committed RESULTS.md."""
    if args.output:
        return Path(args.output)
    if args.smoke:
        return HERE / "work" / "RESULTS-smoke.md"
    if args.quick:
        return HERE / "work" / "RESULTS-quick.md"
    if args.only != list(scenarios.SCENARIOS) or args.model:
        return HERE / "work" / "RESULTS-partial.md"
    return HERE / "RESULTS.md"


def versions(tools: Tools) -> list[str]:
    lines = [f"aiohttp {_probe(tools.python, 'aiohttp')}"]
    if tools.uvloop:
        lines.append(f"uvloop {_probe(tools.python, 'uvloop')}")
    if tools.sdk_python:
        sdk, auth = (
            _probe(tools.sdk_python, "openstacksdk"),
            _probe(tools.sdk_python, "keystoneauth1"),
        )
        lines.append(f"openstacksdk {sdk} with keystoneauth1 {auth}")
    if tools.nginx:
        lines.append(_output([tools.nginx, "-v"]).removeprefix("nginx version: "))
    pin = "not pinned (needs taskset and 2 cores)"
    if tools.client_core is not None:
        pin = f"clients on core {tools.client_core}, servers on core {tools.server_core} (taskset)"
    lines.append(f"pinning: {pin}")
    return lines


def _probe(python: str, distribution: str) -> str:
    code = f"from importlib.metadata import version; print(version({distribution!r}))"
    return _output([python, "-c", code])


def _output(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    return (done.stdout or done.stderr).strip()


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_scenarios(
    args: argparse.Namespace, harness: Harness, sizes: scenarios.Sizes
) -> tuple[list[Table], list[str]]:
    tables: list[Table] = []
    skipped: list[str] = []
    with ExitStack() as stack:  # owns the shared nginx: stopped however we leave
        ctx = scenarios.Context(harness, sizes, stack)
        for name in args.only:
            log(f"== {name}")
            started = time.perf_counter()
            try:
                table = scenarios.SCENARIOS[name](ctx)
            except scenarios.SkipScenario as exc:
                log(f"  skipped: {exc}")
                skipped.append(f"{name}: {exc}")
                continue
            except Exception:
                # A crashed scenario must not hide the others' results; it fails the run.
                harness.failures.append(
                    f"scenario {name} crashed:\n```\n{traceback.format_exc()}```"
                )
                log(traceback.format_exc())
                continue
            table.seconds = time.perf_counter() - started
            tables.append(table)
    return tables, skipped


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    measure.start_spawner()  # first, while this process is small: see spawner.py
    # SIGTERM (CI timeouts, kill) unwinds like Ctrl-C, so the ExitStacks stop every server.
    # SIGINT is set too: a shell starts background jobs with SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler of its own.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    sizes = scenarios.SMOKE if args.smoke else scenarios.QUICK if args.quick else scenarios.FULL
    if args.model:
        sizes = replace(sizes, pacing=replace(sizes.pacing, models=tuple(args.model)))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    workdir = HERE / "work" / f"run-{stamp}"
    workdir.mkdir(parents=True)
    try:
        tools = Tools.discover(args.python, args.bulktag, workdir)
    except subprocess.CalledProcessError as exc:
        log(f"cannot export bulktag at {args.bulktag!r}: {exc.stderr.strip() or exc}")
        cleanup_dir(workdir)
        return 2
    log(f"measuring bulktag: {tools.bulktag_source}")
    if tools.bulktag_missing:
        log(f"NOTE: bulktag rows are skipped: {tools.bulktag_missing}")
    load_before = os.getloadavg()
    harness = Harness(tools, workdir, log)
    started = time.perf_counter()
    try:
        tables, skipped = run_scenarios(args, harness, sizes)
    except KeyboardInterrupt:
        log("interrupted: servers stopped, generated files deleted")
        cleanup_dir(workdir)
        return 130
    if tools.bulktag_missing:
        skipped.insert(0, f"bulktag rows: {tools.bulktag_missing}")
    command = shlex.join(["python", "benchmarks/run.py", *argv])
    out = output_path(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    facts = [
        f"bulktag measured: {tools.bulktag_source}",
        *versions(tools),
        f"load average (1 min) before / after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f} "
        "(other work on the machine competes with the pinned processes)",
    ]
    before = out.read_text() if out.exists() else None
    out.write_text(
        report.keeping_notes(
            report.document(command, facts, tables, harness.failures, skipped), before
        )
    )
    log(f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out} "
        f"in {time.perf_counter() - started:.0f} s")  # fmt: skip
    if harness.failures:
        prune_generated(workdir)
        log(f"{len(harness.failures)} failure(s); logs kept in {workdir}")
        return 1
    cleanup_dir(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
