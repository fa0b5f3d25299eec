"""The shipped deployments do what an operator wants with every exit code.

The Kubernetes example: each of bulktag's exit codes is walked through the CronJob's
``podFailurePolicy`` with the rules Kubernetes applies (first matching rule wins, no match
counts against the per-index back-off limit, a pod that exited 0 succeeded), and the outcome is
compared with what the operator wants: the shard is done, done for tonight (not rerun), the
whole Job fails, or the shard is retried. The manifests are also validated against the
Kubernetes API schema, offline (kubernetes-validate ships the schemas).

The Containerfile is checked against what the manifest and pyproject assume of it (user id,
entry point, the ``speed`` extra); building it needs a registry this machine cannot reach.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import yaml

from bulktag.errors import ExitCode

ROOT = Path(__file__).resolve().parent.parent
CRONJOB = ROOT / "config" / "kubernetes" / "bulktag-cronjob.yaml"
CONTAINERFILE = ROOT / "Containerfile"
# The oldest Kubernetes with every field the example uses (backoffLimitPerIndex, FailIndex,
# podReplacementPolicy: beta and on by default in 1.29), and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.29", "1.37")


class Wanted(Enum):
    DONE = "the shard is done"
    DONE_FOR_TONIGHT = "finished for tonight, not rerun (the next night resumes)"
    JOB_FAILED = "the whole Job fails at once"
    RETRIED = "retried, and counted against the shard's back-off limit"
    RETRIED_UNCOUNTED = "retried without counting (not the shard's fault)"


# What the operator wants of each exit code (README, "Exit codes"). A new exit code fails
# test_every_exit_code_has_a_wanted_outcome until someone decides its line here.
WANTED: dict[ExitCode, Wanted] = {
    ExitCode.OK: Wanted.DONE,
    ExitCode.SOME_FAILED: Wanted.DONE_FOR_TONIGHT,  # a rerun exits 1 again at once
    ExitCode.USAGE: Wanted.JOB_FAILED,  # every shard has the same command line
    ExitCode.ABORTED: Wanted.DONE_FOR_TONIGHT,  # needs a human; a rerun would do the same
    ExitCode.INCOMPLETE: Wanted.DONE_FOR_TONIGHT,  # the time window means something
    ExitCode.LOCKED: Wanted.RETRIED,
    ExitCode.TEMPFAIL: Wanted.RETRIED,
    ExitCode.INTERRUPTED: Wanted.RETRIED,
}


# ── Kubernetes' rules, as documented for batch/v1 Job podFailurePolicy ──────────────────────


def _matches_exit_code(requirement: Mapping[str, Any], container: str, code: int) -> bool:
    named = requirement.get("containerName")
    if named is not None and named != container:
        return False
    inside = code in requirement["values"]
    return inside if requirement["operator"] == "In" else not inside


def _matches_conditions(patterns: Sequence[Mapping[str, Any]], conditions: set[str]) -> bool:
    return any(p["type"] in conditions and p.get("status", "True") == "True" for p in patterns)


def pod_failure_action(
    policy: Mapping[str, Any], container: str, code: int, conditions: set[str]
) -> str:
    """The action Kubernetes takes for a pod whose only container exited ``code``."""
    if code == 0:
        return "Succeeded"  # rules are evaluated for failed pods only
    for rule in policy["rules"]:
        if "onExitCodes" in rule and _matches_exit_code(rule["onExitCodes"], container, code):
            return str(rule["action"])
        if "onPodConditions" in rule and _matches_conditions(rule["onPodConditions"], conditions):
            return str(rule["action"])
    return "Count"  # no rule matched: the default


def outcome(job: Mapping[str, Any], container: str, code: int, disrupted: bool = False) -> Wanted:
    """What happens to the shard, in the operator's words."""
    conditions = {"DisruptionTarget"} if disrupted else set()
    action = pod_failure_action(job["podFailurePolicy"], container, code, conditions)
    retries = job.get("backoffLimitPerIndex", job.get("backoffLimit", 6))
    return {
        "Succeeded": Wanted.DONE,
        "FailIndex": Wanted.DONE_FOR_TONIGHT,
        "FailJob": Wanted.JOB_FAILED,
        "Ignore": Wanted.RETRIED_UNCOUNTED,
        "Count": Wanted.RETRIED if retries > 0 else Wanted.DONE_FOR_TONIGHT,
    }[action]


# ── the manifest ───────────────────────────────────────────────────────────────────────────


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _cronjob() -> dict[str, Any]:
    (found,) = [doc for doc in _documents(CRONJOB) if doc["kind"] == "CronJob"]
    return found


def _job() -> dict[str, Any]:
    return dict(_cronjob()["spec"]["jobTemplate"]["spec"])


def _container() -> dict[str, Any]:
    (container,) = _job()["template"]["spec"]["containers"]
    return dict(container)


def test_every_exit_code_has_a_wanted_outcome() -> None:
    assert set(ExitCode) == set(WANTED)


def test_the_policy_names_only_real_exit_codes() -> None:
    """A code in the policy that bulktag never exits with is a stale or mistyped rule."""
    named = {
        code
        for rule in _job()["podFailurePolicy"]["rules"]
        for code in rule.get("onExitCodes", {}).get("values", [])
    }
    assert named <= {int(code) for code in ExitCode}, named - {int(c) for c in ExitCode}


@pytest.mark.parametrize("code", list(ExitCode), ids=lambda c: f"{int(c)}-{c.name}")
def test_each_exit_code_gets_the_outcome_the_operator_wants(code: ExitCode) -> None:
    assert WANTED[code] == outcome(_job(), _container()["name"], int(code))


@pytest.mark.parametrize("code", [int(ExitCode.INTERRUPTED), 137, 143])
def test_a_node_drain_is_retried_without_counting(code: int) -> None:
    """SIGTERM from a drain or preemption (exit 130, or 137/143 from a runtime that kills
    harder) marks the pod DisruptionTarget: the shard is not charged for it."""
    assert Wanted.RETRIED_UNCOUNTED == outcome(_job(), _container()["name"], code, disrupted=True)


@pytest.mark.parametrize("code", [137, 139, 255])
def test_other_deaths_are_retried_a_bounded_number_of_times(code: int) -> None:
    """OOM-killed, a segfault: counted, so a shard that always dies stops retrying."""
    assert Wanted.RETRIED == outcome(_job(), _container()["name"], code)


def test_no_exit_code_is_retried_forever() -> None:
    """``Ignore`` on an exit code replaces the pod without counting: a shard that exits 1
    (or 4) again at once would run all night and the Job would never finish."""
    for rule in _job()["podFailurePolicy"]["rules"]:
        if rule["action"] == "Ignore":
            assert "onExitCodes" not in rule, rule


def test_the_job_can_finish_and_retries_are_bounded() -> None:
    job = _job()
    assert "Indexed" == job["completionMode"]
    # FailIndex needs backoffLimitPerIndex; without it Kubernetes rejects the Job.
    assert 1 <= job["backoffLimitPerIndex"] <= 10
    assert "Never" == job["template"]["spec"]["restartPolicy"]  # podFailurePolicy needs it
    # The 6 h window plus retries fit, and the Job is gone before the next night's run.
    assert 6 * 3600 < job["activeDeadlineSeconds"] < 24 * 3600
    assert "Forbid" == _cronjob()["spec"]["concurrencyPolicy"]
    assert "Failed" == job["podReplacementPolicy"]  # two pods of a shard never overlap


def test_each_shard_has_its_own_journal_and_a_declared_index() -> None:
    """Kubernetes expands $(VAR) in args only for variables declared in env: an undeclared
    one stays literal, and all four shards would write one journal named after it."""
    container = _container()
    args, declared = container["args"], {env["name"] for env in container["env"]}
    used = {name for arg in args for name in re.findall(r"\$\((\w+)\)", arg)}
    assert used <= declared, used - declared
    results = args[args.index("--results") + 1]
    assert "$(SHARD_INDEX)" in results
    assert f"$(SHARD_INDEX)/{_job()['completions']}" == args[args.index("--shard") + 1]


def test_shared_storage_is_read_write_many() -> None:
    """Four pods mount one claim at once: ReadWriteOnce would leave three of them Pending
    (on different nodes)."""
    claims = {d["metadata"]["name"]: d for d in _documents(CRONJOB) if d["kind"] != "CronJob"}
    volumes = _job()["template"]["spec"]["volumes"]
    claim_names = [
        v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v
    ]
    assert claim_names
    for name in claim_names:
        assert ["ReadWriteMany"] == claims[name]["spec"]["accessModes"]


def test_the_pod_is_locked_down_and_bounded() -> None:
    pod = _job()["template"]["spec"]
    container = _container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "RuntimeDefault" == pod["securityContext"]["seccompProfile"]["type"]
    assert pod["automountServiceAccountToken"] is False
    ctx = container["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["readOnlyRootFilesystem"] is True
    assert ["ALL"] == ctx["capabilities"]["drop"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_match_the_kubernetes_schema(version: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for document in _documents(CRONJOB):
        kubernetes_validate.validate(document, version, strict=True)  # raises on a bad field


# ── the container image ────────────────────────────────────────────────────────────────────


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Containerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text(encoding="utf-8"))
    found = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_the_image_runs_bulktag_as_the_user_kubernetes_expects() -> None:
    instructions = _instructions()
    (entrypoint,) = [args for word, args in instructions if word == "ENTRYPOINT"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert ["bulktag"] == yaml.safe_load(entrypoint)
    assert "bulktag" in scripts
    user = [args for word, args in instructions if word == "USER"][-1]
    uid, _, gid = user.partition(":")
    context = _job()["template"]["spec"]["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (int(uid), int(gid))
    assert int(uid) != 0


def test_the_image_is_slim_and_installs_the_speed_extra() -> None:
    instructions = _instructions()
    bases = [args for word, args in instructions if word == "ARG" and "PYTHON_IMAGE" in args]
    assert bases
    assert all("-slim" in base for base in bases), bases
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    installs = " ".join(args for word, args in instructions if word == "RUN")
    assert "[speed]" in installs
    assert "speed" in extras
    image = _container()["image"]
    assert image.split("/")[-1] in CONTAINERFILE.read_text()  # the build line names it


# ── the systemd unit ───────────────────────────────────────────────────────────────────────

SYSTEMD = ROOT / "config" / "systemd"
SERVICE = SYSTEMD / "bulktag-nightly.service"


def unit_settings(path: Path) -> dict[str, list[str]]:
    """``Section.Key`` → every value given (systemd allows a key more than once)."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    found: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return found


def systemd_outcome(settings: Mapping[str, list[str]], code: int) -> Wanted:
    """What systemd does when the service's process exits ``code`` (systemd.service(5))."""
    success = {0} | {
        int(c) for v in settings.get("Service.SuccessExitStatus", []) for c in v.split()
    }
    if code in success:
        return Wanted.DONE
    restart = settings.get("Service.Restart", ["no"])[-1]
    prevented = {
        int(c) for v in settings.get("Service.RestartPreventExitStatus", []) for c in v.split()
    }
    if restart in ("on-failure", "always") and code not in prevented:
        return Wanted.RETRIED
    return Wanted.JOB_FAILED


# What the operator wants of the unit: 1 and 4 end the night without a failed unit (the journal
# and the metrics say the rest), 75 runs again later, the others mark the unit failed.
WANTED_SYSTEMD: dict[ExitCode, Wanted] = {
    ExitCode.OK: Wanted.DONE,
    ExitCode.SOME_FAILED: Wanted.DONE,
    ExitCode.USAGE: Wanted.JOB_FAILED,
    ExitCode.ABORTED: Wanted.JOB_FAILED,
    ExitCode.INCOMPLETE: Wanted.DONE,
    ExitCode.LOCKED: Wanted.JOB_FAILED,  # the timer runs once a night: another run is going
    ExitCode.TEMPFAIL: Wanted.RETRIED,
    ExitCode.INTERRUPTED: Wanted.JOB_FAILED,  # someone stopped it; not restarted behind them
}


@pytest.mark.parametrize("code", list(ExitCode), ids=lambda c: f"{int(c)}-{c.name}")
def test_the_unit_does_what_the_operator_wants_with_each_exit_code(code: ExitCode) -> None:
    assert set(ExitCode) == set(WANTED_SYSTEMD)
    assert WANTED_SYSTEMD[code] == systemd_outcome(unit_settings(SERVICE), int(code))


def test_the_unit_is_sandboxed() -> None:
    settings = unit_settings(SERVICE)
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "RestrictSUIDSGID": "yes",
        "MemoryDenyWriteExecute": "yes",
    }.items():
        assert [value] == settings.get(f"Service.{key}"), key
    assert settings["Service.User"] != ["root"]


def _systemd_copy(tmp_path: Path) -> list[Path]:
    """The units with ExecStart pointing at this checkout's bulktag: ``verify`` checks that the
    program exists and is executable."""
    program = Path(sys.executable).with_name("bulktag")
    if not program.exists():
        pytest.skip(f"no bulktag script beside {sys.executable}")
    copies = []
    for unit in sorted(SYSTEMD.glob("bulktag-*")):
        text = unit.read_text(encoding="utf-8").replace("/opt/bulktag/bin/bulktag", str(program))
        copies.append(tmp_path / unit.name)
        copies[-1].write_text(text, encoding="utf-8")
    return copies


def _systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed here")
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    done = _systemd_analyze("verify", *map(str, _systemd_copy(tmp_path)))
    assert 0 == done.returncode, done.stderr
    assert "" == done.stderr.strip(), done.stderr  # warnings too: an ignored key, a typo


def test_systemd_analyze_security_scores_the_service_ok(tmp_path: Path) -> None:
    service = next(p for p in _systemd_copy(tmp_path) if p.suffix == ".service")
    done = _systemd_analyze("security", "--offline=yes", "--no-pager", str(service))
    if "--offline" in done.stderr:  # systemd older than 250
        pytest.skip("this systemd-analyze cannot score a unit file offline")
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert score is not None, done.stdout + done.stderr
    assert float(score.group(1)) <= 2.0, done.stdout  # 9.2 "UNSAFE" before the sandbox
