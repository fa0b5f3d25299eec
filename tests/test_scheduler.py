"""The image scheduler on its own: parking, release, and gathering an image's rows into a batch
(in input order, never a key twice, lingering only while the input is at that image)."""

from __future__ import annotations

import contextlib
import random
import time
import tracemalloc
import uuid
from collections import deque
from collections.abc import Iterator

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream
from hypothesis import given, settings
from hypothesis import strategies as st

from bulktag import scheduler as scheduler_module
from bulktag.model import Row
from bulktag.scheduler import ImageScheduler

A = "00000000-0000-0000-0000-00000000000a"
B = "00000000-0000-0000-0000-00000000000b"


def row(line: int, image_id: str = A, key: str | None = None, value: str | None = None) -> Row:
    return Row(line, image_id, key or f"k{line}", value)


async def scheduler_with(rows: list[Row], max_parked: int = 100) -> tuple[ImageScheduler, Row]:
    """A scheduler fed ``rows``; returns it and the first row a worker receives."""
    send, receive = anyio.create_memory_object_stream[Row](10)
    scheduler = ImageScheduler(send, max_parked)
    for item in rows:
        await scheduler.submit(item)
    first = receive.receive_nowait()
    send.close()
    receive.close()
    return scheduler, first


async def test_gather_takes_the_rows_parked_behind_in_input_order_up_to_the_limit() -> None:
    scheduler, first = await scheduler_with([row(n) for n in range(1, 14)])
    assert [1, 2, 3, 4, 5] == [r.line for r in await scheduler.gather(first, 5)]
    assert 8 == scheduler.parked
    assert 6 == (scheduler.release(A) or row(0)).line  # the image stays busy, the chain goes on


async def test_gather_of_one_is_the_row_alone() -> None:
    scheduler, first = await scheduler_with([row(1), row(2)])
    assert [first] == await scheduler.gather(first, 1)
    assert 1 == scheduler.parked


async def test_gather_leaves_other_images_rows_alone() -> None:
    scheduler, first = await scheduler_with([row(1), row(2, B), row(3), row(4, B)])
    assert [1, 3] == [r.line for r in await scheduler.gather(first, 10)]
    assert 1 == scheduler.parked  # B's second row, behind B's first


async def test_a_batch_stops_before_a_key_it_already_holds() -> None:
    rows = [row(1, key="env", value="a"), row(2, key="x"), row(3, key="env", value="b"), row(4)]
    scheduler, first = await scheduler_with(rows)
    assert [1, 2] == [r.line for r in await scheduler.gather(first, 10)]
    assert 3 == (scheduler.release(A) or row(0)).line  # env=b goes next, after env=a


async def test_taking_a_batch_makes_room_for_a_waiting_producer() -> None:
    send, receive = anyio.create_memory_object_stream[Row](10)
    scheduler = ImageScheduler(send, max_parked=2)
    async with anyio.create_task_group() as tg:

        async def produce() -> None:
            for n in range(1, 6):
                await scheduler.submit(row(n))

        tg.start_soon(produce)
        first = await receive.receive()
        await anyio.sleep(0.01)
        assert 2 == scheduler.parked  # full: the producer waits with row 4
        assert [1, 2, 3] == [r.line for r in await scheduler.gather(first, 3)]
        await anyio.sleep(0.01)
        assert 2 == scheduler.parked  # rows 4 and 5 got in
    send.close()
    receive.close()


async def test_a_worker_lingers_for_siblings_while_the_input_is_at_its_image() -> None:
    send, receive = anyio.create_memory_object_stream[Row](10)
    scheduler = ImageScheduler(send, 100)
    async with anyio.create_task_group() as tg:

        async def produce() -> None:
            await scheduler.submit(row(1))
            await anyio.sleep(0.02)  # the next read-ahead chunk is slow to come
            await scheduler.submit(row(2))
            await scheduler.submit(row(3))
            await scheduler.submit(row(4, B))

        tg.start_soon(produce)
        first = await receive.receive()
        batch = await scheduler.gather(first, 10, linger=1.0)
    assert [1, 2, 3] == [r.line for r in batch]
    send.close()
    receive.close()


async def test_no_lingering_once_the_input_moved_on_to_another_image() -> None:
    scheduler, first = await scheduler_with([row(1), row(2), row(3, B)])
    started = time.monotonic()
    assert [1, 2] == [r.line for r in await scheduler.gather(first, 10, linger=5.0)]
    assert time.monotonic() - started < 0.5


async def test_no_lingering_after_the_input_ended() -> None:
    scheduler, first = await scheduler_with([row(1), row(2)])
    scheduler.close()
    started = time.monotonic()
    assert [1, 2] == [r.line for r in await scheduler.gather(first, 10, linger=5.0)]
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize("linger", [0.0, 0.05])
async def test_lingering_ends_after_its_time_with_what_it_has(linger: float) -> None:
    scheduler, first = await scheduler_with([row(1), row(2)])  # still "at" image A, not closed
    started = time.monotonic()
    assert [1, 2] == [r.line for r in await scheduler.gather(first, 10, linger=linger)]
    assert linger <= time.monotonic() - started < linger + 0.5


C = "00000000-0000-0000-0000-00000000000c"


async def test_submit_nowait_dispatches_parks_or_says_it_must_wait() -> None:
    send, receive = anyio.create_memory_object_stream[Row](1)  # room for one ready row
    scheduler = ImageScheduler(send, max_parked=1)
    assert scheduler.submit_nowait(row(1, A))  # A is free: dispatched
    assert scheduler.submit_nowait(row(2, A))  # A is busy: parked (the parking's one place)
    assert not scheduler.submit_nowait(row(3, B))  # the ready stream is full: caller waits
    assert not scheduler.submit_nowait(row(4, A))  # the parking is full: caller waits
    assert 1 == scheduler.parked
    assert 1 == receive.receive_nowait().line
    assert not scheduler.submit_nowait(row(3, B))  # a full parking holds back every row
    assert 2 == (scheduler.release(A) or row(0)).line  # the worker takes A's next row itself
    assert scheduler.submit_nowait(row(3, B))  # room again, B was never marked busy
    assert 3 == receive.receive_nowait().line
    assert scheduler.release(A) is None  # A's chain is done: A is free again
    assert scheduler.submit_nowait(row(5, A))
    assert 5 == receive.receive_nowait().line
    send.close()
    receive.close()


async def test_submit_waits_for_room_in_the_ready_stream_then_dispatches() -> None:
    send, receive = anyio.create_memory_object_stream[Row](1)
    scheduler = ImageScheduler(send, max_parked=10)
    await scheduler.submit(row(1, A))
    async with anyio.create_task_group() as group:
        group.start_soon(scheduler.submit, row(2, B))  # blocks: the stream holds row 1
        await anyio.sleep(0.01)
        assert 1 == receive.receive_nowait().line
    assert 2 == receive.receive_nowait().line
    assert scheduler.release(B) is None
    send.close()
    receive.close()


# ── the read-ahead window (batching) ─────────────────────────────────────────────────────


def windowed(read_ahead: int) -> tuple[ImageScheduler, MemoryObjectReceiveStream[str]]:
    send, receive = anyio.create_memory_object_stream[str](read_ahead)
    return ImageScheduler(send, max_parked=2, read_ahead=read_ahead), receive


async def test_the_window_counts_rows_queued_for_a_worker_with_the_parked_ones() -> None:
    scheduler, receive = windowed(read_ahead=3)
    assert scheduler.submit_nowait(row(1, A))  # queued for a worker
    assert scheduler.submit_nowait(row(2, B))  # queued
    assert scheduler.submit_nowait(row(3, A))  # parked: past max_parked's 2 would not matter
    assert 3 == scheduler.held
    assert not scheduler.submit_nowait(row(4, C))  # the window is full, queued rows included
    assert 1 == scheduler.taken(receive.receive_nowait()).line  # no longer waits in the window
    assert scheduler.submit_nowait(row(4, C))
    receive.close()


async def test_a_full_window_holds_the_producer_until_a_worker_takes_a_row() -> None:
    scheduler, receive = windowed(read_ahead=2)
    async with anyio.create_task_group() as group:

        async def produce() -> None:
            for n, image_id in enumerate([A, B, C], 1):
                await scheduler.submit(row(n, image_id))

        group.start_soon(produce)
        await anyio.sleep(0.01)
        assert 2 == scheduler.held  # C waits
        scheduler.taken(receive.receive_nowait())
        await anyio.sleep(0.01)
    assert 2 == scheduler.held  # C got in
    receive.close()


async def test_a_batch_takes_just_before_sending_the_rows_that_arrived_after_it_was_gathered() -> (
    None
):
    scheduler, receive = windowed(read_ahead=100)
    await scheduler.submit(row(1, A, key="env", value="a"))
    first = scheduler.taken(receive.receive_nowait())
    batch = await scheduler.gather(first, 10)
    assert [1] == [r.line for r in batch]
    for item in [row(2, B), row(3, A), row(4, A, key="env", value="b"), row(5, A)]:
        await scheduler.submit(item)
    scheduler.top_up(batch, 10)
    assert [1, 3] == [r.line for r in batch]  # env=b waits for the next request, and 5 after it
    assert 4 == (scheduler.release(A) or row(0)).line
    receive.close()


async def test_top_up_stops_at_the_limit() -> None:
    scheduler, receive = windowed(read_ahead=100)
    for n in range(1, 8):
        await scheduler.submit(row(n, A))
    batch = [scheduler.taken(receive.receive_nowait())]
    scheduler.top_up(batch, 3)
    assert [1, 2, 3] == [r.line for r in batch]
    assert 4 == scheduler.held  # rows 4-7 still parked
    receive.close()


async def test_held_rows_share_their_keys_values_and_image_id() -> None:
    scheduler, receive = windowed(read_ahead=100)
    for image_id in [A, B, B, B]:  # strings built apart, as the CSV reader builds them
        key, value = "".join(["en", "v"]), "".join(["pr", "od"])
        await scheduler.submit(Row(1, "".join(image_id), key, value))
        await scheduler.submit(Row(2, "".join(image_id), f"k{len(key)}", f"v{len(value)}"))
    held = [scheduler.taken(receive.receive_nowait()) for _ in range(2)]
    held += [r for r in (scheduler.release(A), scheduler.release(B), scheduler.release(B)) if r]
    assert 5 == len(held)
    assert 1 == len({id(r.tag) for r in held if r.tag == "env"})
    assert 1 == len({id(r.value) for r in held if r.value == "prod"})
    assert 1 == len({id(r.tag) for r in held if r.tag == "k3"})
    assert 1 == len({id(r.image_id) for r in held[3:]})  # B's parked rows share one id
    receive.close()


async def test_without_read_ahead_the_ready_stream_bounds_the_producer_as_before() -> None:
    """Glance (no batching): rows queued for a worker are not held in a window."""
    send, receive = anyio.create_memory_object_stream[Row](1)
    scheduler = ImageScheduler(send, max_parked=10)
    assert scheduler.submit_nowait(row(1, A))
    assert not scheduler.submit_nowait(row(2, B))  # the pool-deep stream is full
    assert 0 == scheduler.held  # queued rows are not counted
    assert 1 == receive.receive_nowait().line
    send.close()
    receive.close()


def keyed_rows(images: list[str], max_size: int) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Rows as (image id, key) pairs over a few images and four keys: images come back, and
    so do an image's keys."""
    return st.lists(st.tuples(st.sampled_from(images), st.sampled_from("wxyz")), max_size=max_size)


SEEDS = st.integers(0, 2**32)  # of the random.Random that picks the moves


@settings(max_examples=150, deadline=None)
@given(
    rows=keyed_rows([A, B, C], max_size=60),
    read_ahead=st.integers(1, 12),
    limit=st.integers(1, 4),
    seed=SEEDS,
)
async def test_any_interleaving_sends_every_row_once_in_key_order_within_the_window(
    rows: list[tuple[str, str]], read_ahead: int, limit: int, seed: int
) -> None:
    """Producer and workers interleaved at random: every row goes in exactly one batch of one
    image, at most ``limit`` rows and never a key twice; one image's rows of one key go in
    input order (the later value last); never more than ``read_ahead`` rows held."""
    rng = random.Random(seed)
    send, receive = anyio.create_memory_object_stream[str](read_ahead)
    scheduler = ImageScheduler(send, max_parked=2, read_ahead=read_ahead)
    pending = deque(Row(n, image_id, key, f"v{n}") for n, (image_id, key) in enumerate(rows))
    working: dict[str, list[Row]] = {}  # image → the batch a worker holds for it
    sent: list[list[Row]] = []
    steps = 0
    while pending or working or scheduler.held:
        steps += 1
        assert steps < 20_000, "stuck: rows left that no move can take"
        move = rng.random()
        if pending and move < 0.4 and scheduler.submit_nowait(pending[0]):
            pending.popleft()
        elif move < 0.7 and (item := _receive(receive)) is not None:
            first = scheduler.taken(item)
            assert first.image_id not in working  # never two requests for one image
            working[first.image_id] = await scheduler.gather(first, limit)
        elif working:
            image_id = rng.choice(sorted(working))
            batch = working.pop(image_id)
            scheduler.top_up(batch, limit)  # its turn came: it goes now
            sent.append(batch)
            if (following := scheduler.release(image_id)) is not None:
                working[image_id] = await scheduler.gather(following, limit)
        assert scheduler.held <= read_ahead
    assert sorted(r.line for batch in sent for r in batch) == list(range(len(rows)))
    for batch in sent:
        assert 1 <= len(batch) <= limit
        assert 1 == len({r.image_id for r in batch})
        assert len(batch) == len({r.tag for r in batch})
    order = [r for batch in sent for r in batch]
    for image_id, key in set(rows):
        lines = [r.line for r in order if (r.image_id, r.tag) == (image_id, key)]
        assert sorted(lines) == lines
    send.close()
    receive.close()


def _receive(stream: MemoryObjectReceiveStream[str]) -> str | None:
    try:
        return stream.receive_nowait()
    except anyio.WouldBlock:
        return None


# ── how the window holds its rows (scheduler._pack) ──────────────────────────────────────


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 2**40),
            st.sampled_from([A, B, C]),
            st.text(max_size=4),
            st.none() | st.text(max_size=4),
        ),
        max_size=40,
    ),
    shared=st.integers(0, 6),
)
def test_a_held_row_comes_out_of_the_window_as_it_went_in(
    rows: list[tuple[int, str, str, str | None]], shared: int
) -> None:
    """Packed in an int, or as a tuple once the table of shared strings is full: the same."""
    send, receive = anyio.create_memory_object_stream[str](1)
    with _shared_table(shared):
        scheduler = ImageScheduler(send, max_parked=2, read_ahead=1)
        for line, image_id, key, value in rows:
            given_row = Row(line, image_id, key, value)
            assert given_row == scheduler._unpack(image_id, scheduler._pack(given_row))
    assert len(scheduler._texts) <= shared + 1
    send.close()
    receive.close()


# Ids the window does not hold as an int (scheduler._held_as): an upper-case UUID, a non-UUID.
UPPER, OTHER = "00000000-0000-0000-0000-00000000000D", "image-d"


@settings(max_examples=100, deadline=None)
@given(
    rows=keyed_rows([A, B, C, UPPER, OTHER], max_size=40),
    limit=st.integers(2, 4),
    shared=st.integers(0, 3),
    seed=SEEDS,
)
async def test_the_compact_window_sends_what_rows_held_as_they_are_would(
    rows: list[tuple[str, str]], limit: int, shared: int, seed: int
) -> None:
    """The same moves, on a windowed scheduler (rows packed, or as tuples past a small table)
    and on one without a window (rows parked as they are): the same batches, row for row."""
    with _shared_table(shared):
        windowed_batches = await _drive(rows, limit, seed, read_ahead=len(rows) + 1)
    plain_batches = await _drive(rows, limit, seed, read_ahead=0)
    assert plain_batches == windowed_batches


@given(st.uuids() | st.text(max_size=40))
def test_the_window_keys_an_image_by_an_int_only_for_a_lowercase_uuid(image: object) -> None:
    image_id = str(image)
    key = scheduler_module._held_as(image_id)
    assert scheduler_module._image_of(key) == image_id
    assert isinstance(key, int) == isinstance(image, uuid.UUID)
    if image_id.upper() != image_id:  # the same image for the service, another id here
        assert scheduler_module._held_as(image_id.upper()) == image_id.upper()


@contextlib.contextmanager
def _shared_table(size: int) -> Iterator[None]:
    """The window's table of shared strings cut to ``size`` (past it, rows are tuples)."""
    saved = scheduler_module._MAX_SHARED
    scheduler_module._MAX_SHARED = size
    try:
        yield
    finally:
        scheduler_module._MAX_SHARED = saved


async def _drive(
    rows: list[tuple[str, str]], limit: int, seed: int, read_ahead: int
) -> list[list[Row]]:
    """Feed every row, then serve images in an order drawn from ``seed``; the batches sent."""
    rng = random.Random(seed)
    send, receive = anyio.create_memory_object_stream[object](len(rows) + 1)
    scheduler = ImageScheduler(send, max_parked=len(rows) + 1, read_ahead=read_ahead)  # type: ignore[arg-type]
    for n, (image_id, key) in enumerate(rows):
        assert scheduler.submit_nowait(Row(n, image_id, key, f"v{n % 3}"))
    working: dict[str, list[Row]] = {}
    sent: list[list[Row]] = []
    while (item := _receive(receive)) is not None:  # type: ignore[arg-type]
        first = scheduler.taken(item)
        working[first.image_id] = await scheduler.gather(first, limit)
    while working:
        image_id = rng.choice(sorted(working))
        batch = working.pop(image_id)
        scheduler.top_up(batch, limit)
        sent.append(batch)
        if (following := scheduler.release(image_id)) is not None:
            working[image_id] = await scheduler.gather(following, limit)
    send.close()
    receive.close()
    return sent


def test_a_long_shuffled_input_holds_at_most_the_window_in_memory() -> None:
    """60,000 rows of 12,000 images × 5 keys, shuffled, through a 4,000-row window while
    workers take and settle batches at random: the rows held never pass the window, and the
    scheduler's memory (tracemalloc: every allocation, not the RSS of a shared machine) stays
    within ~250 bytes a held row (measured ~105 with 36-character UUIDs, tables included) — it
    does not grow with the input (what is left at the end is no row, and the empty tables of
    the HeldMap and the queue's array, ~260 KiB here, ~0.65 of the peak)."""
    read_ahead, images, keys = 4_000, 12_000, 5
    pairs = [(n, k) for n in range(images) for k in range(keys)]
    random.Random(7).shuffle(pairs)
    ids = [f"{n:08x}-0000-0000-0000-000000000000" for n in range(images)]

    async def main() -> tuple[int, int]:
        rng = random.Random(3)
        send, receive = anyio.create_memory_object_stream[str](read_ahead)
        scheduler = ImageScheduler(send, max_parked=2, read_ahead=read_ahead)
        working: dict[str, list[Row]] = {}
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            peak = 0
            position = 0
            while position < len(pairs) or working or scheduler.held:
                if position < len(pairs) and rng.random() < 0.6:
                    n, k = pairs[position]
                    # fresh strings, as the CSV reader makes them
                    fresh = Row(position + 10**6, "".join(ids[n]), f"key{k}", f"value{k}")
                    if scheduler.submit_nowait(fresh):
                        position += 1
                elif len(working) < 64 and (item := _receive(receive)) is not None:
                    first = scheduler.taken(item)
                    working[first.image_id] = await scheduler.gather(first, 10)
                elif working:
                    image_id = next(iter(working))
                    batch = working.pop(image_id)
                    scheduler.top_up(batch, 10)
                    if (following := scheduler.release(image_id)) is not None:
                        working[image_id] = await scheduler.gather(following, 10)
                assert scheduler.held <= read_ahead
                if position % 512 == 0:
                    peak = max(peak, tracemalloc.get_traced_memory()[0] - base)
            assert 0 == len(scheduler._held)  # no image held
            return peak, tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
            send.close()
            receive.close()

    peak, left = anyio.run(main)
    assert peak <= 250 * read_ahead + 256 * 1024, peak  # + the shared strings, the batches
    assert left < peak * 0.75  # no row held once every row is settled: the tables only
