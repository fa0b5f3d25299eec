"""Problems of the whole input are refused up front with one line saying what is wrong and how
to fix it — never a garbled invalid row a line, and never a wrong column taken for the tag —
and ``--tag`` turns a list of image ids (``openstack image list -f value -c ID``) into rows."""

from __future__ import annotations

import codecs
import gzip
import random

import pytest
from support import U1, U2
from support import read_both_ways as rows

from bulktag.model import InvalidRow, Row
from bulktag.source import (
    GLANCE_RULES,
    ConstantTag,
    InputRefused,
    TagRules,
    constant_tag,
    ims_rules,
)

GOLD = ConstantTag("gold")


TEXT = f"image_id,tag\n{U1},gold\n{U2},silver\n"


@pytest.mark.parametrize(
    ("data", "says"),
    [
        pytest.param(codecs.BOM_UTF16_LE + TEXT.encode("utf-16-le"), "UTF-16",
                     id="utf16-le-with-bom"),
        pytest.param(codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be"), "UTF-16",
                     id="utf16-be-with-bom"),
        pytest.param(TEXT.encode("utf-16-le"), "UTF-16", id="utf16-le-without-bom"),
        pytest.param(TEXT.encode("utf-16-be"), "UTF-16", id="utf16-be-without-bom"),
        pytest.param(codecs.BOM_UTF32_LE + TEXT.encode("utf-32-le"), "UTF-16 or UTF-32",
                     id="utf32-with-bom"),
        pytest.param(gzip.compress(TEXT.encode()), "gzip", id="gzip"),
        pytest.param(random.Random(15).randbytes(4096), "not text", id="random-bytes"),
        pytest.param(b"# exported\n" + bytes(range(1, 32)) * 3 + b"\n" + TEXT.encode(),
                     "not text", id="control-characters-before-the-first-row"),
    ],
)  # fmt: skip
def test_an_input_that_is_not_utf8_text_is_refused(data: bytes, says: str) -> None:
    with pytest.raises(InputRefused, match=says):
        rows(data)


@pytest.mark.parametrize(
    ("header", "says"),
    [
        pytest.param("image id,tag", "rename 'image id' to image_id", id="image-space-id"),
        pytest.param("ImageID,tag", "rename 'ImageID' to image_id", id="imageid"),
        pytest.param("uuid,tag", "rename 'uuid' to image_id", id="uuid"),
        pytest.param("name,tag", "names no image id column", id="no-id-column"),
        pytest.param('"ID","Name"', "names no tag column", id="openstack-csv-id-name"),
        pytest.param("image_id,name,owner", "names no tag column", id="no-tag-column"),
        pytest.param("image_id,tags", "names no tag column", id="tags-plural"),
        pytest.param("ID", "give the tag with --tag", id="one-column-header"),
        pytest.param("image_id,key", "names no tag column", id="key-without-ims"),
    ],
)
def test_a_header_bulktag_does_not_know_is_refused(header: str, says: str) -> None:
    """Above all: never read ``ID,Name`` as data and send the image's name as its tag."""
    with pytest.raises(InputRefused, match=says):
        rows(f"{header}\n{U1},web-server-01\n".encode())


def test_the_openstack_cli_id_column_is_an_image_id_column() -> None:
    data = f'"ID","Tag","Name"\n"{U1}","gold","web"\n'.encode()
    assert [Row(2, U1, "gold")] == rows(data)


@pytest.mark.parametrize(
    "data",
    [f"{U1}\n{U2}\n", f"# ids\n\n{U1}\n", f'"{U1}"\n'],
    ids=["ids", "comment-then-ids", "quoted-id"],
)
def test_a_one_column_input_without_tag_is_refused(data: str) -> None:
    with pytest.raises(InputRefused, match=r"one column .* --tag TAG"):
        rows(data.encode())


@pytest.mark.parametrize(
    ("separator", "name", "convert"),
    [
        pytest.param("\t", "tabs", "tr '\\t' ','", id="tsv"),
        pytest.param(";", "semicolons", "tr ';' ','", id="semicolons"),  # lists in many locales
        pytest.param("|", "bars", "tr '|' ','", id="bars"),
        pytest.param(" ", "spaces", "tr ' ' ','", id="spaces"),  # -f value -c ID -c Name
    ],
)
@pytest.mark.parametrize("header", [True, False], ids=["header", "no-header"])
def test_rows_split_by_something_else_than_commas_are_refused_saying_so(
    separator: str, name: str, convert: str, header: bool
) -> None:
    """Told only "one column and no tag: give the tag with --tag", an operator with a TSV
    file would do so, and every image would get one tag, its name column unread."""
    text = f"{U1}{separator}gold\n{U2}{separator}silver\n"
    if header:
        text = f"image_id{separator}tag\n{text}"
    with pytest.raises(InputRefused) as refused:
        rows(text.encode())
    message = str(refused.value)
    assert f"look separated by {name}, and bulktag reads commas" in message
    assert convert in message
    assert "--tag" not in message


@pytest.mark.parametrize("field", ["image\x1b[2J_id", "image_id\x9b1m", "image\x00id"])
def test_a_control_character_quoted_from_the_input_is_shown_escaped(field: str) -> None:
    """An input's bytes quoted in an error reach the operator's terminal: ESC (or C1's CSI)
    from a file would be a terminal's command there, a NUL invisible."""
    with pytest.raises(InputRefused) as refused:
        rows(f"{field},name\n{U1},web\n".encode())
    message = str(refused.value)
    assert not any(ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 for char in message)
    escaped = field.encode("ascii", "backslashreplace").decode()  # C1 as \x9b, like ours
    escaped = escaped.replace("\x1b", "\\x1b").replace("\x00", "\\x00")
    assert escaped in message, message


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(f"{U1},ta".encode() + b"\xffg\n" + f"{U2},gold\n".encode(), id="a-bad-byte"),
        pytest.param(f"{U1},a\x00b\n{U2},gold\n".encode(), id="a-nul-in-a-row"),
        pytest.param(f"img-1,gold\n{U2},gold\n".encode(), id="a-first-row-without-a-uuid"),
        pytest.param(f"{U1},gold,x\n{U2},gold\n".encode(), id="a-first-row-three-wide"),
        pytest.param(b"x" * 500 + f",gold\n{U2},gold\n".encode(), id="a-long-bad-first-id"),
    ],
)
def test_a_problem_of_one_row_stays_that_rows(data: bytes) -> None:
    parsed = rows(data)
    assert isinstance(parsed[0], InvalidRow)
    assert Row(2, U2, "gold") == parsed[1]


# -- --tag: a list of image ids --------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(f"{U1}\n{U2.upper()}\n", id="openstack-value-format"),
        pytest.param(f'"ID"\n"{U1}"\n"{U2}"\n', id="openstack-csv-format-c-id"),
        pytest.param(f"image_id\n{U1}\n{U2}\n", id="image-id-header"),
        pytest.param(f"  {U1} \r\n\r\n{U2}\r\n", id="spaces-crlf-blank-lines"),
    ],
)
def test_with_tag_each_id_gets_the_tag(data: str) -> None:
    parsed = rows(data.encode(), constant=GOLD)
    assert [(U1, "gold"), (U2, "gold")] == [(r.image_id, r.tag) for r in parsed]
    assert all(isinstance(r, Row) for r in parsed)


def test_with_tag_a_bad_id_or_a_wider_row_later_is_that_rows_problem() -> None:
    parsed = rows(f"{U1}\nnot-an-id\n{U2},other\n{U2}\n".encode(), constant=GOLD)
    assert [
        Row(1, U1, "gold"),
        InvalidRow(2, "not-an-id", "gold", "image_id is not a UUID: 'not-an-id'"),
        InvalidRow(3, U2, None, "expected 1 column (an image id; the tag is --tag's), got 2"),
        Row(4, U2, "gold"),
    ] == parsed


@pytest.mark.parametrize(
    ("data", "says"),
    [
        pytest.param(f"{U1},web-01\n", "one image id a line, but line 1 has 2 columns",
                     id="id-and-name"),
        pytest.param(f"ID,Name\n{U1},web-01\n", "names more columns", id="header-id-name"),
        pytest.param(f"image_id,tag\n{U1},x\n", "names more columns", id="header-with-tag"),
    ],
)  # fmt: skip
def test_with_tag_an_input_of_more_columns_is_refused(data: str, says: str) -> None:
    with pytest.raises(InputRefused, match=says):
        rows(data.encode(), constant=GOLD)


def test_with_tag_and_ims_rules_a_key_and_value() -> None:
    rules = ims_rules()
    tag = constant_tag("env=prod-1.2", rules)
    assert ConstantTag("env", "prod-1.2") == tag
    assert [Row(1, U1, "env", "prod-1.2")] == rows(f"{U1}\n".encode(), rules, tag)
    assert ConstantTag("env", None) == constant_tag("env", rules)


@pytest.mark.parametrize(
    ("text", "rules", "says"),
    [
        pytest.param("night ly", GLANCE_RULES, "tag contains U\\+0020", id="space"),
        pytest.param("env=prod", GLANCE_RULES, "tag contains '='", id="key-value-on-glance"),
        pytest.param("", GLANCE_RULES, "tag is empty", id="empty"),
        pytest.param("env=a/b", ims_rules(), "value contains '/'", id="bad-ims-value"),
        pytest.param("k" * 37, ims_rules(), "key is 37 characters", id="long-ims-key"),
    ],
)
def test_a_bad_tag_is_refused_with_the_reason(text: str, rules: TagRules, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        constant_tag(text, rules)


def test_latin1_text_before_the_first_row_is_not_taken_for_binary() -> None:
    """A short comment in Latin-1 (two bytes that are not UTF-8 in 16 characters) is not a
    reason to refuse the input: only the rows can say whether it is usable."""
    data = "# Résumé du lot\n".encode("latin-1") + f"{U1},gold\n".encode()
    assert [Row(2, U1, "gold")] == rows(data)
