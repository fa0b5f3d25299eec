"""load_auth_spec: flags > OS_* env > clouds.yaml (+ secure.yaml), and every configuration error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bulktag.auth.base import CredentialsError
from bulktag.auth.clouds import AuthSpec, default_search_paths, load_auth_spec
from bulktag.auth.options import CredentialOptions

PASSWORD_CLOUD: dict[str, Any] = {
    "auth": {
        "auth_url": "https://cloud.example/identity",
        "username": "cloud-user",
        "password": "cloud-password",
        "project_name": "cloud-project",
        "user_domain_name": "CloudDomain",
        "project_domain_name": "CloudDomain",
    },
    "region_name": "CloudRegion",
}

OPENRC_ENV = {
    "OS_AUTH_URL": "https://env.example:5000/v3",
    "OS_USERNAME": "env-user",
    "OS_PASSWORD": "env-password",
    "OS_PROJECT_NAME": "env-project",
    "OS_USER_DOMAIN_NAME": "EnvDomain",
    "OS_PROJECT_DOMAIN_NAME": "EnvDomain",
    "OS_REGION_NAME": "EnvRegion",
}


def write_yaml(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def clouds_file(tmp_path: Path, clouds: dict[str, Any], name: str = "clouds.yaml") -> Path:
    return write_yaml(tmp_path / name, {"clouds": clouds})


def load(
    options: CredentialOptions | None = None,
    env: dict[str, str] | None = None,
    paths: list[Path] | None = None,
) -> AuthSpec:
    return load_auth_spec(options or CredentialOptions(), env or {}, paths or [])


def error_of(
    options: CredentialOptions | None = None,
    env: dict[str, str] | None = None,
    paths: list[Path] | None = None,
) -> str:
    with pytest.raises(CredentialsError) as info:
        load(options, env, paths)
    return str(info.value)


# ---------------------------------------------------------------------------------------------
# Precedence


@pytest.mark.parametrize(
    ("flags", "env", "field", "expected"),
    [
        pytest.param({}, {}, "auth_url", "https://cloud.example/identity", id="cloud-alone"),
        pytest.param(
            {}, OPENRC_ENV, "auth_url", "https://env.example:5000/v3", id="env-over-cloud"
        ),
        pytest.param(
            {"auth_url": "https://flag.example"},
            OPENRC_ENV,
            "auth_url",
            "https://flag.example",
            id="flag-over-env",
        ),
        pytest.param({}, {"OS_USERNAME": "env-user"}, "username", "env-user", id="env-one-field"),
        pytest.param(
            {}, {"OS_USERNAME": "env-user"}, "password", "cloud-password", id="others-kept"
        ),
        pytest.param({"region_name": "R9"}, OPENRC_ENV, "region_name", "R9", id="flag-region"),
        pytest.param(
            {}, {"OS_REGION_NAME": ""}, "region_name", "CloudRegion", id="empty-env-unset"
        ),
        pytest.param({}, {"OS_TENANT_NAME": "old"}, "project_name", "old", id="tenant-alias"),
        pytest.param(
            {}, {"OS_ENDPOINT_TYPE": "internalURL"}, "interface", "internal", id="v2-type"
        ),
        pytest.param({"interface": "admin"}, {}, "interface", "admin", id="flag-interface"),
        pytest.param({}, {}, "interface", "public", id="interface-default"),
        pytest.param({}, {"OS_CACERT": "/env.pem"}, "cacert", "/env.pem", id="env-cacert"),
        pytest.param({"cacert": "/f.pem"}, {"OS_CACERT": "/e.pem"}, "cacert", "/f.pem", id="f-ca"),
        pytest.param({}, {"OS_IMAGE_URL": "https://img"}, "endpoint", "https://img", id="env-url"),
    ],
)
def test_each_field_comes_from_the_highest_source_that_has_it(
    tmp_path: Path, flags: dict[str, str], env: dict[str, str], field: str, expected: str
) -> None:
    path = clouds_file(tmp_path, {"mine": PASSWORD_CLOUD})
    spec = load(CredentialOptions(os_cloud="mine", **flags), env, [path])  # type: ignore[arg-type]
    assert expected == getattr(spec, field)


def test_openrc_alone_gives_a_password_spec() -> None:
    expected = AuthSpec(
        method="password",
        auth_url="https://env.example:5000/v3",
        username="env-user",
        password="env-password",
        user_domain_name="EnvDomain",
        project_name="env-project",
        project_domain_name="EnvDomain",
        region_name="EnvRegion",
    )
    assert expected == load(env=OPENRC_ENV)


def test_secure_yaml_beside_clouds_yaml_adds_the_secret(tmp_path: Path) -> None:
    cloud = {"auth": {k: v for k, v in PASSWORD_CLOUD["auth"].items() if k != "password"}}
    path = clouds_file(tmp_path, {"mine": cloud})
    write_yaml(tmp_path / "secure.yaml", {"clouds": {"mine": {"auth": {"password": "s3cure"}}}})
    spec = load(CredentialOptions(os_cloud="mine"), paths=[path])
    assert ("s3cure", "cloud-user") == (spec.password, spec.username)


def test_secure_yaml_overrides_clouds_yaml(tmp_path: Path) -> None:
    path = clouds_file(tmp_path, {"mine": PASSWORD_CLOUD})
    write_yaml(tmp_path / "secure.yaml", {"clouds": {"mine": {"auth": {"password": "newer"}}}})
    assert "newer" == load(CredentialOptions(os_cloud="mine"), paths=[path]).password


def test_os_cloud_env_chooses_the_cloud(tmp_path: Path) -> None:
    other = {**PASSWORD_CLOUD, "region_name": "OtherRegion"}
    path = clouds_file(tmp_path, {"mine": PASSWORD_CLOUD, "other": other})
    assert "OtherRegion" == load(env={"OS_CLOUD": "other"}, paths=[path]).region_name


def test_os_cloud_flag_beats_os_cloud_env(tmp_path: Path) -> None:
    other = {**PASSWORD_CLOUD, "region_name": "OtherRegion"}
    path = clouds_file(tmp_path, {"mine": PASSWORD_CLOUD, "other": other})
    spec = load(CredentialOptions(os_cloud="mine"), {"OS_CLOUD": "other"}, [path])
    assert "CloudRegion" == spec.region_name


def test_os_client_config_file_beats_the_search_path(tmp_path: Path) -> None:
    searched = clouds_file(tmp_path / "cwd", {"mine": PASSWORD_CLOUD})
    named = clouds_file(tmp_path / "elsewhere", {"mine": {**PASSWORD_CLOUD, "region_name": "N"}})
    env = {"OS_CLIENT_CONFIG_FILE": str(named), "OS_CLOUD": "mine"}
    assert "N" == load(env=env, paths=[searched]).region_name


def test_the_first_existing_search_path_wins(tmp_path: Path) -> None:
    first = clouds_file(tmp_path / "a", {"mine": {**PASSWORD_CLOUD, "region_name": "First"}})
    second = clouds_file(tmp_path / "b", {"mine": PASSWORD_CLOUD})
    paths = [tmp_path / "missing" / "clouds.yaml", first, second]
    assert "First" == load(CredentialOptions(os_cloud="mine"), paths=paths).region_name


def test_default_search_paths_are_cwd_user_config_then_etc(tmp_path: Path) -> None:
    expected = (
        tmp_path / "cwd" / "clouds.yaml",
        tmp_path / "home" / ".config" / "openstack" / "clouds.yaml",
        Path("/etc/openstack/clouds.yaml"),
    )
    assert expected == default_search_paths(tmp_path / "cwd", tmp_path / "home")


# ---------------------------------------------------------------------------------------------
# Method choice


def test_token_flag_with_endpoint_beats_a_password_cloud(tmp_path: Path) -> None:
    path = clouds_file(tmp_path, {"mine": PASSWORD_CLOUD})
    options = CredentialOptions(os_cloud="mine", token="tok", endpoint="https://img")
    spec = load(options, paths=[path])
    assert ("token", True) == (spec.method, spec.is_static_token)


def test_token_and_endpoint_need_no_auth_url() -> None:
    spec = load(env={"OS_AUTH_TOKEN": "tok", "OS_IMAGE_URL": "https://img"})
    assert AuthSpec(method="token", token="tok", endpoint="https://img") == spec


def test_token_with_auth_url_and_project_rescopes_through_keystone() -> None:
    env = {"OS_AUTH_TOKEN": "tok", "OS_AUTH_URL": "https://id", "OS_PROJECT_ID": "p1"}
    spec = load(env=env)
    assert ("token", False) == (spec.method, spec.is_static_token)


def test_application_credential_from_env() -> None:
    env = {
        "OS_AUTH_URL": "https://id",
        "OS_APPLICATION_CREDENTIAL_ID": "ac1",
        "OS_APPLICATION_CREDENTIAL_SECRET": "acs",
    }
    expected = AuthSpec(
        method="application_credential",
        auth_url="https://id",
        application_credential_id="ac1",
        application_credential_secret="acs",
    )
    assert expected == load(env=env)


def test_auth_type_in_clouds_yaml_names_the_method(tmp_path: Path) -> None:
    cloud = {
        "auth_type": "v3applicationcredential",
        "auth": {"auth_url": "https://id", "application_credential_id": "a", "username": "u",
                 "application_credential_secret": "s"},
    }  # fmt: skip
    path = clouds_file(tmp_path, {"ac": cloud})
    assert "application_credential" == load(CredentialOptions(os_cloud="ac"), paths=[path]).method


def test_names_without_domains_are_in_the_default_domain() -> None:
    env = {k: v for k, v in OPENRC_ENV.items() if "DOMAIN" not in k}
    spec = load(env=env)
    assert ("default", "default") == (spec.user_domain_id, spec.project_domain_id)


def test_shared_domain_name_in_clouds_yaml_applies_to_user_and_project(tmp_path: Path) -> None:
    auth = {k: v for k, v in PASSWORD_CLOUD["auth"].items() if "domain" not in k}
    path = clouds_file(tmp_path, {"mine": {"auth": {**auth, "domain_name": "Shared"}}})
    spec = load(CredentialOptions(os_cloud="mine"), paths=[path])
    assert ("Shared", "Shared") == (spec.user_domain_name, spec.project_domain_name)


def test_first_of_regions_list_is_used_without_region_name(tmp_path: Path) -> None:
    cloud = {"auth": PASSWORD_CLOUD["auth"], "regions": [{"name": "R1"}, "R2"]}
    path = clouds_file(tmp_path, {"mine": cloud})
    assert "R1" == load(CredentialOptions(os_cloud="mine"), paths=[path]).region_name


def test_numeric_ids_in_yaml_become_strings(tmp_path: Path) -> None:
    cloud = {"auth": {**PASSWORD_CLOUD["auth"], "project_id": 1234}}
    path = clouds_file(tmp_path, {"mine": cloud})
    assert "1234" == load(CredentialOptions(os_cloud="mine"), paths=[path]).project_id


# ---------------------------------------------------------------------------------------------
# TLS settings


@pytest.mark.parametrize(
    ("cloud_extra", "flags", "expected"),
    [
        pytest.param({}, {}, True, id="system-cas"),
        pytest.param({"verify": False}, {}, False, id="clouds-verify-false"),
        pytest.param({"verify": "False"}, {}, False, id="clouds-verify-string"),
        pytest.param({"cacert": "/c.pem"}, {}, "/c.pem", id="clouds-cacert"),
        pytest.param({"cacert": "/c.pem"}, {"cacert": "/f.pem"}, "/f.pem", id="flag-cacert"),
        pytest.param({}, {"insecure": True}, False, id="insecure-flag"),
        pytest.param(
            {"verify": False}, {"insecure": False}, False, id="insecure-false-no-override"
        ),
    ],
)
def test_tls_verify_follows_flags_then_clouds_yaml(
    tmp_path: Path, cloud_extra: dict[str, Any], flags: dict[str, Any], expected: bool | str
) -> None:
    path = clouds_file(tmp_path, {"mine": {**PASSWORD_CLOUD, **cloud_extra}})
    spec = load(CredentialOptions(os_cloud="mine", **flags), paths=[path])
    assert expected == spec.tls_verify


# ---------------------------------------------------------------------------------------------
# Errors


def test_nothing_anywhere_says_which_sources_were_looked_at(tmp_path: Path) -> None:
    paths = [tmp_path / "a" / "clouds.yaml", tmp_path / "b" / "clouds.yaml"]
    expected = (
        "no credentials found; looked at flags (--os-cloud, --os-auth-url, --os-username, "
        "--token, ...): none given; environment (OS_CLOUD, OS_AUTH_URL, OS_AUTH_TOKEN, "
        "OS_USERNAME, OS_APPLICATION_CREDENTIAL_ID): none set (set: OS_REGION_NAME); "
        f"clouds.yaml: none found at {paths[0]}, {paths[1]}"
    )
    assert expected == error_of(env={"OS_REGION_NAME": "r", "HOME": "/h"}, paths=paths)


def test_clouds_yaml_present_but_no_cloud_chosen_lists_the_clouds(tmp_path: Path) -> None:
    path = clouds_file(tmp_path, {"b": PASSWORD_CLOUD, "a": PASSWORD_CLOUD})
    message = error_of(paths=[path])
    assert message.endswith(
        f"clouds.yaml: {path} has clouds a, b but none was chosen (--os-cloud or OS_CLOUD)"
    )


def test_unknown_cloud_lists_the_known_ones(tmp_path: Path) -> None:
    path = clouds_file(tmp_path, {"prod": PASSWORD_CLOUD, "dev": PASSWORD_CLOUD})
    expected = f"cloud 'stage' (--os-cloud) is not in {path}; known clouds: dev, prod"
    assert expected == error_of(CredentialOptions(os_cloud="stage"), paths=[path])


def test_cloud_named_but_no_clouds_yaml_anywhere(tmp_path: Path) -> None:
    missing = tmp_path / "clouds.yaml"
    expected = f"cloud 'prod' (OS_CLOUD) but no clouds.yaml found; looked at: {missing}"
    assert expected == error_of(env={"OS_CLOUD": "prod"}, paths=[missing])


def test_malformed_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "clouds.yaml"
    path.write_text("clouds:\n  mine:\n    auth: {auth_url: x\n  other: [\n", encoding="utf-8")
    message = error_of(CredentialOptions(os_cloud="mine"), paths=[path])
    assert message.startswith(f"malformed YAML in {path} at line ")


def test_malformed_secure_yaml_names_secure_yaml_and_not_its_content(tmp_path: Path) -> None:
    path = clouds_file(tmp_path, {"mine": PASSWORD_CLOUD})
    secure = tmp_path / "secure.yaml"
    secure.write_text("clouds:\n  mine:\n    auth:\n      password: 'sekrit-value\n", "utf-8")
    message = error_of(CredentialOptions(os_cloud="mine"), paths=[path])
    assert message.startswith(f"malformed YAML in {secure} at line ")
    assert "sekrit-value" not in message


def test_clouds_yaml_that_is_not_a_mapping_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "clouds.yaml"
    path.write_text("- just\n- a list\n", encoding="utf-8")
    expected = f"malformed {path}: the top level must be a mapping"
    assert expected == error_of(CredentialOptions(os_cloud="x"), paths=[path])


def test_os_client_config_file_that_does_not_exist(tmp_path: Path) -> None:
    env = {"OS_CLIENT_CONFIG_FILE": str(tmp_path / "nope.yaml"), "OS_CLOUD": "x"}
    expected = f"OS_CLIENT_CONFIG_FILE names {tmp_path / 'nope.yaml'}, which does not exist"
    assert expected == error_of(env=env)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param(
            {"OS_USERNAME": "u", "OS_PASSWORD": "p", "OS_PROJECT_NAME": "pr"},
            "password auth is missing an auth URL (--os-auth-url, OS_AUTH_URL or auth.auth_url "
            "in clouds.yaml)",
            id="password-no-auth-url",
        ),
        pytest.param(
            {"OS_AUTH_URL": "https://id", "OS_USERNAME": "u", "OS_PASSWORD": "p"},
            "password auth is missing a project (--os-project-name/--os-project-id, "
            "OS_PROJECT_NAME/OS_PROJECT_ID)",
            id="password-no-project",
        ),
        pytest.param(
            {"OS_AUTH_URL": "https://id"},
            "password auth is missing a user (--os-username/--os-user-id, OS_USERNAME/OS_USER_ID "
            "or auth.username); a password (--os-password, OS_PASSWORD or auth.password in "
            "secure.yaml); a project (--os-project-name/--os-project-id, "
            "OS_PROJECT_NAME/OS_PROJECT_ID)",
            id="bare-auth-url",
        ),
        pytest.param(
            {
                "OS_AUTH_URL": "https://id",
                "OS_APPLICATION_CREDENTIAL_NAME": "n",
                "OS_APPLICATION_CREDENTIAL_SECRET": "s",
            },
            "application credential auth is missing an application credential id, or a name "
            "with a user (--os-application-credential-id/-name, "
            "OS_APPLICATION_CREDENTIAL_ID/_NAME)",
            id="app-cred-name-without-user",
        ),
        pytest.param(
            {"OS_AUTH_URL": "https://id", "OS_APPLICATION_CREDENTIAL_ID": "a"},
            "application credential auth is missing an application credential secret "
            "(--os-application-credential-secret or OS_APPLICATION_CREDENTIAL_SECRET)",
            id="app-cred-no-secret",
        ),
        pytest.param(
            {"OS_AUTH_TOKEN": "t"},
            "token auth is missing an image endpoint (--endpoint or OS_IMAGE_URL) or an auth URL "
            "and a project to find it in the catalog",
            id="token-alone",
        ),
        pytest.param(
            {"OS_AUTH_TYPE": "token", "OS_IMAGE_URL": "https://img"},
            "token auth is missing a token (--token or OS_AUTH_TOKEN)",
            id="token-type-without-token",
        ),
        pytest.param(
            {"OS_AUTH_TYPE": "v3oidcpassword", "OS_AUTH_URL": "https://id"},
            "auth_type 'v3oidcpassword' is not supported; use password, "
            "v3applicationcredential, token",
            id="unsupported-auth-type",
        ),
    ],
)
def test_incomplete_credentials_say_what_is_missing(env: dict[str, str], expected: str) -> None:
    assert expected == error_of(env=env)
