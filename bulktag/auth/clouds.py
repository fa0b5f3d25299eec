"""Assemble one :class:`AuthSpec` from flags, ``OS_*`` variables and clouds.yaml, like openstack.

Pure given the filesystem and an environment mapping; the only I/O is reading clouds.yaml and
the secure.yaml beside it. Precedence, field by field: command-line flags, then ``OS_*``
environment variables, then the clouds.yaml entry chosen by ``--os-cloud`` (else ``OS_CLOUD``).

The auth *method* follows the same precedence: the first source that names or implies one
(an ``auth_type``, a token, an application credential, a user or password) decides it, so
``--token`` on the command line beats a password cloud in clouds.yaml.

Every failure is a :class:`~bulktag.auth.base.CredentialsError` with a one-line message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from bulktag.auth.base import CredentialsError
from bulktag.auth.options import SECRET_FIELDS, CredentialOptions
from bulktag.auth.redact import redacted_repr

Method = Literal["password", "application_credential", "token"]

#: The domain openstack assumes when a user or project is given by name without a domain.
DEFAULT_DOMAIN_ID = "default"


@dataclass(frozen=True, slots=True)
class AuthSpec:
    """Everything needed to obtain a token and find the image endpoint. Secrets never shown."""

    method: Method
    auth_url: str | None = None
    username: str | None = None
    user_id: str | None = None
    password: str | None = None
    user_domain_name: str | None = None
    user_domain_id: str | None = None
    project_name: str | None = None
    project_id: str | None = None
    project_domain_name: str | None = None
    project_domain_id: str | None = None
    application_credential_id: str | None = None
    application_credential_name: str | None = None
    application_credential_secret: str | None = None
    token: str | None = None
    region_name: str | None = None
    interface: str = "public"
    endpoint: str | None = None  # image endpoint override: wins over the catalog
    cacert: str | None = None
    verify: bool = True

    def __repr__(self) -> str:
        return redacted_repr(self, SECRET_FIELDS)

    @property
    def tls_verify(self) -> bool | str:
        """What to verify TLS with: False (insecure), a CA bundle path, or True (system CAs)."""
        if not self.verify:
            return False
        return self.cacert if self.cacert else True

    @property
    def secrets(self) -> tuple[str, ...]:
        """The secret values this spec holds, for scrubbing free text quoted from servers."""
        values = (getattr(self, name) for name in sorted(SECRET_FIELDS))
        return tuple(v for v in values if v)

    @property
    def is_static_token(self) -> bool:
        """A pre-made token with an explicit endpoint: used as is, no identity service."""
        return self.method == "token" and self.endpoint is not None


# ---------------------------------------------------------------------------------------------
# Where clouds.yaml is looked for


def default_search_paths(cwd: Path | None = None, home: Path | None = None) -> tuple[Path, ...]:
    """The openstack CLI's clouds.yaml locations, first found wins."""
    cwd = Path.cwd() if cwd is None else cwd
    home = Path.home() if home is None else home
    return (
        cwd / "clouds.yaml",
        home / ".config" / "openstack" / "clouds.yaml",
        Path("/etc/openstack/clouds.yaml"),
    )


def find_clouds_file(env: Mapping[str, str], search_paths: Sequence[Path]) -> Path | None:
    """``OS_CLIENT_CONFIG_FILE`` if set (it must exist), else the first existing search path."""
    named = env.get("OS_CLIENT_CONFIG_FILE")
    if named:
        path = Path(named)
        if not path.is_file():
            raise CredentialsError(f"OS_CLIENT_CONFIG_FILE names {path}, which does not exist")
        return path
    return next((p for p in search_paths if p.is_file()), None)


def _searched(env: Mapping[str, str], search_paths: Sequence[Path]) -> str:
    named = env.get("OS_CLIENT_CONFIG_FILE")
    return named if named else ", ".join(str(p) for p in search_paths)


# ---------------------------------------------------------------------------------------------
# Reading clouds.yaml + secure.yaml


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Parse a YAML file that must hold a mapping (an empty file is an empty mapping)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"cannot read {path}: {type(exc).__name__}") from None
    import yaml  # only when a clouds.yaml exists: most token runs never pay for the import

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # Only the problem and its position: str(exc) quotes the file, which may hold a secret.
        raise CredentialsError(f"malformed YAML in {path}{_yaml_where(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CredentialsError(f"malformed {path}: the top level must be a mapping")
    return data


def _yaml_where(exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{where}: {problem}" if problem else where


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` wins; nested mappings are merged key by key (how secure.yaml adds secrets)."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_clouds(path: Path) -> dict[str, Any]:
    """The ``clouds:`` mapping of ``path``, with ``secure.yaml`` beside it merged over it."""
    config = read_yaml_mapping(path)
    secure = path.parent / "secure.yaml"
    if secure.is_file():
        config = deep_merge(config, read_yaml_mapping(secure))
    clouds = config.get("clouds", {})
    if not isinstance(clouds, dict):
        raise CredentialsError(f"malformed {path}: 'clouds' must be a mapping of cloud names")
    return clouds


# ---------------------------------------------------------------------------------------------
# The three sources, each as a layer {AuthSpec field or "auth_type": value}

Layer = dict[str, Any]

#: Environment variables per field, preferred spelling first (openrc files use all of these).
ENV_VARS: dict[str, tuple[str, ...]] = {
    "auth_url": ("OS_AUTH_URL",),
    "username": ("OS_USERNAME",),
    "user_id": ("OS_USER_ID",),
    "password": ("OS_PASSWORD",),
    "project_name": ("OS_PROJECT_NAME", "OS_TENANT_NAME"),
    "project_id": ("OS_PROJECT_ID", "OS_TENANT_ID"),
    "user_domain_name": ("OS_USER_DOMAIN_NAME",),
    "user_domain_id": ("OS_USER_DOMAIN_ID",),
    "project_domain_name": ("OS_PROJECT_DOMAIN_NAME",),
    "project_domain_id": ("OS_PROJECT_DOMAIN_ID",),
    "region_name": ("OS_REGION_NAME",),
    "interface": ("OS_INTERFACE", "OS_ENDPOINT_TYPE"),
    "application_credential_id": ("OS_APPLICATION_CREDENTIAL_ID",),
    "application_credential_name": ("OS_APPLICATION_CREDENTIAL_NAME",),
    "application_credential_secret": ("OS_APPLICATION_CREDENTIAL_SECRET",),
    "token": ("OS_AUTH_TOKEN", "OS_TOKEN"),
    "endpoint": ("OS_IMAGE_URL",),
    "cacert": ("OS_CACERT",),
    "auth_type": ("OS_AUTH_TYPE",),
}

_AUTH_KEYS = (
    "auth_url",
    "username",
    "user_id",
    "password",
    "project_name",
    "project_id",
    "user_domain_name",
    "user_domain_id",
    "project_domain_name",
    "project_domain_id",
    "application_credential_id",
    "application_credential_name",
    "application_credential_secret",
    "token",
)


def flag_layer(options: CredentialOptions) -> Layer:
    """The command line. ``--insecure`` only ever turns verification off, never on."""
    layer = {f.name: getattr(options, f.name) for f in fields(options)}
    layer.pop("os_cloud")
    insecure = layer.pop("insecure")
    layer["verify"] = False if insecure else None
    return layer


def env_layer(env: Mapping[str, str]) -> Layer:
    # An openrc often exports empty variables (OS_PROJECT_DOMAIN_ID=): empty means unset.
    return {
        name: next((env[v] for v in names if env.get(v)), None) for name, names in ENV_VARS.items()
    }


def cloud_layer(entry: Mapping[str, Any]) -> Layer:
    """One clouds.yaml cloud entry, in AuthSpec terms."""
    auth = entry.get("auth") or {}
    if not isinstance(auth, Mapping):
        raise CredentialsError("malformed clouds.yaml: a cloud's 'auth' must be a mapping")
    layer: Layer = {key: _text(auth.get(key)) for key in _AUTH_KEYS}
    layer["project_name"] = layer["project_name"] or _text(auth.get("tenant_name"))
    layer["project_id"] = layer["project_id"] or _text(auth.get("tenant_id"))
    _apply_shared_domain(layer, auth)
    layer.update(
        region_name=_text(entry.get("region_name")) or _first_region(entry.get("regions")),
        interface=_text(entry.get("interface")),
        endpoint=_text(entry.get("image_endpoint_override")),
        cacert=_text(entry.get("cacert")),
        verify=_flag(entry.get("verify")),
        auth_type=_text(entry.get("auth_type")),
    )
    return layer


def _apply_shared_domain(layer: Layer, auth: Mapping[str, Any]) -> None:
    # clouds.yaml may give one domain_id/domain_name for both the user and the project.
    for kind in ("id", "name"):
        shared = _text(auth.get(f"domain_{kind}"))
        for who in ("user", "project"):
            key = f"{who}_domain_{kind}"
            layer[key] = layer[key] or shared


def _text(value: Any) -> str | None:
    # YAML turns `project_id: 1234` into an int; ids are strings on the wire.
    return None if value is None or value == "" else str(value)


def _flag(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    return str(value).strip().lower() not in {"false", "no", "0", "off"}


def _first_region(regions: Any) -> str | None:
    # openstack uses the first of `regions:` when no region_name is given.
    if not isinstance(regions, list) or not regions:
        return None
    first = regions[0]
    return _text(first.get("name")) if isinstance(first, Mapping) else _text(first)


# ---------------------------------------------------------------------------------------------
# Choosing the cloud


def select_cloud(
    options: CredentialOptions, env: Mapping[str, str], search_paths: Sequence[Path]
) -> Layer:
    """The layer of the cloud named by ``--os-cloud`` (else ``OS_CLOUD``); empty if none named."""
    name = options.os_cloud or env.get("OS_CLOUD")
    if not name:
        return {}
    chooser = "--os-cloud" if options.os_cloud else "OS_CLOUD"
    path = find_clouds_file(env, search_paths)
    if path is None:
        raise CredentialsError(
            f"cloud {name!r} ({chooser}) but no clouds.yaml found; "
            f"looked at: {_searched(env, search_paths)}"
        )
    clouds = load_clouds(path)
    if name not in clouds:
        known = ", ".join(sorted(map(str, clouds))) or "none"
        raise CredentialsError(
            f"cloud {name!r} ({chooser}) is not in {path}; known clouds: {known}"
        )
    entry = clouds[name]
    if not isinstance(entry, Mapping):
        raise CredentialsError(f"malformed {path}: cloud {name!r} must be a mapping")
    return cloud_layer(entry)


# ---------------------------------------------------------------------------------------------
# Merging and choosing the method

_AUTH_TYPES: dict[str, Method] = {
    "password": "password",
    "v3password": "password",
    "v3applicationcredential": "application_credential",
    "applicationcredential": "application_credential",
    "application_credential": "application_credential",
    "token": "token",
    "v3token": "token",
    "admin_token": "token",
}


def merge_layers(layers: Sequence[Layer]) -> Layer:
    """Field by field, the first layer that has a value wins."""
    keys = {key for layer in layers for key in layer}
    return {
        key: next((lay[key] for lay in layers if lay.get(key) is not None), None) for key in keys
    }


def method_of(layer: Layer) -> Method | None:
    """The method a single source names (``auth_type``) or implies by what it holds."""
    auth_type = layer.get("auth_type")
    if auth_type:
        if auth_type.lower() not in _AUTH_TYPES:
            supported = "password, v3applicationcredential, token"
            raise CredentialsError(f"auth_type {auth_type!r} is not supported; use {supported}")
        return _AUTH_TYPES[auth_type.lower()]
    if layer.get("token"):
        return "token"
    if any(layer.get(f"application_credential_{k}") for k in ("id", "name", "secret")):
        return "application_credential"
    if any(layer.get(k) for k in ("username", "user_id", "password")):
        return "password"
    return None


def choose_method(layers: Sequence[Layer]) -> Method | None:
    """The first source (in precedence order) that decides the method decides it."""
    return next((m for m in map(method_of, layers) if m is not None), None)


# ---------------------------------------------------------------------------------------------
# Validation: what each method needs

_NEEDS = {
    "auth_url": "an auth URL (--os-auth-url, OS_AUTH_URL or auth.auth_url in clouds.yaml)",
    "user": "a user (--os-username/--os-user-id, OS_USERNAME/OS_USER_ID or auth.username)",
    "password": "a password (--os-password, OS_PASSWORD or auth.password in secure.yaml)",
    "project": "a project (--os-project-name/--os-project-id, OS_PROJECT_NAME/OS_PROJECT_ID)",
    "app_cred": "an application credential id, or a name with a user "
    "(--os-application-credential-id/-name, OS_APPLICATION_CREDENTIAL_ID/_NAME)",
    "secret": "an application credential secret "
    "(--os-application-credential-secret or OS_APPLICATION_CREDENTIAL_SECRET)",
    "token": "a token (--token or OS_AUTH_TOKEN)",
    "target": "an image endpoint (--endpoint or OS_IMAGE_URL) or an auth URL and a project "
    "to find it in the catalog",
}


def missing_fields(method: Method, merged: Layer) -> list[str]:
    """Names (keys of ``_NEEDS``) of what ``method`` still lacks; empty when complete."""
    has = {k for k, v in merged.items() if v is not None}
    user = bool(has & {"username", "user_id"})
    project = bool(has & {"project_name", "project_id"})
    checks: dict[str, bool]
    if method == "password":
        checks = {
            "auth_url": "auth_url" in has,
            "user": user,
            "password": "password" in has,
            "project": project,
        }
    elif method == "application_credential":
        by_name = "application_credential_name" in has and user
        checks = {
            "auth_url": "auth_url" in has,
            "app_cred": "application_credential_id" in has or by_name,
            "secret": "application_credential_secret" in has,
        }
    else:
        checks = {
            "token": "token" in has,
            "target": "endpoint" in has or ("auth_url" in has and project),
        }
    return [need for need, ok in checks.items() if not ok]


def _default_domains(merged: Layer) -> None:
    # Like the openstack CLI's --os-default-domain: a name without a domain is in "default".
    for who in ("user", "project"):
        named = merged.get("username" if who == "user" else "project_name")
        if named and not (merged.get(f"{who}_domain_id") or merged.get(f"{who}_domain_name")):
            merged[f"{who}_domain_id"] = DEFAULT_DOMAIN_ID


def _normalise_interface(value: str | None) -> str:
    # OS_ENDPOINT_TYPE in old openrc files says "publicURL"; Keystone v3 says "public".
    return (value or "public").lower().removesuffix("url")


def build_spec(method: Method, merged: Layer) -> AuthSpec:
    missing = missing_fields(method, merged)
    if missing:
        needs = "; ".join(_NEEDS[m] for m in missing)
        raise CredentialsError(f"{method.replace('_', ' ')} auth is missing {needs}")
    _default_domains(merged)
    spec_fields = {f.name for f in fields(AuthSpec)} - {"method", "interface", "verify"}
    values = {k: merged.get(k) for k in spec_fields}
    auth_url = values.pop("auth_url")
    return AuthSpec(
        method=method,
        auth_url=auth_url.rstrip("/") if auth_url else None,
        interface=_normalise_interface(merged.get("interface")),
        verify=merged.get("verify") is not False,
        **values,
    )


# ---------------------------------------------------------------------------------------------
# The entry point

#: Variables whose presence would have given credentials; named in the "nothing found" error.
_KEY_VARS = (
    "OS_CLOUD",
    "OS_AUTH_URL",
    "OS_AUTH_TOKEN",
    "OS_USERNAME",
    "OS_APPLICATION_CREDENTIAL_ID",
)


def _nothing_found(
    cloud: str | None, env: Mapping[str, str], search_paths: Sequence[Path]
) -> CredentialsError:
    flags = "flags (--os-cloud, --os-auth-url, --os-username, --token, ...): none given"
    present = sorted(k for k, v in env.items() if k.startswith("OS_") and v)
    env_part = f"environment ({', '.join(_KEY_VARS)}): none set"
    if present:
        env_part += f" (set: {', '.join(present)})"
    clouds = _clouds_part(cloud, env, search_paths)
    return CredentialsError(f"no credentials found; looked at {flags}; {env_part}; {clouds}")


def _clouds_part(cloud: str | None, env: Mapping[str, str], search_paths: Sequence[Path]) -> str:
    path = find_clouds_file(env, search_paths)
    if path is None:
        return f"clouds.yaml: none found at {_searched(env, search_paths)}"
    if cloud:
        return f"clouds.yaml: cloud {cloud!r} in {path} has no auth settings"
    known = ", ".join(sorted(map(str, load_clouds(path)))) or "none"
    return f"clouds.yaml: {path} has clouds {known} but none was chosen (--os-cloud or OS_CLOUD)"


def load_auth_spec(
    options: CredentialOptions,
    env: Mapping[str, str],
    search_paths: Iterable[Path] | None = None,
) -> AuthSpec:
    """Merge flags > ``env`` > clouds.yaml into an :class:`AuthSpec`, or raise CredentialsError.

    Pure apart from reading clouds.yaml/secure.yaml; call it before any session exists, then
    build the HTTP session with ``spec.tls_verify``.
    """
    paths = default_search_paths() if search_paths is None else tuple(search_paths)
    layers = [flag_layer(options), env_layer(env), select_cloud(options, env, paths)]
    merged = merge_layers(layers)
    # A bare auth URL means password auth, openstack's default; it then reports what is missing.
    method = choose_method(layers) or ("password" if merged.get("auth_url") else None)
    if method is None:
        raise _nothing_found(options.os_cloud or env.get("OS_CLOUD"), env, paths)
    return build_spec(method, merged)
