"""The latest settled operation on a slot decides what resume skips, under both APIs.

A Glance pair (image, tag) and an IMS key (image, key) are slots; adding and removing are work
on the same slot. Only the latest ``ok`` work on a slot is done: after add, remove, a third
run's add must be sent again (the image no longer has the tag). The rule is one function,
``ResumeIndex.settle``; the resume fast lanes are checked against it in test_journal.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support import AT, U1, image_ids, read_journal

from bulktag.admission import Admission, Decision
from bulktag.journal import ResumeIndex, load_index, render, row_key
from bulktag.model import Api, Op, Outcome, Result, Row
from bulktag.summary import Tally
from tests.clitools import fake_glance, no_traceback, run_bulktag

PROJECT = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
TAGS = {"glance": ["gold", 'quo"te'], "ims": ["env"]}  # an escaped tag takes the careful path


def journal_of(api: str, tag: str, ops: list[tuple[str, Outcome]]) -> list[bytes]:
    value = "prod" if api == "ims" else None
    return [
        render(Result(n, U1, tag, outcome, at=AT, op=op,
                      value=value if op == "add" else None, api=api))
        for n, (op, outcome) in enumerate(ops, 1)
    ]  # fmt: skip


def key_of(api: str, tag: str, op: str) -> int:
    value = "prod" if api == "ims" and op == "add" else None
    return row_key(U1, tag, op, value, api)


OK, FAILED, GAVE_UP = Outcome.OK, Outcome.FAILED, Outcome.GAVE_UP

# (earlier runs' records, the ops whose work is then done)
SEQUENCES = [
    pytest.param([("add", OK)], {"add"}, id="add"),
    pytest.param([("add", OK), ("add", OK)], {"add"}, id="add-add"),
    pytest.param([("add", OK), ("remove", OK)], {"remove"}, id="add-remove"),
    pytest.param([("add", OK), ("remove", OK), ("add", OK)], {"add"}, id="add-remove-add"),
    pytest.param([("remove", OK)], {"remove"}, id="remove"),
    pytest.param([("remove", OK), ("add", OK)], {"add"}, id="remove-add"),
    pytest.param([("remove", OK), ("add", OK), ("remove", OK)], {"remove"},
                 id="remove-add-remove"),
    pytest.param([("add", OK), ("remove", FAILED)], {"add"}, id="add-then-remove-failed"),
    pytest.param([("add", OK), ("remove", GAVE_UP)], {"add"}, id="add-then-remove-gave-up"),
]  # fmt: skip


@pytest.mark.parametrize(("api", "tag"), [(a, t) for a, tags in TAGS.items() for t in tags])
@pytest.mark.parametrize(("ops", "done"), SEQUENCES)
def test_only_the_latest_ok_operation_on_a_slot_is_done(
    api: str, tag: str, ops: list[tuple[str, Outcome]], done: set[str]
) -> None:
    lines = journal_of(api, tag, ops)
    for index in (load_index(lines), load_index([b"".join(lines)])):  # by line and by block
        assert done == {op for op in ("add", "remove") if key_of(api, tag, op) in index.done}


@pytest.mark.parametrize("api", ["glance", "ims"])
@pytest.mark.parametrize(
    ("ops", "next_op", "expected"),
    [
        pytest.param([("add", OK), ("remove", OK)], "add", Decision.SEND, id="add-remove-add"),
        pytest.param([("remove", OK)], "add", Decision.SEND, id="remove-add"),
        pytest.param([("add", OK)], "add", Decision.SKIP, id="add-add"),
        pytest.param([("remove", OK), ("add", OK)], "remove", Decision.SEND,
                     id="remove-add-remove"),
    ],
)  # fmt: skip
def test_the_next_run_sends_work_a_later_operation_undid(
    api: str, ops: list[tuple[str, Outcome]], next_op: str, expected: Decision
) -> None:
    tag = TAGS[api][0]
    index = load_index(journal_of(api, tag, ops))
    admission = Admission(index, Tally(), op=Op(next_op), api=Api(api))
    value = "prod" if api == "ims" and next_op == "add" else None
    assert expected == admission.decide(Row(1, U1, tag, value))


def test_a_plain_add_block_after_a_remove_displaces_it() -> None:
    """The whole-block fast lane (a block of plain ok adds) applies the rule too."""
    remove = journal_of("glance", "gold", [("remove", OK)])
    adds = journal_of("glance", "gold", [("add", OK)]) * 3
    index = load_index([*remove, b"".join(adds)])
    assert key_of("glance", "gold", "add") in index.done
    assert key_of("glance", "gold", "remove") not in index.done
    assert ResumeIndex.empty().rivals is False


# -- end to end: three nightly runs on one journal ---------------------------------------------


def _args(api: str, server_url: str, tmp_path: Path, inventory: Path, op: str) -> list[str]:
    extra = ["--api", "ims", "--project-id", PROJECT] if api == "ims" else []
    return [str(inventory), "--endpoint", server_url, "--results",
            str(tmp_path / "journal.jsonl"), "--op", op, *extra]  # fmt: skip


@pytest.mark.parametrize("api", ["glance", "ims"])
def test_add_remove_add_on_one_journal_leaves_the_tag_on_the_image(
    tmp_path: Path, api: str
) -> None:
    images = image_ids(3)
    inventory = tmp_path / "in.csv"
    if api == "ims":
        inventory.write_text("image_id,key,value\n" + "".join(f"{i},env,prod\n" for i in images))
        flags: tuple[str, ...] = ("--api", "ims", "--project-id", PROJECT)
    else:
        inventory.write_text("image_id,tag\n" + "".join(f"{i},gold\n" for i in images))
        flags = ()
    with fake_glance(tmp_path, *flags) as server:
        for op in ("add", "remove", "add"):
            done = run_bulktag(_args(api, server.url, tmp_path, inventory, op), tmp_path)
            no_traceback(done)
            assert 0 == done.code, done
        if api == "ims":
            held = {i: server.ims_tags(PROJECT, i).get("env") for i in images}
            assert dict.fromkeys(images, "prod") == held
        else:
            assert {i: ["gold"] for i in images} == {i: server.image(i)["tags"] for i in images}
    records = read_journal(tmp_path / "journal.jsonl")
    assert 9 == len(records)  # every run did its three rows: none was skipped as done
