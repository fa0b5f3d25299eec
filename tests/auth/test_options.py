"""The --os-* flags: parsed into CredentialOptions, and never showing a secret in --help."""

from __future__ import annotations

import argparse

import pytest

from bulktag.auth.options import (
    CredentialOptions,
    add_credential_arguments,
    flag_names,
    options_from_namespace,
)


def _parser() -> argparse.ArgumentParser:
    # The CLI's own flags, which the credentials layer reads but does not define.
    parser = argparse.ArgumentParser(prog="bulktag")
    parser.add_argument("--token")
    parser.add_argument("--endpoint")
    parser.add_argument("--cacert")
    parser.add_argument("--insecure", action="store_true")
    add_credential_arguments(parser)
    return parser


def test_every_flag_lands_in_its_field() -> None:
    argv = [
        "--os-cloud", "c", "--os-auth-url", "https://id", "--os-username", "u",
        "--os-user-id", "uid", "--os-password", "pw", "--os-project-name", "p",
        "--os-project-id", "pid", "--os-user-domain-name", "ud", "--os-user-domain-id", "udid",
        "--os-project-domain-name", "pd", "--os-project-domain-id", "pdid",
        "--os-region-name", "r", "--os-interface", "internal",
        "--os-application-credential-id", "acid", "--os-application-credential-name", "acn",
        "--os-application-credential-secret", "acs", "--os-cacert", "/ca.pem",
        "--token", "t", "--endpoint", "https://img", "--insecure",
        "--os-auth-type", "v3totp", "--os-cert", "/c.pem", "--os-key", "/k.pem",
    ]  # fmt: skip
    expected = CredentialOptions(
        os_cloud="c", auth_url="https://id", username="u", user_id="uid", password="pw",
        project_name="p", project_id="pid", user_domain_name="ud", user_domain_id="udid",
        project_domain_name="pd", project_domain_id="pdid", region_name="r",
        interface="internal", application_credential_id="acid",
        application_credential_name="acn", application_credential_secret="acs",
        token="t", endpoint="https://img", cacert="/ca.pem", insecure=True,
        auth_type="v3totp", cert="/c.pem", key="/k.pem",
    )  # fmt: skip
    assert expected == options_from_namespace(_parser().parse_args(argv))


def test_nothing_given_is_all_none_except_insecure_false() -> None:
    assert CredentialOptions(insecure=False) == options_from_namespace(_parser().parse_args([]))


@pytest.mark.parametrize(
    ("argv", "field", "expected"),
    [
        (["--os-token", "t1"], "token", "t1"),
        (["--token", "cli", "--os-token", "os"], "token", "cli"),
        (["--os-endpoint-type", "internal"], "interface", "internal"),
        (["--os-interface", "admin", "--os-endpoint-type", "internal"], "interface", "admin"),
        (["--os-image-url", "https://img"], "endpoint", "https://img"),
        (["--endpoint", "https://cli", "--os-image-url", "https://os"], "endpoint", "https://cli"),
    ],
)
def test_the_openstack_cli_spellings_land_in_the_same_field(
    argv: list[str], field: str, expected: str
) -> None:
    assert expected == getattr(options_from_namespace(_parser().parse_args(argv)), field)


def test_cli_cacert_wins_over_os_cacert() -> None:
    ns = _parser().parse_args(["--cacert", "/cli.pem", "--os-cacert", "/os.pem"])
    assert "/cli.pem" == options_from_namespace(ns).cacert


def test_namespace_without_the_cli_flags_reads_them_as_none() -> None:
    parser = argparse.ArgumentParser()
    add_credential_arguments(parser)
    options = options_from_namespace(parser.parse_args(["--os-username", "u"]))
    assert (None, None, None, None) == (
        options.token,
        options.endpoint,
        options.cacert,
        options.insecure,
    )


def test_help_shows_no_secret_even_when_the_environment_holds_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OS_PASSWORD", "hunter2-env-password")
    monkeypatch.setenv("OS_APPLICATION_CREDENTIAL_SECRET", "env-app-secret")
    text = _parser().format_help()
    assert "--os-application-credential-secret" in text
    assert "hunter2-env-password" not in text
    assert "env-app-secret" not in text
    assert "(default:" not in text


def test_parsed_secrets_are_redacted_in_the_repr() -> None:
    ns = _parser().parse_args(["--os-password", "pw-on-cli", "--token", "tok-on-cli"])
    shown = repr(options_from_namespace(ns))
    assert "pw-on-cli" not in shown
    assert "tok-on-cli" not in shown
    assert "password=<redacted>" in shown


def test_every_field_is_named_by_flags_that_set_it() -> None:
    """Messages name a setting by :func:`flag_names` (where the settings came from, what an
    auth plugin misses): each spelling given there sets that field in the real `run` parser.
    Built as ``--os-<field>``, the image endpoint was named ``--os-endpoint``, a flag bulktag
    does not have."""
    from dataclasses import fields

    from bulktag.cli import build_parser

    parser = build_parser(["run"])
    for field in fields(CredentialOptions):
        flags = flag_names(field.name)
        assert flags, field.name
        for flag in flags.split("/"):
            value = [] if flag == "--insecure" else ["x"]
            args = parser.parse_args(["run", "in.csv", flag, *value])
            assert getattr(options_from_namespace(args), field.name) not in (None, False), flag


def test_an_auth_option_no_flag_sets_is_named_by_none() -> None:
    assert flag_names("passcode") is None
