"""Every command the docs show works: README.md and the shipped files in config/.

* Every ``bulktag …`` command in README.md (code blocks and inline code), the systemd unit's
  ``ExecStart`` and the Kubernetes example's ``args`` is parsed by the real parser: a flag it
  refuses, or a value the settings refuse, fails the build.
* Each of them that can run here does, against the built-in fake (``bulktag serve-fake``):
  ``run`` (its endpoint, paths and credentials pointed at the fake and a temporary directory,
  ``--os-cloud`` and the manifests' ``OS_CLOUD`` through a real clouds.yaml), ``serve-fake``,
  ``report`` and ``verify`` (on a journal such a run wrote). ``bulktag demo`` is run by
  tests/test_demo.py.
* Every ``--flag`` written anywhere in README.md or config/ is a flag of some bulktag command.
* Every key of config/bulktag.example.toml, the commented-out ones too, loads, and every
  setting the loader knows is documented there.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shlex
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from clitools import TOKEN, Done, FakeServer, fake_glance, isolated_env, run_bulktag
from support import image_ids, write_csv
from test_deploy import CRONJOB, SERVICE, unit_settings

from bulktag.cli import _COMMANDS, build_parser
from bulktag.config import BY_NAME, OPTIONS, parse_toml, resolve

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLE_TOML = ROOT / "config" / "bulktag.example.toml"
PROJECT = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
# Flags in README.md that belong to other programs (the benchmark runner), and the programs
# whose command lines the config files' comments show.
FOREIGN_FLAGS = {"--only"}
FOREIGN_PROGRAMS = {"useradd", "systemctl", "kubectl", "podman", "docker", "pip", "python"}
# A placeholder in an illustrative command (``0f1e…``, ``JOURNAL…``) → a value that runs here.
PLACEHOLDERS = {"--project-id": PROJECT}


@dataclass(frozen=True)
class DocCommand:
    where: str  # "README.md:91", "bulktag-nightly.service ExecStart"
    argv: tuple[str, ...]  # what follows ``bulktag``
    env: tuple[tuple[str, str], ...] = ()  # what the deployment sets around it

    @property
    def command(self) -> str:
        return next((a for a in self.argv if not a.startswith("-")), "")


# ── finding the commands ───────────────────────────────────────────────────────────────────


def _bulktag_segments(line: str) -> Iterator[tuple[str, ...]]:
    """The arguments of each ``bulktag`` invocation on one shell line."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return
    segment: list[str] = []
    for token in _split_substitutions(tokens):
        if token in {"&&", "||", "|", ";"}:
            words = list(segment)
            while words and re.fullmatch(r"\w+=.*", words[0]):  # VAR=value before the program
                words.pop(0)
            if words and Path(words[0]).name == "bulktag":  # the program, not an argument
                yield tuple(words[1:])
            segment = []
        else:
            segment.append(token)


def _split_substitutions(tokens: list[str]) -> Iterator[str]:
    """Tokens with ``$(…)``/``<(…)`` opened and closed as commands of their own, and
    redirections (``> file``) dropped: ``source <(bulktag completion bash)`` holds
    ``bulktag completion bash``."""
    redirect = False
    for raw in tokens:
        if redirect:
            redirect = False
            continue
        if re.fullmatch(r"\d?[<>]{1,2}", raw):
            redirect = True
            continue
        opens = raw.startswith(("$(", "<("))
        if opens:
            yield ";"
        token = raw[2:] if opens else raw
        closes = token.endswith(")") and "(" not in token
        if token.rstrip(")"):
            yield token.rstrip(")") if closes else token
        if closes:
            yield ";"
    yield ";"


def readme_commands() -> list[DocCommand]:
    found = []
    in_shell, fence = False, False
    lines = README.read_text(encoding="utf-8").splitlines()
    joined = ""
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            fence = not fence
            in_shell = fence and line[3:].strip() in {"sh", "bash", "shell", ""}
            continue
        if fence and in_shell:
            joined += line.rstrip("\\") + " "
            if line.endswith("\\"):
                continue
            found += [DocCommand(f"README.md:{number}", a) for a in _bulktag_segments(joined)]
            joined = ""
        elif not fence:
            for span in re.findall(r"`([^`]+)`", line):
                if re.search(r"(^|[\s/])bulktag\s", span):
                    found += [DocCommand(f"README.md:{number}", a) for a in _prose(span)]
    return found


def _prose(span: str) -> Iterator[tuple[str, ...]]:
    """Inline code: ``bulktag verify`` alone names a command (it must exist: ``--help``);
    anything longer is a command line."""
    for argv in _bulktag_segments(span):
        yield (*argv, "--help") if len(argv) == 1 and argv[0] != "demo" else argv


def systemd_commands() -> list[DocCommand]:
    settings = unit_settings(SERVICE)
    env = tuple(tuple(v.split("=", 1)) for v in settings.get("Service.Environment", []))
    return [
        DocCommand(f"{SERVICE.name} ExecStart", a, env)  # type: ignore[arg-type]
        for line in settings["Service.ExecStart"]
        for a in _bulktag_segments(line)
    ]


def kubernetes_commands() -> list[DocCommand]:
    found = []
    for document in yaml.safe_load_all(CRONJOB.read_text(encoding="utf-8")):
        if not document or document["kind"] != "CronJob":
            continue
        pod = document["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        for container in pod["containers"]:  # ENTRYPOINT ["bulktag"]: args follow it
            env = tuple((e["name"], e["value"]) for e in container["env"] if "value" in e)
            argv = tuple(a.replace("$(SHARD_INDEX)", "0") for a in container["args"])
            found.append(DocCommand(f"{CRONJOB.name} {container['name']} args", argv, env))
    return found


ALL = readme_commands() + systemd_commands() + kubernetes_commands()


def test_the_docs_have_commands_to_check() -> None:
    """The extraction itself works: the README's main commands and both deployments."""
    commands = {c.command for c in ALL}
    assert {"run", "serve-fake", "report", "verify", "demo"} <= commands
    assert any(c.where.endswith("ExecStart") for c in ALL)
    assert any("args" in c.where for c in ALL)


# ── parsing ────────────────────────────────────────────────────────────────────────────────


def _fill_placeholders(argv: tuple[str, ...]) -> list[str]:
    filled = []
    for i, arg in enumerate(argv):
        placeholder = "…" in arg or "..." in arg
        filled.append(PLACEHOLDERS.get(argv[i - 1], arg.strip("….")) if placeholder else arg)
    return filled


def parse(argv: list[str]) -> argparse.Namespace:
    """The real parser; a refusal raises with argparse's own message."""
    parser = build_parser(argv)
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code == 0:  # --help, --version
            return argparse.Namespace(command=None)
        raise AssertionError(f"bulktag {shlex.join(argv)}: refused by the parser") from None


def _doc_id(doc: DocCommand) -> str:
    return f"{doc.where} {' '.join(doc.argv)[:40]}"


def each_documented(*commands: str) -> pytest.MarkDecorator:
    """Parametrize ``doc`` over the runnable documented commands of these subcommands."""
    return pytest.mark.parametrize(
        "doc", [c for c in RUNNABLE if c.command in commands], ids=_doc_id
    )


@pytest.mark.parametrize("doc", ALL, ids=_doc_id)
def test_every_documented_command_parses(
    doc: DocCommand, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse(_fill_placeholders(doc.argv))
    assert "error" not in capsys.readouterr().err
    if args.command == "run":  # values too: the settings layer checks types and ranges
        resolve({k: getattr(args, k, None) for k in BY_NAME}, {}, {})


def _known_flags() -> set[str]:
    flags = {"--help", "--version"}
    for name in _COMMANDS:
        parser = build_parser([name])
        (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        flags |= {o for a in subparsers.choices[name]._actions for o in a.option_strings}
    return flags


def _documented_files() -> list[Path]:
    return [README, *sorted(p for p in (ROOT / "config").rglob("*") if p.is_file())]


def _mentioned_flags(path: Path) -> Iterator[str]:
    for line in path.read_text(encoding="utf-8").splitlines():
        words = line.lstrip("#; ").split()
        if words and words[0] in FOREIGN_PROGRAMS:
            continue
        # "--os-*" names a family of flags, not one: skip what ends in a dash
        flags = re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", line)
        yield from (flag for flag in flags if not flag.endswith("-"))


def test_every_flag_the_docs_mention_exists() -> None:
    known = _known_flags() | FOREIGN_FLAGS
    unknown = {
        f"{path.relative_to(ROOT)}: {flag}"
        for path in _documented_files()
        for flag in _mentioned_flags(path)
        if flag not in known
    }
    assert set() == unknown


# ── the example configuration ──────────────────────────────────────────────────────────────


def _example_with_every_key() -> str:
    """The example file with its commented-out ``# key = value`` lines switched on."""
    keys = "|".join(BY_NAME)
    return re.sub(rf"(?m)^# ((?:{keys}) = )", r"\1", EXAMPLE_TOML.read_text(encoding="utf-8"))


def test_every_key_of_the_example_config_loads() -> None:
    values = parse_toml(_example_with_every_key(), EXAMPLE_TOML.name)
    resolve({}, {}, values, EXAMPLE_TOML.name)
    assert set(BY_NAME) == set(values), "a setting the example does not show"


def test_the_example_config_shows_the_defaults_it_claims() -> None:
    """Uncommented keys say 'the value shown is the default': check it."""
    shown = parse_toml(EXAMPLE_TOML.read_text(encoding="utf-8"), EXAMPLE_TOML.name)
    defaults = {o.name: o.default for o in OPTIONS}
    assert {k: defaults[k] for k in shown} == shown


# ── running them against the fake ──────────────────────────────────────────────────────────

RUNNABLE = [
    c
    for c in ALL
    if c.command in {"run", "serve-fake", "report", "verify"} and "--help" not in c.argv
]


@dataclass
class Fakes:
    glance: FakeServer
    ims: FakeServer


def _where(doc: DocCommand) -> str:
    return re.sub(r"\W+", "-", doc.where + "-" + "-".join(doc.argv))[:80]


def _clouds_yaml(path: Path, names: set[str], url: str) -> None:
    """A clouds.yaml in which every named cloud is a token for the fake (no identity service:
    keystoneauth's ``admin_token`` plugin, the image endpoint given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    auth = {"token": TOKEN, "endpoint": url}
    clouds = {
        name: {"auth_type": "admin_token", "auth": auth, "image_endpoint_override": url}
        for name in names
    }
    path.write_text(yaml.safe_dump({"clouds": clouds}), encoding="utf-8")


def _localise(argv: list[str], workdir: Path, url: str) -> list[str]:
    """Absolute paths go under ``workdir``; ``--endpoint`` is the fake."""
    out = []
    for i, arg in enumerate(argv):
        if i and argv[i - 1] == "--endpoint":
            out.append(url)
        elif arg.startswith("/"):
            out.append(str(workdir / arg.lstrip("/")))
            Path(out[-1]).parent.mkdir(parents=True, exist_ok=True)
        else:
            out.append(arg)
    return out


@dataclass
class RunDone:
    done: Done
    journal: Path
    ims: bool
    dry: bool


def _run_command(doc: DocCommand, workdir: Path, fakes: Fakes) -> RunDone:
    workdir.mkdir(parents=True)
    ims = "ims" in doc.argv
    fake = fakes.ims if ims else fakes.glance
    argv = _localise(_fill_placeholders(doc.argv), workdir, fake.url)
    args = parse(argv)
    env = dict(doc.env)
    cloud = args.os_cloud or env.get("OS_CLOUD")
    if cloud:  # the credentials come from a clouds.yaml, as the docs say
        where = env.get("OS_CLIENT_CONFIG_FILE", "/clouds.yaml")
        config = Path(_localise([where], workdir, "")[0])
        env["OS_CLIENT_CONFIG_FILE"] = str(config)
        _clouds_yaml(config, {cloud}, fake.url)
    else:  # the docs export OS_* in prose: a token and the fake's URL stand in for them
        env |= {"OS_AUTH_TOKEN": TOKEN, "OS_IMAGE_URL": fake.url}
    if ims and not args.project_id:
        env["OS_PROJECT_ID"] = PROJECT  # a bare token names no project
    constant = getattr(args, "tag", None) is not None  # --tag: the input is a list of ids
    stdin = None
    if args.input == "-":  # piped in, as the docs show (`openstack image list … | bulktag …`)
        _write_input(workdir / "stdin.csv", ims, constant)
        stdin = (workdir / "stdin.csv").read_bytes()
    else:
        _write_input(workdir / args.input, ims, constant)
    env = isolated_env(workdir, token=None, **env)
    done = run_bulktag(argv[1:], workdir, env=env, stdin=stdin)
    journal = workdir / (args.results or BY_NAME["results"].default)
    return RunDone(done, journal, ims, bool(args.dry_run))


def _write_input(path: Path, ims: bool, ids_only: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    images = image_ids(16, seed=7)  # every shard of four gets some
    if ids_only:  # `openstack image list -f value -c ID`
        path.write_text("".join(i + "\n" for i in images))
    elif ims:
        lines = ["image_id,key,value", *(f"{i},env,prod" for i in images)]
        path.write_text("".join(line + "\n" for line in lines))
    else:
        write_csv(path, [(i, "docs-test") for i in images])


def _run_other(doc: DocCommand, workdir: Path, fakes: Fakes, journal: Path) -> Done:
    """``report``/``verify``: on a journal a documented run wrote; the journal placeholder
    (``JOURNAL``, ``JOURNAL…``, a glob) is that journal."""
    workdir.mkdir(parents=True)
    argv = _localise(_fill_placeholders(doc.argv), workdir, fakes.glance.url)
    argv = [str(journal) if re.fullmatch(r"JOURNAL\W*|.*\*.*", a) else a for a in argv]
    if len(argv) == 1:  # `bulktag verify` in prose: the journal is the required argument
        argv.append(str(journal))
    env = isolated_env(workdir, token=TOKEN, OS_IMAGE_URL=fakes.glance.url)
    return run_bulktag(argv[1:], workdir, command=argv[0], env=env)


def _serve(doc: DocCommand, workdir: Path) -> str:
    """Start the documented fake (our own port and token) and return its banner line."""
    flags = list(_fill_placeholders(doc.argv[1:]))
    for flag in ("--port", "--token"):
        if flag in flags:
            del flags[flags.index(flag) : flags.index(flag) + 2]
    with fake_glance(workdir, *flags) as server:
        return server.log.read_text()


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[DocCommand, object]]:
    base = tmp_path_factory.mktemp("docs")
    with contextlib.ExitStack() as stack:
        fakes = Fakes(
            stack.enter_context(fake_glance(base / "glance")),
            stack.enter_context(fake_glance(base / "ims", "--api", "ims")),
        )
        runs = [c for c in RUNNABLE if c.command == "run"]
        served = [c for c in RUNNABLE if c.command == "serve-fake"]
        found: dict[DocCommand, object] = {}
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = {c: pool.submit(_run_command, c, base / _where(c), fakes) for c in runs}
            futures |= {c: pool.submit(_serve, c, base / _where(c)) for c in served}
            found |= {c: f.result() for c, f in futures.items()}
        journal = next(  # a Glance journal a documented run wrote
            r.journal
            for r in found.values()
            if isinstance(r, RunDone) and not (r.ims or r.dry) and r.done.code == 0
        )
        for c in RUNNABLE:
            if c.command in {"report", "verify"}:
                found[c] = _run_other(c, base / _where(c), fakes, journal)
        yield found


@each_documented("run")
def test_every_documented_run_works_against_the_fake(
    outcomes: dict[DocCommand, object], doc: DocCommand
) -> None:
    result = outcomes[doc]
    assert isinstance(result, RunDone)
    assert 0 == result.done.code, str(result.done)
    assert "Traceback" not in result.done.stderr
    if not result.dry:
        records = [line for line in result.journal.read_text().splitlines() if line]
        assert records, f"{result.journal}: no records\n{result.done}"


@each_documented("report", "verify")
def test_every_documented_report_and_verify_works(
    outcomes: dict[DocCommand, object], doc: DocCommand
) -> None:
    done = outcomes[doc]
    assert isinstance(done, Done)
    assert 0 == done.code, str(done)


@each_documented("serve-fake")
def test_every_documented_fake_starts(outcomes: dict[DocCommand, object], doc: DocCommand) -> None:
    assert "listening on http://" in str(outcomes[doc])
