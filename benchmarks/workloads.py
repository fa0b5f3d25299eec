"""Generate the inputs: CSVs of (image_id, tag) pairs and already-finished journals.

Everything is derived from a seeded ``random.Random``, so a rerun sends the same pairs. Image ids
are random version-4 UUIDs, as Glance issues them; tags are ``t1``, ``t2``, ...

Order: tag-major (every image gets ``t1``, then every image gets ``t2``, ...). An operator
adding a few tags to a fleet produces that shape, and it keeps the comparison with the minimal
client (which has no per-image scheduling) about client overhead rather than about how often two
tags of one image are adjacent.

The 10M-record journal is ~2.5 GB, so lines are built with one f-string each from pre-generated
hex in chunks, and written with ``writelines`` (~1.3 s per million lines here) — no json.dumps.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

CHUNK = 100_000
CSV_HEADER = "image_id,tag\n"
JOURNAL_AT = "2026-11-28T02:00:01.123Z"


def uuid_hexes(rnd: random.Random, count: int) -> Iterator[str]:
    """``count`` random 32-hex-digit strings, generated a chunk at a time."""
    for start in range(0, count, CHUNK):
        n = min(CHUNK, count - start)
        blob = rnd.randbytes(16 * n).hex()
        for i in range(0, 32 * n, 32):
            yield blob[i : i + 32]


def as_uuid4(h: str) -> str:
    """Format 32 hex digits as a canonical version-4, variant-1 UUID string."""
    return f"{h[0:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


def image_ids(seed: int, count: int) -> list[str]:
    rnd = random.Random(seed)
    return [as_uuid4(h) for h in uuid_hexes(rnd, count)]


def pairs(n_pairs: int, tags_per_image: int, seed: int) -> Iterator[tuple[int, str, str]]:
    """``(line, image_id, tag)`` for ``n_pairs`` pairs, tag-major; line 1 is the CSV header."""
    images = image_ids(seed, -(-n_pairs // tags_per_image))
    line = 2
    for t in range(1, tags_per_image + 1):
        for image_id in images:
            if line - 2 >= n_pairs:
                return
            yield line, image_id, f"t{t}"
            line += 1


def write_csv(path: Path, n_pairs: int, tags_per_image: int = 2, seed: int = 1) -> Path:
    with path.open("w", buffering=1 << 20) as f:
        f.write(CSV_HEADER)
        batch: list[str] = []
        for _line, image_id, tag in pairs(n_pairs, tags_per_image, seed):
            batch.append(f"{image_id},{tag}\n")
            if len(batch) >= CHUNK:
                f.writelines(batch)
                batch.clear()
        f.writelines(batch)
    return path


def write_finished_journal(
    journal: Path, csv_path: Path, n_pairs: int, tags_per_image: int = 2, seed: int = 2
) -> None:
    """A journal in which every pair of the CSV written alongside it is already ``ok``.

    Resuming with that CSV sends nothing, so the run measures loading the journal and filtering
    the input against it.
    """
    with journal.open("w", buffering=1 << 20) as j, csv_path.open("w", buffering=1 << 20) as c:
        c.write(CSV_HEADER)
        records: list[str] = []
        rows: list[str] = []
        for line, image_id, tag in pairs(n_pairs, tags_per_image, seed):
            rows.append(f"{image_id},{tag}\n")
            records.append(
                f'{{"line": {line}, "image_id": "{image_id}", "tag": "{tag}", "outcome": "ok", '
                f'"status": 204, "attempts": 1, "error": null, "request_id": "req-{line:032x}", '
                f'"at": "{JOURNAL_AT}", "elapsed_ms": 4}}\n'
            )
            if len(records) >= CHUNK:
                j.writelines(records)
                c.writelines(rows)
                records.clear()
                rows.clear()
        j.writelines(records)
        c.writelines(rows)
