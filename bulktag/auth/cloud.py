"""Which cloud, region, interface, auth plugin and TLS settings: whatever the openstack CLI uses.

bulktag does not read clouds.yaml itself. It hands the command line's ``--os-*`` flags to
openstacksdk's resolver, ``openstack.config.OpenStackConfig().get_one_cloud_osc(cloud=…,
**flags)`` — ``get_one`` as the openstack CLI calls it, where a flag beats the cloud's ``auth:``
section (plain ``get_one`` lets clouds.yaml win over ``--os-password``) — which
reads clouds.yaml/clouds.yml/secure.yaml wherever the openstack CLI looks for them
(``OS_CLIENT_CONFIG_FILE``, ``OS_CLIENT_SECURE_FILE``, the current directory, the XDG config
directory, ``/etc/openstack``), applies vendor ``profile:``\\s, per-region ``values:``, the
``OS_*`` variables and validates the region; keystoneauth1 then builds the auth plugin. The
result, a ``CloudRegion``, is carried inside :class:`AuthSpec` to the login
(:mod:`bulktag.auth.keystone`).

Only one case skips both libraries, so its start-up stays light: a token *and* an image endpoint
given directly (``--token``/``--os-token`` + ``--endpoint``/``--os-image-url``, or
``OS_AUTH_TOKEN`` + ``OS_IMAGE_URL`` when no cloud is named). Nothing to resolve, nothing to
log in to.

Three settings the openstack CLI takes from the environment as its flags' defaults even for a
cloud named by ``OS_CLOUD`` are passed the same way here: ``OS_REGION_NAME`` (so a region not
in the cloud's ``regions:`` is refused, as the CLI refuses it), ``OS_CACERT`` and
``OS_IMAGE_URL``.

Every failure is a one-line :class:`~bulktag.auth.base.CredentialsError` that says where the
settings came from (:func:`origin`), never a secret.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import structlog

from bulktag.auth.base import CredentialsError
from bulktag.auth.options import SECRET_FIELDS, CredentialOptions, flag_names
from bulktag.auth.redact import REDACTED, one_line, quoted, scrub
from bulktag.auth.tls import ClientCert

if TYPE_CHECKING:
    from openstack.config.cloud_region import CloudRegion

log = structlog.get_logger(__name__)

_LIBRARY_LOGGERS = ("openstack", "keystoneauth", "stevedore", "os_service_types")


def quiet_library_logs() -> None:
    """openstacksdk and keystoneauth log through stdlib logging, which bulktag leaves
    unconfigured: Python would print their warnings as stray stderr lines. Their failures reach
    the operator as our one-line errors instead."""
    for name in _LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        logger.addHandler(logging.NullHandler())
        logger.propagate = False


#: Flag fields handed to openstacksdk under another name.
_SDK_NAMES = {"endpoint": "image_endpoint_override"}
#: The openstack CLI's flags that default to a variable even for a cloud named by OS_CLOUD.
_CLI_ENV_DEFAULTS = {
    "region_name": "OS_REGION_NAME",
    "cacert": "OS_CACERT",
    "image_endpoint_override": "OS_IMAGE_URL",
}
#: Flag fields that are not openstacksdk settings at all.
_NOT_SDK = frozenset({"os_cloud", "insecure"})
#: Substrings of the keys whose values are secrets in an openstacksdk auth block.
_SECRET_KEY_PARTS = ("password", "secret", "token", "passcode", "totp", "key")


@dataclass(frozen=True, slots=True)
class AuthSpec:
    """Everything needed to obtain a token and find the image endpoint. Secrets never shown.

    ``region`` is openstacksdk's resolved ``CloudRegion`` (None for a static token): it holds the
    keystoneauth plugin and session. ``origin`` says where the settings came from, for messages.
    """

    method: str  # "static" (token + endpoint given), else the keystoneauth plugin's name
    origin: str
    cloud: str | None = None  # the clouds.yaml entry (or "envvars") openstacksdk chose
    token: str | None = field(default=None, repr=False)
    endpoint: str | None = None  # image endpoint override: wins over the catalog
    verify: bool | str = True  # False (insecure), a CA bundle path, or True (system CAs)
    client_cert: ClientCert = None
    auth_url: str | None = None
    interface: str | None = None
    region_name: str | None = None
    project_id: str | None = None  # a static token's project, if OS_PROJECT_ID/--os-project-id
    secrets: tuple[str, ...] = field(default=(), repr=False)
    region: CloudRegion | None = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if f.repr and getattr(self, f.name) is not None
        )
        return f"AuthSpec({shown}, secrets={REDACTED})"

    @property
    def tls_verify(self) -> bool | str:
        """What to verify TLS with: False (insecure), a CA bundle path, or True (system CAs)."""
        return self.verify

    @property
    def is_static_token(self) -> bool:
        """A pre-made token with an explicit endpoint: used as is, no identity service."""
        return self.method == "static"


def load_auth_spec(options: CredentialOptions, env: Mapping[str, str]) -> AuthSpec:
    """Resolve the cloud as the openstack CLI does, or raise CredentialsError (no network)."""
    static = static_token_spec(options, env)
    if static is not None:
        return static
    with environment(env):
        return _resolve(options, env)


# ---------------------------------------------------------------------------------------------
# The fast path: a token and an endpoint, nothing to resolve


def static_token_spec(options: CredentialOptions, env: Mapping[str, str]) -> AuthSpec | None:
    """The spec for a token + endpoint given directly; None when there is a cloud to resolve."""
    named_cloud = options.os_cloud or env.get("OS_CLOUD")
    token, token_from = options.token, "--token/--os-token"
    if not token and not named_cloud:
        token, token_from = _env_token(env)
    endpoint = options.endpoint or env.get("OS_IMAGE_URL")
    if not token or not endpoint or options.auth_type:
        return None
    cert = options.cert or env.get("OS_CERT")
    key = options.key or env.get("OS_KEY")
    return AuthSpec(
        method="static",
        origin=f"token from {token_from}, image endpoint given",
        token=token,
        endpoint=endpoint,
        verify=False if options.insecure else (options.cacert or env.get("OS_CACERT") or True),
        client_cert=(cert, key) if cert and key else cert,
        project_id=options.project_id or env.get("OS_PROJECT_ID") or None,
        secrets=(token,),
    )


def _env_token(env: Mapping[str, str]) -> tuple[str | None, str]:
    for name in ("OS_AUTH_TOKEN", "OS_TOKEN"):
        if env.get(name):
            return env[name], name
    return None, ""


# ---------------------------------------------------------------------------------------------
# openstacksdk's resolver


@contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """Let openstacksdk, which reads ``os.environ`` itself, see ``env`` for a moment.

    The CLI passes ``os.environ`` (nothing to do); tests may pass their own mapping.
    """
    if env is os.environ:
        yield
        return
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def sdk_arguments(options: CredentialOptions, env: Mapping[str, str]) -> dict[str, Any]:
    """The flags as openstacksdk keyword arguments, as the openstack CLI passes its own.

    ``OS_REGION_NAME``, ``OS_CACERT`` and ``OS_IMAGE_URL`` are the CLI's flag defaults: they
    count as flags.
    """
    arguments: dict[str, Any] = {
        _SDK_NAMES.get(f.name, f.name): getattr(options, f.name)
        for f in fields(options)
        if f.name not in _NOT_SDK and getattr(options, f.name) is not None
    }
    if options.insecure:
        arguments["insecure"] = True
    for name, variable in _CLI_ENV_DEFAULTS.items():
        if name not in arguments and env.get(variable):
            arguments[name] = env[variable]
    return arguments


def _resolve(options: CredentialOptions, env: Mapping[str, str]) -> AuthSpec:
    quiet_library_logs()
    arguments = sdk_arguments(options, env)
    secrets = tuple(str(v) for k, v in arguments.items() if k in SECRET_FIELDS and v)
    config: Any = None
    skipped = _SkippedFiles()
    try:
        with warnings.catch_warnings(), skipped:
            warnings.simplefilter("ignore")  # deprecation notes would break the one-line rule
            config = _openstack_config()
            region = config.get_one_cloud_osc(cloud=options.os_cloud, **arguments)
    except Exception as exc:
        if not _is_config_error(exc):
            raise
        where = origin(options, env, config)
        said = _describe_library_error(exc, config, options, env, secrets)
        text = f"{said}{skipped.note()} (settings from {where})"
        raise CredentialsError(one_line(scrub(text, secrets))) from None
    for note in skipped.notes:
        log.warning("clouds_file_skipped", reason=note)
    return spec_from_region(region, origin(options, env, config))


class _SkippedFiles(logging.Handler):
    """openstacksdk skips a clouds.yaml it cannot parse with a log line, and goes on as if
    it were not there. Catch those lines: the operator must hear why a cloud is missing."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.notes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if record.msg.startswith("Skipping config file") and len(args) == 2:
            path, exc = args
            # Only the position: str(exc) quotes the file, which may hold a secret.
            self.notes.append(f"malformed YAML in {path}{_yaml_where(exc)}")

    def note(self) -> str:
        return "".join(f"; openstacksdk skipped it: {n}" for n in self.notes)

    def __enter__(self) -> None:
        logging.getLogger("openstack.config").addHandler(self)

    def __exit__(self, *exc_info: object) -> None:
        logging.getLogger("openstack.config").removeHandler(self)


def _openstack_config() -> Any:
    """openstacksdk's resolver, with the one hook the openstack CLI (osc-lib) adds to it."""
    from openstack.config import OpenStackConfig

    class CliConfig(OpenStackConfig):
        def auth_config_hook(self, config: dict[str, Any]) -> dict[str, Any]:
            return token_alone_means_token_auth(config)

    return CliConfig()


def token_alone_means_token_auth(config: dict[str, Any]) -> dict[str, Any]:
    """``OS_AUTH_TOKEN`` + ``OS_AUTH_URL`` with no ``OS_AUTH_TYPE``: openstacksdk keeps its
    default ``password`` plugin, which then fails on the token it cannot take; osc-lib picks
    the token plugin. So does bulktag."""
    auth = config.get("auth") or {}
    logs_in_otherwise = any(
        auth.get(k) for k in ("username", "user_id", "password", "application_credential_id")
    )
    if config.get("auth_type") == "password" and auth.get("token") and not logs_in_otherwise:
        config["auth_type"] = "token"
    return config


def _is_config_error(exc: Exception) -> bool:
    """openstacksdk's and keystoneauth's own errors: a configuration problem, not a bug."""
    from keystoneauth1 import exceptions as ksa_exceptions
    from openstack import exceptions as sdk_exceptions

    return isinstance(exc, sdk_exceptions.SDKException | ksa_exceptions.ClientException)


def _describe_library_error(
    exc: Exception,
    config: Any,
    options: CredentialOptions,
    env: Mapping[str, str],
    secrets: tuple[str, ...],
) -> str:
    """The library's words (scrubbed, and :func:`quoted`), completed with what an operator
    needs to fix the setting."""
    missing = getattr(exc, "options", None)
    if missing and type(exc).__name__ == "MissingRequiredOptions":
        named = options.os_cloud or env.get("OS_CLOUD")
        if not named and "auth_url" in {o.dest.replace("-", "_") for o in missing}:
            return _nothing_to_log_in_with(options, env, _any_cloud(config))
        names = ", ".join(_as_flag(o.dest) for o in missing)
        return f"the auth plugin is missing {names}"
    text = quoted(scrub(str(exc) or type(exc).__name__, secrets))
    if "was not found" in text and config is not None:
        known = ", ".join(sorted(str(n) for n in config.get_cloud_names())) or "none"
        text += f" Known clouds: {known}."
    return text


_LOG_IN_WITH = (
    "a cloud (--os-cloud or OS_CLOUD, from clouds.yaml) or an auth URL "
    "(--os-auth-url or OS_AUTH_URL) with credentials"
)


def _nothing_to_log_in_with(
    options: CredentialOptions, env: Mapping[str, str], some_cloud: bool
) -> str:
    """No cloud named and no auth URL: say what the light path (token + endpoint) or a login
    still needs."""
    token = options.token or _env_token(env)[0]
    endpoint = options.endpoint or env.get("OS_IMAGE_URL")
    if token and not endpoint:
        return (
            "a token needs an image endpoint (--endpoint/--os-image-url or OS_IMAGE_URL), "
            f"or {_LOG_IN_WITH} to find it in the catalog"
        )
    if endpoint and not token:
        return (
            "an image endpoint needs a token (--token/--os-token or OS_AUTH_TOKEN), "
            f"or {_LOG_IN_WITH} to get one"
        )
    if some_cloud:
        return f"no auth URL; give {_LOG_IN_WITH}, or --token and --endpoint"
    return (
        "no credentials found; looked at flags (--os-cloud, --os-auth-url, --token, ...), "
        "environment (OS_CLOUD, OS_AUTH_URL, OS_AUTH_TOKEN, ...) and clouds.yaml (./, "
        "$XDG_CONFIG_HOME/openstack, ~/.config/openstack, /etc/openstack, "
        f"OS_CLIENT_CONFIG_FILE): none found; give {_LOG_IN_WITH}, or --token and --endpoint"
    )


def _as_flag(dest: str) -> str:
    """Where a missing auth option can be given: a flag if bulktag has one, the variable, or
    the cloud's ``auth:`` section."""
    name = dest.replace("-", "_")
    elsewhere = f"OS_{name.upper()}, or auth.{name} in clouds.yaml"
    flags = flag_names(name)
    return f"{flags} ({elsewhere})" if flags else elsewhere


def _any_cloud(config: Any) -> bool:
    """Did openstacksdk find any cloud at all (a clouds.yaml entry or OS_* variables)?"""
    names = set(config.get_cloud_names()) if config is not None else set()
    return bool(names - {"defaults"})


def _yaml_where(exc: object) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    where = (
        f" in {mark.name} at line {mark.line + 1}, column {mark.column + 1}"
        if mark is not None
        else ""
    )
    return f"{where}: {problem}" if problem else where


def spec_from_region(region: CloudRegion, where: str) -> AuthSpec:
    """Read what bulktag needs out of openstacksdk's resolved cloud."""
    verify, cert = region.get_requests_verify_args()
    auth = region.config.get("auth") or {}
    interface = region.get_interface("image")
    return AuthSpec(
        method=str(region.config.get("auth_type") or "password"),
        origin=where,
        cloud=region.name or None,
        endpoint=region.get_endpoint("image"),
        verify=True if verify is None else verify,
        client_cert=cert,
        auth_url=auth.get("auth_url"),
        interface=interface if isinstance(interface, str) else None,
        region_name=region.get_region_name("image") or None,
        secrets=secrets_of(auth),
        region=region,
    )


def secrets_of(auth: Mapping[str, Any]) -> tuple[str, ...]:
    """The values of an auth block that are secrets (and a password inside the auth URL), for
    scrubbing quoted server text."""
    found = [
        str(value)
        for key, value in auth.items()
        if value and any(part in key.lower() for part in _SECRET_KEY_PARTS)
    ]
    in_url = urlsplit(str(auth.get("auth_url") or "")).password
    return tuple(found + ([in_url] if in_url else []))


# ---------------------------------------------------------------------------------------------
# Where the settings came from (for messages; names only, never values)


def origin(options: CredentialOptions, env: Mapping[str, str], config: Any | None) -> str:
    """``cloud 'prod' (OS_CLOUD) in ./clouds.yaml + secure.yaml; flags --os-region-name``."""
    parts = [_cloud_part(options, env, config)]
    flags = [flag_names(f.name) or f.name for f in fields(options) if _given(options, f.name)]
    if flags:
        parts.append("flags " + ", ".join(flags))
    applied = [v for v in _CLI_ENV_DEFAULTS.values() if env.get(v)]
    if applied and (options.os_cloud or env.get("OS_CLOUD")):
        parts.append("environment " + ", ".join(applied))
    return "; ".join(parts)


def _given(options: CredentialOptions, name: str) -> bool:
    return name != "os_cloud" and getattr(options, name) not in (None, False)


def _cloud_part(options: CredentialOptions, env: Mapping[str, str], config: Any | None) -> str:
    name = options.os_cloud or env.get("OS_CLOUD")
    if name:
        chooser = "--os-cloud" if options.os_cloud else "OS_CLOUD"
        return f"cloud {name!r} ({chooser}){_files(config)}"
    variables = sorted(k for k, v in env.items() if k.startswith("OS_") and v)
    if variables:
        return "environment " + ", ".join(variables)
    return f"no cloud named (--os-cloud, OS_CLOUD) and no OS_* variable set{_files(config)}"


def _files(config: Any | None) -> str:
    """The clouds.yaml and secure.yaml openstacksdk read, if any."""
    found = [getattr(config, a, None) for a in ("config_filename", "secure_config_filename")]
    named = [str(f) for f in found if f]
    return f" in {' + '.join(named)}" if named else ""
