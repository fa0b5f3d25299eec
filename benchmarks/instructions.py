"""CPU work per pair, counted in instructions: the steady yardstick for client overhead.

    python benchmarks/instructions.py [--pairs 3000] [--bulktag REV|tree] [--loop uvloop|asyncio]

Wall-clock and CPU-time ratios on this shared 2-core machine move by ±15% between runs of the
same code (run F's per-repetition uvloop ratios spanned 0.82–1.12 for one commit:
RESULTS.md at e9bf1d8). Counting the instructions a client executes does not: each client
runs under ``valgrind --tool=cachegrind`` (no cache simulation) against nginx, once with 1
pair and once with ``--pairs``; the difference divided by the extra pairs is its user-space
instructions per pair, start-up excluded. Two runs of the same client agree within ~0.7%
(bulktag at 86a691c: 359,984 and 362,311), so a change smaller than ~3,000 instructions a
pair needs several runs of each side. Kernel work (syscalls) is not
counted, so this complements the throughput scenario of run.py rather than replacing it; use
it to judge a change to the hot path before and after. One distortion: under valgrind a
client runs ~50x slower, so whatever is cached per unit of time (the journal's millisecond
time stamp) hits far less than at real speed, and a change to such a cache must be judged at
real speed too.

Prints instructions per pair for bulktag (everything on, as in run.py) and the minimal aiohttp
client on each loop, and the ratio minimal ÷ bulktag (the throughput ratio the CPU-bound
scenario would show if instructions were all that counted).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from endpoints import Nginx
from harness import Job, Tools, bulktag_command, minimal_command, uvloop_blocker
from workloads import write_csv

HERE = Path(__file__).resolve().parent
_REFS = re.compile(rb"I\s+refs:\s+([\d,]+)")


def instructions(cmd: list[str], env: dict[str, str], cwd: Path) -> int:
    """User-space instructions ``cmd`` executed, as cachegrind counts them."""
    valgrind = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
    ]
    done = subprocess.run(
        [*valgrind, *cmd], check=False, env=env, cwd=cwd, capture_output=True, timeout=1800
    )
    found = _REFS.search(done.stderr)
    if done.returncode != 0 or found is None:
        tail = done.stderr.decode(errors="replace")[-1500:]
        raise RuntimeError(f"{cmd[:4]}… exited {done.returncode}:\n{tail}")
    return int(found.group(1).replace(b",", b""))


def per_pair(
    tools: Tools, client: str, loop: str, endpoint: str, *, work: Path, pairs: int
) -> float:
    env = tools.env
    if client == "bulktag" and loop == "asyncio":  # bulktag picks uvloop when it can import it
        env["PYTHONPATH"] = ":".join(filter(None, [env.get("PYTHONPATH"), uvloop_blocker()]))
    counts = []
    for n in (1, pairs):
        job = Job(
            input=write_csv(work / f"input-{n}.csv", n),
            pairs=n,
            endpoint=endpoint,
            journal=work / f"journal-{client}-{n}.jsonl",
        )
        command = bulktag_command if client == "bulktag" else minimal_command(loop)
        cmd = command(tools, job)
        if n == 1:
            # Unmeasured first: on a fresh checkout or venv, the first run compiles every module
            # it imports to bytecode, which would land in the 1-pair count (a new venv read
            # -299,271 instructions a pair).
            subprocess.run(cmd, check=True, env=env, cwd=work, capture_output=True, timeout=600)
        if job.journal is not None:
            job.journal.unlink(missing_ok=True)  # a run of its own, not a resume
        counts.append(instructions(cmd, env, work))
    return (counts[1] - counts[0]) / (pairs - 1)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3000)
    parser.add_argument("--bulktag", default="tree", help="a git revision, or tree (default)")
    parser.add_argument("--loop", action="append", choices=["uvloop", "asyncio"])
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is needed: apt-get install -y valgrind", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bulktag-instructions-"))
    tools = Tools.discover(None, args.bulktag, work)
    if tools.nginx is None:
        print("nginx is needed: apt-get install -y nginx-light", file=sys.stderr)
        return 2
    print(f"bulktag: {tools.bulktag_source}; {args.pairs} pairs; instructions per pair")
    with Nginx(tools.nginx, None) as server:
        for loop in args.loop or ["uvloop", "asyncio"]:
            url = server.base_url
            mine = per_pair(tools, "bulktag", loop, url, work=work, pairs=args.pairs)
            base = per_pair(tools, "minimal", loop, url, work=work, pairs=args.pairs)
            ratio = base / mine
            print(
                f"{loop:8} bulktag {mine:9,.0f}  minimal {base:9,.0f}  minimal÷bulktag {ratio:.3f}"
            )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
