"""The missed-night alert can go quiet on a real inventory, and shards' metrics do not collide.

An image deleted since the inventory was made answers 404: its row is ``failed`` for good, and
every later night skips it but still exits 1, so ``bulktag_last_success_timestamp_seconds``
never advanced and the documented "missed night" alert fired forever. With
``--accept-earlier-failures`` (``accept_earlier_failures = true``) a failure already reported
on an earlier night counts as done; a new failure still exits 1.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from clitools import fake_glance, run_bulktag
from prometheus_client.parser import text_string_to_metric_families
from support import make_pairs, write_csv

from bulktag.errors import ExitCode
from bulktag.metrics import LAST_SUCCESS
from bulktag.model import Outcome
from bulktag.summary import Tally, exit_code


def _tally(failed_now: int = 0, invalid_now: int = 0, earlier: int = 0) -> Tally:
    tally = Tally(skipped_still_bad=earlier)
    tally.outcomes.update({Outcome.OK: 5, Outcome.FAILED: failed_now, Outcome.INVALID: invalid_now})
    return tally


# (failed now, invalid now, failed or invalid on an earlier night) → (default, accepting)
POLICY = {
    "all-ok": ((0, 0, 0), (ExitCode.OK, ExitCode.OK)),
    "only-earlier-failures": ((0, 0, 3), (ExitCode.SOME_FAILED, ExitCode.OK)),
    "a-new-failure": ((1, 0, 3), (ExitCode.SOME_FAILED, ExitCode.SOME_FAILED)),
    "a-new-invalid-row": ((0, 1, 3), (ExitCode.SOME_FAILED, ExitCode.SOME_FAILED)),
}


@pytest.mark.parametrize("name", list(POLICY))
def test_earlier_failures_count_as_done_only_when_accepted(name: str) -> None:
    counts, (default, accepting) = POLICY[name]
    assert default == exit_code(_tally(*counts), False, False)
    assert accepting == exit_code(_tally(*counts), False, False, accept_earlier_failures=True)


def _samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def _names(path: Path) -> set[str]:
    return {name for name, _ in _samples(path)}


def test_a_gone_image_no_longer_holds_back_last_success(tmp_path: Path) -> None:
    inventory = write_csv(tmp_path / "in.csv", make_pairs(images=6, tags_per_image=1))
    metrics = tmp_path / "bulktag.prom"
    args = [str(inventory), "--rate", "500", "--metrics-file", str(metrics)]
    with fake_glance(tmp_path, "--unknown-every", "3") as fake:  # 2 of 6 images are gone
        args += ["--endpoint", fake.url]
        first = run_bulktag(args, tmp_path)
        assert 1 == first.code, first  # the night the 404s happen: reported
        assert LAST_SUCCESS not in _names(metrics)
        assert 1 == _samples(metrics)[("bulktag_exit_code", ())]
        second = run_bulktag(args, tmp_path)
        assert 1 == second.code, second  # by default a settled failure keeps failing the night
        assert LAST_SUCCESS not in _names(metrics)
        third = run_bulktag([*args, "--accept-earlier-failures"], tmp_path)
    assert 0 == third.code, third
    samples = _samples(metrics)
    assert LAST_SUCCESS in _names(metrics)
    assert 0 == samples[("bulktag_exit_code", ())]
    assert 2 == samples[("bulktag_skipped_rows_total", (("reason", "earlier_failure"),))]


def test_an_offline_dry_run_applies_the_same_policy(tmp_path: Path) -> None:
    inventory = write_csv(tmp_path / "in.csv", make_pairs(images=6, tags_per_image=1))
    with fake_glance(tmp_path, "--unknown-every", "3") as fake:
        assert 1 == run_bulktag([str(inventory), "--endpoint", fake.url], tmp_path).code
    dry = [str(inventory), "--dry-run"]
    assert 1 == run_bulktag(dry, tmp_path).code
    assert 0 == run_bulktag([*dry, "--accept-earlier-failures"], tmp_path).code


def test_four_shards_on_one_node_write_samples_that_do_not_collide(tmp_path: Path) -> None:
    """node_exporter's textfile collector refuses a sample (name + labels) found in two files:
    every shard's samples carry its shard label, and no two files share one."""
    inventory = write_csv(tmp_path / "in.csv", make_pairs(images=12, tags_per_image=1))
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
    with fake_glance(tmp_path) as fake:
        for index in range(4):
            prom = tmp_path / f"bulktag-{index}.prom"
            done = run_bulktag(
                [
                    str(inventory),
                    *("--endpoint", fake.url, "--rate", "500", "--shard", f"{index}/4"),
                    *("--results", f"journal-{index}.jsonl", "--metrics-file", str(prom)),
                ],
                tmp_path,
            )
            assert 0 == done.code, done
            for key in _samples(prom):
                assert ("shard", f"{index}/4") in key[1], key
                assert key not in seen, f"{key} in {prom.name} and {seen.get(key)}"
                seen[key] = prom.name


def test_the_exit_code_metric_appears_only_once_the_run_finished(tmp_path: Path) -> None:
    from bulktag.metrics import MetricsWriter

    path = tmp_path / "bulktag.prom"
    writer = MetricsWriter(path, labels={"shard": "2/4"})
    running = writer.snapshot(
        Tally(), allowed_rate=1.0, elapsed=1.0, finished=False, succeeded=False
    )
    writer.write(running)
    assert "bulktag_exit_code" not in _names(path)
    finished = writer.snapshot(
        Tally(), allowed_rate=1.0, elapsed=2.0, finished=True, succeeded=False, exit_code=4
    )
    writer.write(finished)
    assert 4 == _samples(path)[("bulktag_exit_code", (("shard", "2/4"),))]
