"""The pacing matrix's figures (benchmarks/pacing_matrix.py) say what they claim: a benchmark
that misreads the server's records would judge any pacer wrongly. Pure arithmetic on records
made by hand; nothing here runs a server or measures a time."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from bulktag.fake.serve import add_serve_arguments, config_from_args

# The benchmarks are scripts importing each other by name, not a package. Appended, so none
# of their names shadows anything the other tests import.
sys.path.append(str(Path(__file__).resolve().parent.parent / "benchmarks"))

from pacing_matrix import (
    FULL,
    Client,
    Outcome,
    Put,
    client_shares,
    freed_recovery_s,
    goodput,
    models,
    recovery_s,
    sending_rate,
)


def puts(*times: float, status: int = 204, image: str = "i", tag: str = "t") -> list[Put]:
    return [Put(t, status, f"{image}{n}", tag) for n, t in enumerate(times)]


def test_goodput_against_a_fixed_window_counts_the_windows_the_run_took() -> None:
    """Three a window of 10 s: a client that fills its second window took two windows (its
    pace was the capacity); one that leaves a place free in it and spills one PUT into a third
    took two windows and a third of the third — not three whole windows; one that began late
    in its first window is charged all of it."""
    on_time = puts(0.5, 0.6, 0.7, 10.1, 10.2, 10.3)
    late = puts(0.5, 0.6, 0.7, 10.1, 10.2, 20.3)
    began_late = puts(9.7, 9.8, 9.9, 10.1, 10.2, 10.3)
    window = (10.0, 3)
    assert 0.3 == pytest.approx(goodput([p.t for p in on_time], on_time, window))
    assert 6 / (70 / 3) == pytest.approx(goodput([p.t for p in late], late, window))
    assert 0.3 == pytest.approx(goodput([p.t for p in began_late], began_late, window))
    assert 0.2 == pytest.approx(goodput([p.t for p in late], late, (10.0, 1)))


def test_goodput_elsewhere_is_accepted_per_second_first_to_last_put() -> None:
    sent = [*puts(1.0, 2.0, 3.0), Put(5.0, 503, "x", "t")]
    assert 0.75 == goodput([1.0, 2.0, 3.0], sent, None)


def test_sending_rate_ends_at_the_last_first_attempt_not_at_the_retries_tail() -> None:
    sent = [*puts(0.0, 1.0, 2.0), Put(10.0, 204, "i0", "t")]  # i0 again: a retry
    assert 1.0 == sending_rate(sent)


def test_sending_rate_ends_when_95_percent_of_the_rows_were_sent_not_at_a_straggler() -> None:
    """A row whose first attempt waited behind its image's retries says nothing of the pace:
    100 rows at 10/s, then one more 20 s later."""
    sent = [*puts(*(n / 10 for n in range(100))), Put(30.0, 204, "late", "t")]
    assert 10.0 == pytest.approx(sending_rate(sent), rel=0.02)


def test_recovery_is_the_end_of_the_first_full_second_at_the_asked_rate() -> None:
    accepted = [5.0 + n / 10 for n in range(30)]  # 10/s from 5 s on
    assert 6.0 == pytest.approx(recovery_s(accepted, 0.0, 10, until=8.0))
    assert recovery_s(accepted, 0.0, 11, until=8.0) is None


def test_shares_count_each_client_only_while_both_were_sending() -> None:
    """Client 0 sends alone for 10 s first; the shares cover only the 10 s they overlap."""
    alone = [Put(t / 10, 204, "a", f"t{t}") for t in range(100)]
    both = [Put(10 + t / 20, 204, "ab"[t % 2], f"u{t}") for t in range(200)]
    clients = [_client(("a", "t")), _client(("b", "t"))]
    outcome = Outcome([*alone, *both], set(), clients, [], 0.0)
    shares = client_shares(outcome, capacity=20.0)
    assert [0.5, 0.5] == pytest.approx(shares, abs=0.01)


def test_the_freed_limit_is_timed_from_the_last_request_of_the_client_that_ended_first() -> None:
    """Each sends 10/s until 4.9 s; then b is done, and a, after a second at 10/s, sends 20/s
    from 7 s: its first second holding 80 % of a 20/s capacity is [6.8, 7.8), 2.9 s after
    b's last request. The client that ended first is found by its times, not its place."""
    shared = [Put(t / 10, 204, "ab"[n % 2], f"t{t}") for t in range(50) for n in range(2)]
    alone = [Put(5 + t / 10, 204, "a", f"u{t}") for t in range(10)]
    faster = [Put(7 + t / 20, 204, "a", f"v{t}") for t in range(100)]
    for clients in (
        [_client(("a", "t")), _client(("b", "t"))],
        [_client(("b", "t")), _client(("a", "t"))],
    ):
        outcome = Outcome([*shared, *alone, *faster], set(), clients, [], 0.0)
        back, end = freed_recovery_s(outcome, capacity=20.0)
        assert (2.9, 4.9) == pytest.approx((back, end))


def _client(pair: tuple[str, str]) -> Client:
    return Client(0, 0.0, 1.0, Path("j"), Path("l"), (pair,), crashed=False)


def test_the_simulator_tables_two_run_rows_count_what_they_say(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """benchmarks/pacing_sim_table.py's two-run rows, which the README quotes."""
    from pacing_sim_table import two_rows

    from tests.test_pacing_sim import TwoRuns

    runs = [TwoRuns((0.5, 0.5), 0.01), TwoRuns((0.7, 0.3), 0.2), TwoRuns((0.95, 0.05), 0.02)]
    two_rows("pairs", runs)
    shares, refused = capsys.readouterr().out.splitlines()
    assert shares.endswith("median 30%, 10th percentile 5%, worst 5%, under 35 % in 2, "
                           "under 10 % in 1 of 3")  # fmt: skip
    assert refused.endswith(
        "median 2.0%, 90th percentile 20.0%, worst 20.0%, over 10 % in 1, over 30 % in 0"
    )
    two_rows("floods", [*runs, TwoRuns((0.5, 0.5), 0.31)])
    refused = capsys.readouterr().out.splitlines()[1]
    assert refused.endswith("over 10 % in 2, over 30 % in 1")


def test_every_models_server_is_one_serve_fake_can_be_asked_for() -> None:
    """Each model's server flags (glance_server.py takes serve-fake's) make a fake Glance:
    an operator can rehearse every shape the matrix measures."""
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_serve_arguments(parser)
    for model in models(FULL):
        config = config_from_args(parser.parse_args(list(model.server)))
        assert config.limiter is not None or config.fail_503 or model.capacity is None
