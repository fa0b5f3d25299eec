"""Settings from three layers (flag > BULKTAG_* variable > TOML file > default), and errors that
name where the bad value came from."""

from __future__ import annotations

import math
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from bulktag.config import (
    OPTIONS,
    ConfigError,
    Settings,
    misspelt_variables,
    parse_toml,
    resolve,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "bulktag.example.toml"
DEFAULTS = {option.name: option.default for option in OPTIONS}


def settings(
    flags: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    file_values: dict[str, Any] | None = None,
) -> Settings:
    return resolve(flags or {}, env or {}, file_values or {}, "cfg.toml")


# -- precedence --------------------------------------------------------------------------------


def test_nothing_given_gives_the_defaults() -> None:
    assert DEFAULTS == asdict(settings())


@pytest.mark.parametrize(
    ("key", "flag", "env", "file", "expected"),
    [
        pytest.param("rate", None, None, None, 10.0, id="rate-default"),
        pytest.param("rate", None, None, 5, 5.0, id="rate-file"),
        pytest.param("rate", None, "7.5", 5, 7.5, id="rate-env-beats-file"),
        pytest.param("rate", 2.0, "7.5", 5, 2.0, id="rate-flag-beats-env"),
        pytest.param("rate", 2.0, None, 5, 2.0, id="rate-flag-beats-file"),
        pytest.param("concurrency", None, None, 4, 4, id="concurrency-file"),
        pytest.param("concurrency", None, "8", 4, 8, id="concurrency-env"),
        pytest.param("concurrency", 32, "8", 4, 32, id="concurrency-flag"),
        pytest.param("results", None, None, "f.jsonl", "f.jsonl", id="results-file"),
        pytest.param("results", None, "e.jsonl", "f.jsonl", "e.jsonl", id="results-env"),
        pytest.param("results", "a.jsonl", "e.jsonl", "f.jsonl", "a.jsonl", id="results-flag"),
        pytest.param("insecure", None, None, True, True, id="insecure-file"),
        pytest.param("insecure", None, "false", True, False, id="insecure-env-false-wins"),
        pytest.param("insecure", True, "false", None, True, id="insecure-flag"),
        pytest.param("log_level", None, "debug", "error", "debug", id="log-level-env"),
        pytest.param("max_consecutive_failures", None, "0", 5, 0,
                     id="zero-from-env-is-a-value-not-absence"),
    ],
)  # fmt: skip
def test_a_flag_beats_a_variable_beats_the_file_beats_the_default(
    key: str, flag: Any, env: str | None, file: Any, expected: Any
) -> None:
    env_vars = {} if env is None else {"BULKTAG_" + key.upper(): env}
    file_values = {} if file is None else {key: file}
    resolved = settings({key: flag}, env_vars, file_values)
    assert expected == getattr(resolved, key)
    assert type(expected) is type(getattr(resolved, key))


@pytest.mark.parametrize(
    ("key", "env", "expected"),
    [
        pytest.param("endpoint", {"OS_IMAGE_URL": "https://os"}, "https://os", id="os-image-url"),
        pytest.param("endpoint", {"BULKTAG_ENDPOINT": "https://bt"}, "https://bt",
                     id="bulktag-endpoint"),
        pytest.param("endpoint", {"OS_IMAGE_URL": "https://os", "BULKTAG_ENDPOINT": "https://bt"},
                     "https://bt", id="bulktag-endpoint-wins"),
        pytest.param("endpoint", {"BULKTAG_ENDPOINT": "https://bt", "OS_IMAGE_URL": "https://os"},
                     "https://bt", id="bulktag-endpoint-wins-whatever-the-order"),
        pytest.param("cacert", {"OS_CACERT": "/os.pem"}, "/os.pem", id="os-cacert"),
        pytest.param("cacert", {"OS_CACERT": "/os.pem", "BULKTAG_CACERT": "/bt.pem"}, "/bt.pem",
                     id="bulktag-cacert-wins"),
    ],
)  # fmt: skip
def test_openrc_variables_are_read_and_bulktag_variables_win(
    key: str, env: dict[str, str], expected: str
) -> None:
    assert expected == getattr(settings(env=env, file_values={key: "file"}), key)


def test_a_flag_beats_os_image_url() -> None:
    resolved = settings({"endpoint": "https://flag"}, {"OS_IMAGE_URL": "https://os"})
    assert "https://flag" == resolved.endpoint


def test_unrelated_variables_are_ignored() -> None:
    env = {"OS_AUTH_TOKEN": "secret", "BULKTAG_UNKNOWN": "1", "RATE": "3", "bulktag_rate": "3"}
    assert DEFAULTS == asdict(settings(env=env))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        *[pytest.param(t, True, id=f"true-{t!r}") for t in
          ("1", "true", "TRUE", "True", "yes", "on", " on ")],
        *[pytest.param(t, False, id=f"false-{t!r}") for t in
          ("0", "false", "FALSE", "no", "off", "", "  ")],
    ],
)  # fmt: skip
def test_boolean_variables_accept_the_usual_spellings(text: str, expected: bool) -> None:
    assert expected is settings(env={"BULKTAG_INSECURE": text}).insecure


# -- errors name their source ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "env", "file_values", "expected"),
    [
        pytest.param({"rate": -1.0}, {}, {}, "--rate: must be at least 0.001, got -1.0",
                     id="flag-negative"),
        pytest.param({"rate": 0.0}, {}, {}, "--rate: must be at least 0.001, got 0.0",
                     id="flag-zero"),
        pytest.param({"rate": math.nan}, {}, {}, "--rate: must be a finite number, got nan",
                     id="flag-nan"),
        pytest.param({"rate": math.inf}, {}, {}, "--rate: must be a finite number, got inf",
                     id="flag-inf"),
        pytest.param({"concurrency": 4097}, {}, {},
                     "--concurrency: must be at most 4096, got 4097", id="flag-above-max"),
        pytest.param({"max_attempts": 0}, {}, {}, "--max-attempts: must be at least 1, got 0",
                     id="flag-dashed-name"),
        pytest.param({"log_format": "xml"}, {}, {},
                     "--log-format: expected one of auto, console, json, got 'xml'",
                     id="flag-bad-choice"),
        pytest.param({"burst": "3"}, {}, {}, "--burst: expected int, got '3'",
                     id="flag-wrong-type"),
        pytest.param({}, {"BULKTAG_RATE": "-2"}, {},
                     "BULKTAG_RATE: must be at least 0.001, got -2.0", id="env-negative"),
        pytest.param({}, {"BULKTAG_RATE": "0"}, {},
                     "BULKTAG_RATE: must be at least 0.001, got 0.0", id="env-zero"),
        pytest.param({}, {"BULKTAG_RATE": "nan"}, {},
                     "BULKTAG_RATE: must be a finite number, got nan", id="env-nan"),
        pytest.param({}, {"BULKTAG_RATE": "inf"}, {},
                     "BULKTAG_RATE: must be a finite number, got inf", id="env-inf"),
        pytest.param({}, {"BULKTAG_CONCURRENCY": "5000"}, {},
                     "BULKTAG_CONCURRENCY: must be at most 4096, got 5000", id="env-above-max"),
        pytest.param({}, {"BULKTAG_INSECURE": "maybe"}, {},
                     "BULKTAG_INSECURE: expected true or false, got 'maybe'", id="env-bad-bool"),
        pytest.param({}, {"BULKTAG_LOG_LEVEL": "loud"}, {},
                     "BULKTAG_LOG_LEVEL: expected one of debug, info, warning, error, got 'loud'",
                     id="env-bad-choice"),
        pytest.param({}, {}, {"rate": -1}, "cfg.toml: rate: must be at least 0.001, got -1.0",
                     id="file-negative"),
        pytest.param({}, {}, {"rate": 0}, "cfg.toml: rate: must be at least 0.001, got 0.0",
                     id="file-zero"),
        pytest.param({}, {}, {"rate": math.nan}, "cfg.toml: rate: must be a finite number, got nan",
                     id="file-nan"),
        pytest.param({}, {}, {"rate": math.inf}, "cfg.toml: rate: must be a finite number, got inf",
                     id="file-inf"),
        pytest.param({}, {}, {"rate": "10"}, "cfg.toml: rate: expected float, got '10'",
                     id="file-string-for-float"),
        pytest.param({}, {}, {"burst": True}, "cfg.toml: burst: expected int, got True",
                     id="file-bool-for-int"),
        pytest.param({}, {}, {"rate": True}, "cfg.toml: rate: expected float, got True",
                     id="file-bool-for-float"),
        pytest.param({}, {}, {"burst": 2.0}, "cfg.toml: burst: expected int, got 2.0",
                     id="file-float-for-int"),
        pytest.param({}, {}, {"insecure": "yes"}, "cfg.toml: insecure: expected bool, got 'yes'",
                     id="file-string-for-bool"),
        pytest.param({}, {}, {"concurrency": 10_000},
                     "cfg.toml: concurrency: must be at most 4096, got 10000", id="file-above-max"),
        pytest.param({}, {}, {"log_format": "xml"},
                     "cfg.toml: log_format: expected one of auto, console, json, got 'xml'",
                     id="file-bad-choice"),
        pytest.param({}, {"OS_IMAGE_URL": "x"}, {"endpoint": 5},
                     "cfg.toml: endpoint: expected str, got 5", id="file-int-for-str"),
    ],
)  # fmt: skip
def test_a_bad_value_is_an_error_naming_its_source(
    flags: dict[str, Any], env: dict[str, str], file_values: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        resolve(flags, env, file_values, "cfg.toml")
    assert expected == str(raised.value)


@pytest.mark.parametrize(
    ("env", "expected_source", "expected_value"),
    [
        pytest.param({"BULKTAG_RATE": "fast"}, "BULKTAG_RATE", "'fast'", id="not-a-number"),
        pytest.param({"BULKTAG_BURST": "1.5"}, "BULKTAG_BURST", "'1.5'", id="fraction-for-int"),
        pytest.param({"BULKTAG_CONCURRENCY": "inf"}, "BULKTAG_CONCURRENCY", "'inf'",
                     id="inf-for-int"),
        pytest.param({"BULKTAG_MAX_ATTEMPTS": ""}, "BULKTAG_MAX_ATTEMPTS", "''", id="empty"),
    ],
)  # fmt: skip
def test_a_variable_that_is_not_a_number_is_an_error_quoting_it(
    env: dict[str, str], expected_source: str, expected_value: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        settings(env=env)
    message = str(raised.value)
    assert expected_source + ": " == message[: len(expected_source) + 2]
    assert expected_value in message


def test_a_bad_lower_layer_is_reported_even_when_a_higher_one_overrides_it() -> None:
    with pytest.raises(ConfigError, match=r"^cfg\.toml: rate: "):
        settings({"rate": 5.0}, {}, {"rate": -1})


def test_a_flag_left_out_is_none_and_does_not_override() -> None:
    assert 3.0 == settings({"rate": None}, {"BULKTAG_RATE": "3"}).rate


@pytest.mark.parametrize(
    ("key", "value"),
    [
        pytest.param("rate", 0.001, id="rate-minimum"),
        pytest.param("concurrency", 4096, id="concurrency-maximum"),
        pytest.param("concurrency", 1, id="concurrency-minimum"),
        pytest.param("max_consecutive_failures", 0, id="breaker-off"),
        pytest.param("fsync_interval", 0.0, id="fsync-every-batch"),
        pytest.param("grace_period", 0, id="grace-zero-int-to-float"),
    ],
)
def test_values_at_the_limits_are_accepted(key: str, value: Any) -> None:
    assert value == getattr(settings({key: value}), key)


# -- the TOML file -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", {}, id="empty"),
        pytest.param('rate = 5\nresults = "r.jsonl"\n', {"rate": 5, "results": "r.jsonl"},
                     id="flat"),
        pytest.param('[run]\nrate = 5\ninsecure = true\n', {"rate": 5, "insecure": True},
                     id="run-table"),
        pytest.param('burst = 2\n[run]\nrate = 5\n', {"burst": 2, "rate": 5},
                     id="flat-and-run-table"),
        pytest.param('rate = 1\n[run]\nrate = 5\n', {"rate": 5}, id="run-table-wins"),
    ],
)  # fmt: skip
def test_parse_toml_reads_flat_keys_and_a_run_table(text: str, expected: dict[str, Any]) -> None:
    assert expected == parse_toml(text, "cfg.toml")


@pytest.mark.parametrize(
    ("text", "expected_unknown"),
    [
        pytest.param("[other]\nrate = 5\n", " 'other'", id="unknown-table"),
        pytest.param('token = "secret"\n', " 'token'", id="secret-not-a-setting"),
        pytest.param(
            "foo = 1\nrat = 5\n", "s 'foo', 'rat' (did you mean 'rate'?)", id="one-not-near"
        ),
    ],
)
def test_an_unknown_key_is_an_error_listing_the_known_ones(
    text: str, expected_unknown: str
) -> None:
    known = ", ".join(sorted(option.name for option in OPTIONS))
    with pytest.raises(ConfigError) as raised:
        parse_toml(text, "cfg.toml")
    assert f"cfg.toml: unknown setting{expected_unknown} (known: {known})" == str(raised.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("rat = 5\n", "setting 'rat' (did you mean 'rate'?)", id="typo"),
        pytest.param(
            "[run]\nmax_attempt = 5\n",
            "setting 'max_attempt' (did you mean 'max_attempts'?)",
            id="typo-in-run-table",
        ),
        pytest.param(
            "max-attempts = 5\nratee = 2\n",
            "settings 'max-attempts' (did you mean 'max_attempts'?),"
            " 'ratee' (did you mean 'rate'?)",
            id="the-flags-spelling-and-a-typo",
        ),
    ],
)
def test_unknown_keys_that_are_near_misses_each_name_the_setting_meant(
    text: str, expected: str
) -> None:
    """Every unknown key at once, so one edit fixes the file; the known list only where a key
    is not near any (it is the rest of a long line)."""
    with pytest.raises(ConfigError) as raised:
        parse_toml(text, "cfg.toml")
    assert f"cfg.toml: unknown {expected}" == str(raised.value)


def test_variables_near_a_settings_name_are_misspelt_and_others_with_the_prefix_are_not() -> None:
    env = {
        "BULKTAG_RAET": "5",  # a typo: read by nothing
        "BULKTAG_MAX_ATEMPTS": "3",
        "BULKTAG_RATE": "5",  # a setting's own
        "OS_IMAGE_URL": "http://glance",  # one a setting reads besides its BULKTAG_ name
        "BULKTAG_OPENSTACK_VENV": "/venv",  # another tool's (the integration tier's set-up)
        "RAET": "5",
    }
    assert [
        ("BULKTAG_MAX_ATEMPTS", "BULKTAG_MAX_ATTEMPTS"),
        ("BULKTAG_RAET", "BULKTAG_RATE"),
    ] == misspelt_variables(env)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("rate = \n", id="missing-value"),
        pytest.param("rate = 1\nrate = 2\n", id="duplicate-key"),
        pytest.param("[run\n", id="unclosed-table"),
    ],
)
def test_invalid_toml_is_an_error_naming_the_file(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^cfg\.toml: not valid TOML: "):
        parse_toml(text, "cfg.toml")


def test_the_example_file_parses_to_exactly_the_defaults() -> None:
    values = parse_toml(EXAMPLE.read_text(encoding="utf-8"), str(EXAMPLE))
    assert {k: v for k, v in DEFAULTS.items() if v is not None} == values
    assert {k: type(v) for k, v in DEFAULTS.items() if v is not None} == {
        k: type(v) for k, v in values.items()
    }
    assert settings() == resolve({}, {}, values, str(EXAMPLE))


@pytest.mark.parametrize("option", OPTIONS, ids=[option.name for option in OPTIONS])
def test_the_example_file_mentions_every_setting(option: Any) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert re.search(rf"^#?\s*{option.name}\s*=", text, re.MULTILINE)
