"""Which input rows a run sends: the resume filter, duplicates, shards. Pure.

Shared by the engine and by ``--dry-run``, so a dry run reports exactly what a run would send.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from itertools import compress
from operator import not_
from typing import cast

from bulktag.journal import ResumeIndex, add_key, ims_slot, invalid_key, row_key
from bulktag.keyset import KeyMap, KeySet, kept
from bulktag.model import Api, InvalidRow, Op, Row
from bulktag.summary import Tally


@dataclass(frozen=True, slots=True)
class Shard:
    """``--shard K/N``: this process handles the images that hash to K (0 ≤ K < N).

    The hash is of the image id alone, so every tag of one image lands in the same shard — the
    shards can run at the same time without ever overlapping on an image.
    """

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        try:
            index_text, count_text = text.split("/")
            shard = cls(int(index_text), int(count_text))
        except ValueError:
            raise ValueError(f"expected K/N (for example 0/4), got {text!r}") from None
        if shard.count < 1 or not 0 <= shard.index < shard.count:
            raise ValueError(f"expected 0 <= K < N, got {text!r}")
        return shard

    def owns(self, image_id: str | None) -> bool:
        if self.count == 1:
            return True
        digest = hashlib.blake2b(
            (image_id or "").lower().encode("utf-8", "surrogatepass"), digest_size=8
        ).digest()
        return int.from_bytes(digest, "little") % self.count == self.index


ALL = Shard(0, 1)


class Decision(Enum):
    SEND = "send"
    RECORD_INVALID = "record_invalid"
    SKIP = "skip"


class Admission:
    """Decides, row by row, whether to send, record as invalid, or skip; counts why."""

    def __init__(
        self,
        index: ResumeIndex,
        tally: Tally,
        *,
        op: Op = Op.ADD,
        retry_failed: bool = False,
        shard: Shard = ALL,
        api: Api = Api.GLANCE,
    ) -> None:
        self._index = index
        self._tally = tally
        self._op = op.value
        self._retry_failed = retry_failed
        self._shard = shard
        self._api = api.value
        # Decided once, not per row (decide runs for every input row, a million on resume).
        self._sharded = shard.count > 1
        self._ims = api is Api.IMS
        self._plain = api is Api.GLANCE and op is Op.ADD  # rows keyed by pair_key(image, tag)
        self._done, self._failed = index.done, index.failed
        self._seen = KeySet()  # keys met in this run's input, for duplicate rows
        # IMS: slot (image, key) → the key of the value this run's input last asked for it
        # (its low 32 bits, as KeyMap keeps them).
        self._slots = KeyMap()

    def key(self, item: Row | InvalidRow) -> int:
        if type(item) is Row:
            return row_key(item.image_id, item.tag, self._op, item.value, self._api)
        return invalid_key(item.line, item.image_id, item.tag, item.value)

    def decide(self, item: Row | InvalidRow) -> Decision:
        tally = self._tally
        tally.read += 1
        if self._sharded and not self._shard.owns(item.image_id):
            tally.skipped_other_shard += 1
            return Decision.SKIP
        key = self.key(item)
        slot = self._slot(item) if self._ims else None
        last = None if slot is None else self._slots.get(slot)  # IMS: the value last asked
        # An IMS key this run already set to another value: what the journal says is done
        # describes the image before that, so the row is sent whatever the journal says.
        moved = last not in (None, kept(key))
        earlier = self._index.state(key)
        if earlier == "done" and not moved:
            if isinstance(item, InvalidRow):
                tally.skipped_still_bad += 1  # invalid in an earlier run, still invalid
            else:
                tally.skipped_done += 1
            return Decision.SKIP
        if earlier == "failed" and not self._retry_failed:
            tally.skipped_still_bad += 1  # failed in an earlier run: not sent, still not ok
            return Decision.SKIP
        if self._repeated(key, slot, last):
            tally.skipped_duplicate += 1
            return Decision.SKIP
        return Decision.RECORD_INVALID if isinstance(item, InvalidRow) else Decision.SEND

    def screen(self, batch: Sequence[Row | InvalidRow]) -> list[Row | InvalidRow]:
        """decide() for a batch: the items to act on (rows to send, invalid rows to record),
        in order; the rest are tallied as skipped.

        A batch of Glance adds — every batch of a resume, where nearly every row is skipped —
        is keyed in one comprehension and checked against the done keys in one C-level pass,
        and only the rest are looked at row by row (decide() per row cost ~0.9 s of a
        1M-row resume). Any other batch goes through decide() row by row.
        """
        if not self._plain or self._sharded or InvalidRow in map(type, batch):
            return [item for item in batch if self.decide(item) is not Decision.SKIP]
        tally = self._tally
        tally.read += len(batch)
        rows = cast("Sequence[Row]", batch)  # all Rows: checked above
        keys = [add_key(row.image_id, row.tag) for row in rows]
        if self._done.issuperset(keys):  # a resumed batch, all done: one C-level pass
            tally.skipped_done += len(batch)
            return []
        is_done = map(self._done.__contains__, keys)
        not_done = list(compress(zip(batch, keys, strict=True), map(not_, is_done)))
        tally.skipped_done += len(batch) - len(not_done)
        return [row for row, key in not_done if self._send_not_done(key)]

    def _send_not_done(self, key: int) -> bool:
        """decide() past the done check, for a Glance add: whether a row not done is sent."""
        if key in self._failed and not self._retry_failed:
            self._tally.skipped_still_bad += 1
            return False
        if not self._seen.add(key):
            self._tally.skipped_duplicate += 1
            return False
        return True

    def _slot(self, item: Row | InvalidRow) -> int | None:
        if isinstance(item, InvalidRow):
            return None
        return ims_slot(item.image_id, item.tag)

    def _repeated(self, key: int, slot: int | None, last: int | None) -> bool:
        """Whether this run's input asked for the same work before (and note that it has now).

        For an IMS key (``slot``, whose value ``last`` asked is that), only a repeat of the value
        it was last set to is a duplicate: ``env=a, env=b, env=a`` sends all three, so the image
        ends with ``a`` as asked.
        """
        if slot is not None:
            if last == kept(key):
                return True
            self._slots.put(slot, key)
            return False
        return not self._seen.add(key)
