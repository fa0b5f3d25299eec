"""Start-up cost of each credentials path: what the openstack libraries add, and to whom.

``python benchmarks/startup.py [--repeat N] [--base DIR]`` times whole ``bulktag run``
processes of one row against a fake Glance (and a fake Keystone), median of N (default 7):

* ``token``: ``--token`` + ``--endpoint``, the light path: openstacksdk and keystoneauth1 are
  never imported;
* ``keystone``: ``--os-auth-url`` + password, resolved by openstacksdk and logged in through
  keystoneauth1;
* ``help``: ``bulktag run --help``.

It also reports the import time of ``openstack.config`` + ``keystoneauth1.session`` alone
(``python -X importtime``, median of N). With ``--base DIR`` (an older bulktag source tree, e.g.
from ``git archive``), the token path and --help are timed on it too, for a before/after.
Nothing here asserts a figure: see RESULTS-startup.md for the measured ones.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from aiohttp import web

from bulktag.fake.glance import FakeGlance, FakeGlanceConfig
from bulktag.fake.keystone import (
    FakeEndpoint,
    FakeKeystone,
    FakeKeystoneConfig,
    FakeProject,
    FakeUser,
)

IMAGE = "5f0f7e0c-3c8a-4a5e-9f8e-0a1b2c3d4e5f"


def serve_in_thread(app: web.Application) -> str:
    """Serve ``app`` on loopback from a daemon thread; return its base URL."""
    ready: list[str] = []
    started = threading.Event()

    def run() -> None:
        loop = asyncio.new_event_loop()
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
        ready.append(f"http://127.0.0.1:{runner.addresses[0][1]}")
        started.set()
        loop.run_forever()

    threading.Thread(target=run, daemon=True).start()
    started.wait(10)
    return ready[0]


def timed(
    argv: list[str], env: dict[str, str], cwd: Path, pythonpath: str | None
) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one whole process. On a shared machine the CPU time is
    the steadier figure: waiting for a core shows in the wall time only."""
    if pythonpath:
        env = {**env, "PYTHONPATH": pythonpath}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False, timeout=120)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{argv} failed ({done.returncode}): {done.stderr.decode()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def import_time(env: dict[str, str]) -> float:
    """Seconds ``import openstack.config, keystoneauth1.session`` adds, by -X importtime."""
    code = "import openstack.config, keystoneauth1.session"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    total = 0
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[2].strip() in {"openstack.config", "keystoneauth1.session"}:
            total += int(parts[1].strip())  # cumulative µs of that top-level import
    return total / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--base", help="an older bulktag source tree to time as well")
    args = parser.parse_args()

    keystone = FakeKeystone(
        FakeKeystoneConfig(
            users=[FakeUser("u-1", "alice", "alice-password")],
            projects=[FakeProject("p-1", "tea-party")],
        )
    )
    glance_url = serve_in_thread(FakeGlance(FakeGlanceConfig()).app())
    keystone.config.image_endpoints = [FakeEndpoint(glance_url)]
    keystone_url = serve_in_thread(keystone.app())

    work = Path(tempfile.mkdtemp(prefix="bulktag-startup-"))
    (work / "in.csv").write_text(f"{IMAGE},nightly\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "BULKTAG_"))}
    env["HOME"] = str(work)
    bulktag = [sys.executable, "-m", "bulktag"]
    run = [*bulktag, "run", "in.csv", "--fresh", "--results", "j.jsonl", "--log-format", "json"]
    token = [*run, "--token", "t", "--endpoint", glance_url]
    login = [*run, f"--os-auth-url={keystone_url}/v3", "--os-username=alice",
             "--os-password=alice-password", "--os-user-domain-id=default",
             "--os-project-id=p-1"]  # fmt: skip
    cases = {"help": [*bulktag, "run", "--help"], "token": token, "keystone": login}

    trees = [("this tree", None)] + ([("base", args.base)] if args.base else [])
    runs = [
        (label, path, name, argv)
        for label, path in trees
        for name, argv in cases.items()
        if not (path and name == "keystone")  # the old Keystone client is not the question
    ]
    # Interleaved, one of each per round: a busy machine slows every case alike.
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {(r[0], r[2]): [] for r in runs}
    imports: list[float] = []
    for _ in range(args.repeat):
        for label, path, name, argv in runs:
            samples[label, name].append(timed(argv, env, work, path))
        imports.append(import_time(env))
    print(f"median of {args.repeat} interleaved rounds (min–max), seconds, whole process:")
    for (label, name), values in samples.items():
        wall, cpu = _summary([v[0] for v in values]), _summary([v[1] for v in values])
        print(f"  {label:9} {name:8} wall {wall}  cpu {cpu}")
    print(f"  import openstack.config + keystoneauth1.session: {_summary(imports)}")


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}–{max(values):.3f})"


if __name__ == "__main__":
    main()
