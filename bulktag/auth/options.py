"""What the user gave on the command line about credentials, as one immutable value.

Pure: defines the ``--os-*`` flags and reads them back from an ``argparse.Namespace``. The
flags mirror the openstack CLI's, so an operator's habits carry over. Merging them with the
environment and clouds.yaml is openstacksdk's job, driven from :mod:`bulktag.auth.cloud`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from bulktag.auth.redact import redacted_repr

#: Fields whose value is a secret: they are shown as ``<redacted>`` in every repr.
SECRET_FIELDS = frozenset({"password", "application_credential_secret", "token"})


@dataclass(frozen=True, slots=True)
class CredentialOptions:
    """Credential settings from the command line; ``None`` means "not given here"."""

    os_cloud: str | None = None
    auth_url: str | None = None
    username: str | None = None
    user_id: str | None = None
    password: str | None = None
    project_name: str | None = None
    project_id: str | None = None
    user_domain_name: str | None = None
    user_domain_id: str | None = None
    project_domain_name: str | None = None
    project_domain_id: str | None = None
    region_name: str | None = None
    interface: str | None = None
    application_credential_id: str | None = None
    application_credential_name: str | None = None
    application_credential_secret: str | None = None
    token: str | None = None
    auth_type: str | None = None
    endpoint: str | None = None  # image endpoint override (the CLI's --endpoint)
    cacert: str | None = None
    cert: str | None = None  # client certificate (TLS client auth)
    key: str | None = None  # its private key, if not in the certificate file
    insecure: bool | None = None

    def __repr__(self) -> str:
        return redacted_repr(self, SECRET_FIELDS)


# (flag, CredentialOptions field, help). The flag's argparse dest is the flag without dashes.
_FLAGS: tuple[tuple[str, str, str], ...] = (
    ("--os-cloud", "os_cloud", "cloud to use from clouds.yaml (env: OS_CLOUD)"),
    ("--os-auth-url", "auth_url", "Keystone v3 / IAM URL (env: OS_AUTH_URL)"),
    ("--os-username", "username", "user name (env: OS_USERNAME)"),
    ("--os-user-id", "user_id", "user id (env: OS_USER_ID)"),
    ("--os-password", "password", "password (env: OS_PASSWORD; prefer the env or secure.yaml)"),
    ("--os-project-name", "project_name", "project to scope to (env: OS_PROJECT_NAME)"),
    ("--os-project-id", "project_id", "project id to scope to (env: OS_PROJECT_ID)"),
    ("--os-user-domain-name", "user_domain_name", "user's domain (env: OS_USER_DOMAIN_NAME)"),
    ("--os-user-domain-id", "user_domain_id", "user's domain id (env: OS_USER_DOMAIN_ID)"),
    (
        "--os-project-domain-name",
        "project_domain_name",
        "project's domain (env: OS_PROJECT_DOMAIN_NAME)",
    ),
    (
        "--os-project-domain-id",
        "project_domain_id",
        "project's domain id (env: OS_PROJECT_DOMAIN_ID)",
    ),
    ("--os-region-name", "region_name", "region of the image endpoint (env: OS_REGION_NAME)"),
    (
        "--os-interface",
        "interface",
        "catalog interface: public, internal or admin (env: OS_INTERFACE; default public)",
    ),
    (
        "--os-application-credential-id",
        "application_credential_id",
        "application credential id (env: OS_APPLICATION_CREDENTIAL_ID)",
    ),
    (
        "--os-application-credential-name",
        "application_credential_name",
        "application credential name, with a user (env: OS_APPLICATION_CREDENTIAL_NAME)",
    ),
    (
        "--os-application-credential-secret",
        "application_credential_secret",
        "application credential secret (env: OS_APPLICATION_CREDENTIAL_SECRET)",
    ),
    ("--os-cacert", "cacert", "CA bundle to verify TLS with (env: OS_CACERT)"),
    ("--os-cert", "cert", "client certificate for TLS (env: OS_CERT)"),
    ("--os-key", "key", "client certificate's private key (env: OS_KEY)"),
    (
        "--os-auth-type",
        "auth_type",
        "keystoneauth plugin: password, v3applicationcredential, token, v3totp, "
        "v3oidcpassword, ... (env: OS_AUTH_TYPE; default: what the settings imply)",
    ),
    ("--os-token", "token", "token to log in with (env: OS_AUTH_TOKEN; prefer the variable)"),
    ("--os-endpoint-type", "interface", "the same as --os-interface (env: OS_ENDPOINT_TYPE)"),
    ("--os-image-url", "endpoint", "image endpoint override (env: OS_IMAGE_URL)"),
)

#: Options the CLI defines itself; read here when present on the namespace.
_CLI_OWNED = ("token", "endpoint", "cacert", "insecure")


def flag_names(field_name: str) -> str | None:
    """How the command line spells a field, for messages: ``--endpoint/--os-image-url``,
    ``--os-interface/--os-endpoint-type``; None where no flag sets it (an auth plugin's own
    option, such as v3totp's passcode: clouds.yaml or an ``OS_*`` variable only)."""
    spellings = [f"--{name}" for name in _CLI_OWNED if name == field_name]
    spellings += [flag for flag, name, _help in _FLAGS if name == field_name]
    return "/".join(spellings) or None


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def add_credential_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``--os-*`` flags. Defaults stay ``None`` so ``--help`` can never show a secret."""
    group = parser.add_argument_group("credentials (as in the openstack CLI)")
    for flag, _field, help_text in _FLAGS:
        group.add_argument(flag, dest=_dest(flag), default=None, metavar="VALUE", help=help_text)


def options_from_namespace(ns: argparse.Namespace) -> CredentialOptions:
    """Read back what :func:`add_credential_arguments` (and the CLI's own flags) parsed."""
    values: dict[str, Any] = {name: getattr(ns, name, None) for name in _CLI_OWNED}
    for flag, field_name, _help in _FLAGS:
        # The CLI's own spelling (--token, --endpoint, --cacert) wins over its --os-* twin, and
        # the first --os-* spelling of a field (--os-interface) over a later alias.
        if values.get(field_name) is None:
            values[field_name] = getattr(ns, _dest(flag), None)
    return CredentialOptions(**values)
