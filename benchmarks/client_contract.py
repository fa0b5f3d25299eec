"""What ``harness.py`` hands every yardstick client (``baseline_client.py``, ``sdk_client.py``):
the same command line and the same CSV, read the same way, so that their figures differ only in
how they send.

Standard library only: ``sdk_client.py`` runs in its own venv, where nothing else of the
project is installed.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Iterator
from pathlib import Path

Pair = tuple[str, str]


def client_parser(description: str) -> argparse.ArgumentParser:
    """The arguments the harness passes every client; each adds its own concurrency flag."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("input", type=Path, help="CSV of image_id,tag")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--token", default="bench-token")
    return parser


def read_pairs(path: Path) -> Iterator[Pair]:
    """The input's (image_id, tag) rows; the header, and any row not two wide, are skipped."""
    with path.open(newline="") as f:
        for row in csv.reader(f):
            if len(row) == 2 and row != ["image_id", "tag"]:
                yield row[0], row[1]
