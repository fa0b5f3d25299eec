"""Start real MariaDB, Keystone and Glance on loopback for the integration tier.

Nothing here is pytest-specific: conftest.py wires these into session fixtures. The servers run
from the separate OpenStack venv that ``setup.sh`` builds, each in its own process group so
that teardown can stop a gunicorn master together with its workers.

The configuration mirrors a small production deployment on purpose: Glance as 2 gunicorn
workers x 2 threads on MariaDB (concurrent enough for overlapping tag writes to race, which
SQLite would serialize away), Keystone with Fernet tokens and an in-memory cache.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

HERE = Path(__file__).resolve().parent
DEFAULT_VENV = Path.home() / ".cache" / "bulktag" / "openstack-venv"
SETUP_HINT = (
    "run `bash tests/integration/setup.sh` first (it installs MariaDB and the OpenStack venv)"
)

_PR_SET_PDEATHSIG = 1


def openstack_venv() -> Path:
    return Path(os.environ.get("BULKTAG_OPENSTACK_VENV", str(DEFAULT_VENV)))


def missing_prerequisites() -> list[str]:
    """What setup.sh would install that is not there; empty when the tier can run."""
    venv = openstack_venv()
    missing = [
        tool for tool in ("mariadbd", "mariadb-install-db", "mariadb") if not shutil.which(tool)
    ]
    missing += [
        str(venv / "bin" / exe)
        for exe in ("gunicorn", "glance-manage", "keystone-manage")
        if not (venv / "bin" / exe).exists()
    ]
    return missing


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the kernel picks; nothing else binds in between
    in practice, and a clash would show as a clear startup failure, not a wrong result)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    # If pytest itself is killed (CI timeout, Ctrl-C twice), the servers must not outlive it
    # and hold ports and CPU. Linux only, which is what this tier targets. Caveat: the signal
    # comes when the *thread* that spawned the child exits, so spawn from the main thread.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Process:
    """A server process (and its process group) with its combined output in ``log``."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    # gunicorn takes SIGTERM as "drain gracefully" (seconds with idle keep-alive clients);
    # SIGINT is its quick shutdown, which is all a throwaway test server needs.
    stop_signal: signal.Signals = signal.SIGTERM

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, self.stop_signal)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)


def _output_to(out: BinaryIO, env: Mapping[str, str] | None) -> dict[str, Any]:
    """How a server or setup command is run: no input, its stdout and stderr both into ``out``
    (its log), in ``env`` (or this process's environment)."""
    return {
        "stdin": subprocess.DEVNULL,
        "stdout": out,
        "stderr": subprocess.STDOUT,
        "env": dict(env) if env is not None else None,
    }


def spawn(
    name: str,
    argv: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    stop_signal: signal.Signals = signal.SIGTERM,
) -> Process:
    out = log.open("ab")
    try:
        popen = subprocess.Popen(
            list(argv),
            **_output_to(out, env),
            start_new_session=True,  # own process group: stop() reaches gunicorn's workers too
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only calls prctl, no locks taken
        )
    finally:
        out.close()
    return Process(name, popen, log, stop_signal)


def spawn_gunicorn(
    name: str,
    venv: Path,
    port: int,
    app: str,
    *,
    options: Sequence[str],
    log: Path,
    env: Mapping[str, str],
) -> Process:
    """Serve the WSGI ``app`` with the venv's gunicorn on 127.0.0.1:``port``, set up as every
    server of this tier is; ``options`` are the server's own (workers, threads, logs)."""
    argv = [
        str(venv / "bin" / "gunicorn"),
        "--bind",
        f"127.0.0.1:{port}",
        *options,
        "--no-control-socket",
        "--timeout",
        "120",
        "--graceful-timeout",
        "3",
        "--name",
        name,
        app,
    ]
    return spawn(name, argv, log, env, stop_signal=signal.SIGINT)


def run(
    argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None, timeout: float = 300
) -> None:
    """Run a setup command to completion; on failure raise with the tail of its output."""
    with log.open("ab") as out:
        done = subprocess.run(
            list(argv),
            **_output_to(out, env),
            timeout=timeout,
            check=False,
        )
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{' '.join(argv[:3])} … exited {done.returncode}:\n{tail}")


def wait_until(
    ready: Callable[[], bool], what: str, procs: Sequence[Process], timeout: float = 120.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited while waiting for {what}:\n{proc.tail()}")
        if ready():
            return
        time.sleep(0.2)
    tails = "\n".join(f"--- {p.name} ---\n{p.tail()}" for p in procs)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}\n{tails}")


def http_answers(url: str) -> bool:
    """True once anything at ``url`` answers HTTP at all (any status)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def server_env(venv: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV" and not k.startswith("OS_")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    # Keystone and Glance still import eventlet somewhere on the way and warn about it.
    env["PYTHONWARNINGS"] = "ignore"
    env.update(extra)
    return env


# --- MariaDB -------------------------------------------------------------------------------------


@dataclass
class MariaDB:
    """A private mariadbd: unix socket only, data in ``root``; root has no password."""

    root: Path
    process: Process | None = None

    @property
    def socket(self) -> Path:
        return self.root / "mysqld.sock"

    def start(self) -> None:
        datadir = self.root / "data"
        datadir.mkdir(parents=True)
        as_root = ["--user=root"] if os.geteuid() == 0 else []  # mariadbd refuses root otherwise
        run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *as_root,
            ],
            self.root / "install-db.log",
        )
        self.process = spawn(
            "mariadbd",
            [
                shutil.which("mariadbd") or "mariadbd",
                "--no-defaults",
                f"--datadir={datadir}",
                f"--socket={self.socket}",
                f"--pid-file={self.root / 'mysqld.pid'}",
                "--skip-networking",  # unix socket only: nothing listens on a TCP port
                "--skip-log-bin",
                # Throwaway data: trade durability for speed. This does not touch the race,
                # which happens in Glance's read-modify-write above the database.
                "--innodb-flush-log-at-trx-commit=0",
                "--innodb-doublewrite=0",
                "--innodb-buffer-pool-size=128M",
                "--innodb-log-file-size=16M",
                "--max-connections=500",
                *as_root,
            ],
            self.root / "mariadbd.log",
        )
        wait_until(self._answers, "MariaDB", [self.process], timeout=60)

    def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        done = subprocess.run(
            self._client_argv("SELECT 1"), capture_output=True, timeout=10, check=False
        )
        return done.returncode == 0

    def _client_argv(self, sql: str) -> list[str]:
        return ["mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot", "-e", sql]

    def create_database(self, name: str) -> str:
        """Create ``name`` and return its SQLAlchemy URL for oslo.db (PyMySQL over the socket)."""
        subprocess.run(
            self._client_argv(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"),
            capture_output=True,
            timeout=30,
            check=True,
        )
        return f"mysql+pymysql://root@localhost/{name}?unix_socket={self.socket}&charset=utf8mb4"

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        # ~150 MB of InnoDB files per session, and pytest keeps the last three sessions' temp
        # dirs; the logs beside it stay for post-mortems.
        shutil.rmtree(self.root / "data", ignore_errors=True)


# --- Keystone and Glance ------------------------------------------------------------------------


class GunicornServer:
    """What Keystone and Glance share: each is configured by files in its ``config_dir``,
    served by :func:`spawn_gunicorn` on a loopback port, reached at the same unversioned URL
    and stopped the same way."""

    root: Path
    port: int
    process: Process | None

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    def write_config(self, name: str, text: str) -> None:
        """Write ``text`` as the configuration file ``name`` in :attr:`config_dir`."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / name).write_text(text)

    @property
    def url(self) -> str:
        # Unversioned, like the catalog entries of real clouds: clients append /v2/ or /v3/.
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


# --- Keystone ------------------------------------------------------------------------------------


@dataclass
class Keystone(GunicornServer):
    root: Path
    venv: Path
    db_url: str
    token_lifetime: int
    port: int = field(default_factory=free_port)
    admin_password: str = "admin-secret"
    region: str = "RegionOne"
    process: Process | None = None

    @property
    def auth_url(self) -> str:
        return f"{self.url}/v3"

    @property
    def log(self) -> Path:
        """Keystone's own log, which also carries its ``identity.authenticate`` notifications."""
        return self.root / "keystone.log"

    def configure(self) -> None:
        self.write_config(
            "keystone.conf",
            textwrap.dedent(
                f"""\
                [DEFAULT]
                log_file = {self.log}
                # Emit a notification per successful password login (suppressed by default) so
                # tests can count how often bulktag logged in.
                notification_opt_out = identity.authenticate.pending

                [oslo_messaging_notifications]
                driver = log

                [database]
                connection = {self.db_url}

                [token]
                provider = fernet
                expiration = {self.token_lifetime}

                [fernet_tokens]
                key_repository = {self.root / "fernet-keys"}

                [fernet_receipts]
                key_repository = {self.root / "fernet-receipts"}

                [identity]
                # bcrypt's minimum cost: password logins are frequent in these tests.
                password_hash_rounds = 4

                [cache]
                # Without a cache Keystone spends 1-2 s validating each token on this machine.
                enabled = true
                backend = dogpile.cache.memory
                """
            ),
        )
        manage = [str(self.venv / "bin" / "keystone-manage"), "--config-dir", str(self.config_dir)]
        env = server_env(self.venv)
        log = self.root / "keystone-manage.log"
        run([*manage, "db_sync"], log, env)
        ids = ["--keystone-user", _user_name(), "--keystone-group", _group_name()]
        run([*manage, "fernet_setup", *ids], log, env)
        run(
            [
                *manage,
                "bootstrap",
                "--bootstrap-password",
                self.admin_password,
                "--bootstrap-region-id",
                self.region,
                "--bootstrap-admin-url",
                self.auth_url,
                "--bootstrap-public-url",
                self.auth_url,
                "--bootstrap-internal-url",
                self.auth_url,
            ],
            log,
            env,
        )

    def start(self) -> None:
        env = server_env(self.venv, OS_KEYSTONE_CONFIG_DIR=str(self.config_dir))
        self.process = spawn_gunicorn(
            "keystone",
            self.venv,
            self.port,
            "keystone_wsgi:application",
            options=[
                # One worker: the memory cache is per process, and a second worker would
                # validate every token again, slowly.
                "--workers",
                "1",
                "--threads",
                "4",
                # gunicorn closes idle keep-alive connections after 2 s; keystonemiddleware's
                # pooled connection then sometimes sends its next validation into a socket the
                # server is just closing, gets "connection reset", and Glance answers 401 to a
                # perfectly valid token (seen in this tier). Production proxies keep them longer.
                "--keep-alive",
                "75",
                "--pythonpath",
                str(HERE),
            ],
            log=self.root / "gunicorn.log",
            env=env,
        )

    def wait(self) -> None:
        assert self.process is not None
        wait_until(lambda: http_answers(self.auth_url), "Keystone", [self.process])


# --- Glance --------------------------------------------------------------------------------------


@dataclass
class GlanceAuth:
    """How a Glance validates tokens; ``None`` in place of this means no auth at all."""

    keystone_url: str
    username: str
    password: str
    project: str = "service"
    # keystonemiddleware caches a validated token for this long (default 300 s): short, so
    # that a token revoked mid-run is refused within seconds, well before bulktag would have
    # renewed it anyway (at half of the short test lifetime).
    token_cache_time: int = 2


@dataclass(frozen=True)
class AccessRecord:
    """One line of Glance's access log (the format ``Glance.start`` asks gunicorn for)."""

    method: str
    path: str
    status: int
    token: str | None

    @classmethod
    def parse(cls, line: str) -> AccessRecord:
        # "PUT /v2/images/<id>/tags/<tag> HTTP/1.1 204 12ms [token]"
        fields = line.split()
        token = fields[5] if len(fields) > 5 and fields[5] != "-" else None
        return cls(fields[0], fields[1], int(fields[3]), token)

    @property
    def image_id(self) -> str | None:
        """The image a ``/v2/images/{id}/...`` request is about."""
        parts = self.path.split("/")
        return parts[3] if len(parts) > 3 and parts[1:3] == ["v2", "images"] else None


@dataclass
class Glance(GunicornServer):
    name: str
    root: Path
    venv: Path
    db_url: str
    auth: GlanceAuth | None
    tag_quota: int
    port: int = field(default_factory=free_port)
    process: Process | None = None

    @property
    def access_log(self) -> Path:
        """gunicorn's access log: one line per request with its status."""
        return self.root / "access.log"

    def requests(self) -> list[AccessRecord]:
        """Every request this Glance has answered so far, oldest first."""
        try:
            text = self.access_log.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [AccessRecord.parse(line) for line in text.splitlines() if line.strip()]

    def tag_puts(self, image_ids: Iterable[str]) -> list[AccessRecord]:
        """The tag PUTs this Glance answered for these images."""
        wanted = set(image_ids)
        return [r for r in self.requests() if r.method == "PUT" and r.image_id in wanted]

    def configure(self) -> None:
        paste_ini = self.venv / "etc" / "glance" / "glance-api-paste.ini"
        if self.auth is None:
            auth_conf = """\
                [paste_deploy]
                config_file = {paste_ini}

                [oslo_policy]
                # Glance 33's default policies do not treat the unauthenticated context as
                # admin; the legacy rules do.
                enforce_new_defaults = false
                """
        else:
            auth_conf = f"""\
                [paste_deploy]
                flavor = keystone
                config_file = {{paste_ini}}

                [keystone_authtoken]
                www_authenticate_uri = {self.auth.keystone_url}
                auth_url = {self.auth.keystone_url}
                auth_type = password
                username = {self.auth.username}
                password = {self.auth.password}
                project_name = {self.auth.project}
                user_domain_name = Default
                project_domain_name = Default
                token_cache_time = {self.auth.token_cache_time}
                """
        self.write_config(
            "glance-api.conf",
            textwrap.dedent(
                f"""\
                [DEFAULT]
                log_file = {self.root / "glance.log"}
                image_tag_quota = {self.tag_quota}
                enabled_backends = fs:file
                enabled_import_methods = []

                [database]
                connection = {self.db_url}

                [glance_store]
                default_backend = fs

                [fs]
                filesystem_store_datadir = {self.root / "images"}

                [os_glance_staging_store]
                filesystem_store_datadir = {self.root / "staging"}

                [os_glance_tasks_store]
                filesystem_store_datadir = {self.root / "tasks"}

                [oslo_concurrency]
                lock_path = {self.root / "locks"}

                """
            )
            + textwrap.dedent(auth_conf).format(paste_ini=paste_ini),
        )

    def db_sync(self) -> None:
        run(
            [
                str(self.venv / "bin" / "glance-manage"),
                "--config-file",
                str(self.config_dir / "glance-api.conf"),
                "db_sync",
            ],
            self.root / "glance-manage.log",
            server_env(self.venv),
        )

    def start(self) -> None:
        env = server_env(self.venv, OS_GLANCE_CONFIG_DIR=str(self.config_dir))
        self.process = spawn_gunicorn(
            self.name,
            self.venv,
            self.port,
            "glance.wsgi.api:application",
            options=[
                # Like production and concurrent enough to show the lost-update race.
                "--workers",
                "2",
                "--threads",
                "2",
                "--access-logfile",
                str(self.access_log),
                "--access-logformat",
                # The token is logged (test servers only, logs in a temp dir) so that a test can
                # revoke the very token bulktag is using, mid-run.
                # %(r)s is the raw request line: %(U)s would show the path after Glance's
                # version-negotiation middleware stripped /v2 off it.
                "%(r)s %(s)s %(M)sms" + (" %({x-auth-token}i)s" if self.auth else ""),
            ],
            log=self.root / "gunicorn.log",
            env=env,
        )

    def wait(self) -> None:
        assert self.process is not None
        wait_until(lambda: http_answers(self.url + "/versions"), self.name, [self.process])


def _user_name() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def _group_name() -> str:
    import grp

    return grp.getgrgid(os.getegid()).gr_name
