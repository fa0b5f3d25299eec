"""CSV bytes → Row / InvalidRow with IMS rules: the value column and IMS's key/value limits.

The Glance rules (tests/test_source.py) are untouched by all this: a value column is only read
when the rules say rows carry values.
"""

from __future__ import annotations

import pytest
from support import U1, U2, read_csv

from bulktag.model import InvalidRow, Row
from bulktag.source import (
    GLANCE_RULES,
    InputRefused,
    Parsed,
    TagRules,
    ims_rules,
)

KEY_CHARS = "(allowed: letters, digits, '_' and '-')"
VALUE_CHARS = "(allowed: letters, digits, '_', '.' and '-')"
RELAXED = "(not allowed: = * < > \\ , | / and control characters)"


def rows(data: str, rules: TagRules | None = None) -> list[Parsed]:
    return read_csv(data.encode(), rules or ims_rules())


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(f"{U1},env,prod\n", [Row(1, U1, "env", "prod")], id="three-columns"),
        pytest.param(f"{U1},env\n", [Row(1, U1, "env", None)], id="two-columns-a-bare-key"),
        pytest.param(f"{U1},env,\n", [Row(1, U1, "env", "")], id="empty-value"),
        pytest.param(f"image_id,key,value\n{U1},env,prod\n", [Row(2, U1, "env", "prod")],
                     id="header-key-value"),
        pytest.param(f"value,owner,key,image_id\nprod,al,env,{U1}\n",
                     [Row(2, U1, "env", "prod")], id="header-any-order-extra-columns"),
        pytest.param(f"image_id,tag,value\n{U1},env,prod\n", [Row(2, U1, "env", "prod")],
                     id="header-tag-is-the-key"),
        pytest.param(f"image_id,key\n{U1},env\n", [Row(2, U1, "env", None)],
                     id="header-without-value"),
        pytest.param(f"{U1},env, prod \n", [Row(1, U1, "env", "prod")], id="value-stripped"),
        pytest.param(f"{U1},env,prod,x\n",
                     [InvalidRow(1, U1, None, "expected 2 or 3 columns (image_id,key[,value]), "
                                              "got 4")], id="four-columns"),
        pytest.param(f"image_id,key,value\n{U1},env\n",
                     [InvalidRow(2, None, None, "expected at least 3 columns, as the header "
                                              "names, got 2")],
                     id="header-names-a-value-the-row-lacks"),
    ],
)  # fmt: skip
def test_ims_rows_carry_a_value_when_the_input_has_one(data: str, expected: list[Parsed]) -> None:
    assert expected == rows(data)


def one_row(key: str, value: str, error: str | None) -> Row | InvalidRow:
    """What line 1, ``U1,key,value``, reads as: the row, or refused with ``error``."""
    return Row(1, U1, key, value) if error is None else InvalidRow(1, U1, key, error, value)


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        pytest.param("k" * 36, "v" * 43, None, id="longest-key-and-value"),
        pytest.param("k" * 37, "x", "key is 37 characters long (at most 36)", id="key-too-long"),
        pytest.param("env", "v" * 44, "value is 44 characters long (at most 43)",
                     id="value-too-long"),
        pytest.param("", "x", "key is empty", id="empty-key"),
        pytest.param("a.b", "x", f"key contains '.' {KEY_CHARS}", id="dot-in-key"),
        pytest.param("env", "v1.2-rc_3", None, id="dot-in-value-ok"),
        pytest.param("env", "a/b", f"value contains '/' {VALUE_CHARS}", id="slash-in-value"),
        pytest.param("env", "a b", f"value contains U+0020 {VALUE_CHARS}", id="space-in-value"),
        pytest.param("clé", "x", f"key contains 'é' {KEY_CHARS}", id="non-ascii-key"),
    ],
)  # fmt: skip
def test_keys_and_values_are_checked_by_the_ims_limits(
    key: str, value: str, error: str | None
) -> None:
    assert [one_row(key, value, error)] == rows(f"{U1},{key},{value}\n")


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        pytest.param("日本", "値 1", None, id="cjk-and-inner-space"),
        pytest.param("a.b", "x:y@z", None, id="dots-colons-at"),
        pytest.param("a=b", "x", f"key contains '=' {RELAXED}", id="equals"),
        pytest.param("env", "a/b", f"value contains '/' {RELAXED}", id="slash"),
        pytest.param("env", "a\tb", f"value contains U+0009 {RELAXED}", id="control"),
    ],
)  # fmt: skip
def test_the_relaxed_charset_allows_what_some_regions_take(
    key: str, value: str, error: str | None
) -> None:
    relaxed = ims_rules(charset="relaxed")
    assert [one_row(key, value, error)] == rows(f'{U1},"{key}","{value}"\n', relaxed)


def test_the_limits_are_settings() -> None:
    rules = ims_rules(max_key_length=3, max_value_length=2)
    assert [
        Row(1, U1, "abc", "xy"),
        InvalidRow(2, U1, "abcd", "key is 4 characters long (at most 3)", "x"),
        InvalidRow(3, U1, "abc", "value is 3 characters long (at most 2)", "xyz"),
    ] == rows(f"{U1},abc,xy\n{U1},abcd,x\n{U1},abc,xyz\n", rules)


def test_an_unknown_charset_is_refused() -> None:
    with pytest.raises(ValueError, match="charset"):
        ims_rules(charset="anything")


def test_glance_rules_ignore_a_value_column_as_before() -> None:
    """The native input is unchanged: a header's value column is an extra column, and three
    headerless columns are an error."""
    assert [Row(2, U1, "env")] == rows(f"image_id,tag,value\n{U1},env,prod\n", GLANCE_RULES)
    assert [InvalidRow(1, U1, None, "expected 2 columns (image_id,tag), got 3")] == rows(
        f"{U1},env,prod\n", GLANCE_RULES
    )
    with pytest.raises(InputRefused, match="names no tag column"):
        rows(f"image_id,key\n{U2},env\n", GLANCE_RULES)
