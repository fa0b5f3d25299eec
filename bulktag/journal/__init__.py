"""The results journal: one JSON object per line, one line per input row's outcome.

The single owner of the journal's format and file:

* :mod:`~bulktag.journal.format` — the resume keys, rendering a record, and :func:`parse`,
  the one reader of a line (resume, ``report`` and ``verify`` all use it), and
  :func:`error_class`, the one label of a failure (run summary, metrics and report);
* :mod:`~bulktag.journal.index` — :class:`ResumeIndex` and :func:`load_index`: what earlier
  runs settled, and the one settle rule;
* :mod:`~bulktag.journal.file` — the lock, torn-tail repair, block reading, the writer.
"""

from bulktag.journal.file import (
    FileStats,
    JournalError,
    JournalLock,
    JournalReplaced,
    JournalWriter,
    LockHeld,
    not_a_journal,
    prepare,
    read_blocks,
    read_records,
    repair_torn_tail,
    which_is_not_a_journal,
)
from bulktag.journal.format import (
    Record,
    add_key,
    error_class,
    fingerprint_bytes,
    format_time,
    ims_key,
    ims_slot,
    invalid_key,
    pair_key,
    parse,
    render,
    rival_key,
    row_key,
)
from bulktag.journal.index import ResumeIndex, load_index

__all__ = [
    "FileStats",
    "JournalError",
    "JournalLock",
    "JournalReplaced",
    "JournalWriter",
    "LockHeld",
    "Record",
    "ResumeIndex",
    "add_key",
    "error_class",
    "fingerprint_bytes",
    "format_time",
    "ims_key",
    "ims_slot",
    "invalid_key",
    "load_index",
    "not_a_journal",
    "pair_key",
    "parse",
    "prepare",
    "read_blocks",
    "read_records",
    "render",
    "repair_torn_tail",
    "rival_key",
    "row_key",
    "which_is_not_a_journal",
]
