"""The quarantine ledger under a flood of records (a ``.tar.gz`` of empty members makes one every ~9 bytes):
counts stay exact through retries, the records it keeps whole stop at ``max_logged``, what it keeps per record
is a small digest, and ``summary`` (polled for progress) does not walk the records."""

from __future__ import annotations

import gc
import sys
import tracemalloc
from collections.abc import Iterator

from mm_ray.data.ledger import QuarantineLedger
from mm_ray.quarantine import QuarantineRecord, Reason


def _records(
    n: int, shard: str = "s.tar.gz", reason: Reason = Reason.NO_KNOWN_MEMBERS
) -> Iterator[list[dict]]:
    """``n`` distinct sample records in batches of 1,000, as read tasks send them (made on the fly)."""
    for start in range(0, n, 1000):
        yield [
            QuarantineRecord(shard, f"{i:08d}", reason, "no member maps to a modality").to_json()
            for i in range(start, min(n, start + 1000))
        ]


def test_counts_are_exact_through_retries_while_only_max_logged_records_are_kept() -> None:
    ledger = QuarantineLedger(max_logged=10)
    for _attempt in range(2):  # a retried read task sends every record again
        for batch in _records(2500):
            ledger.add(batch)
    for batch in _records(300, reason=Reason.CORRUPT_IMAGE):
        ledger.add(batch)
    ledger.add([QuarantineRecord("s.tar.gz", "x", Reason.UNKNOWN_EXTENSION, f"member x.m{i}").to_json()
                for i in range(7)])  # fmt: skip
    ledger.add([QuarantineRecord("t.tar", "", Reason.TRUNCATED_SHARD, "cut").to_json()] * 3)
    summary = ledger.summary()
    # 2,500 + 300 distinct keys counted once each (the 300 CORRUPT_IMAGE reuse keys under another reason).
    assert summary["samples_quarantined"] == 2800
    assert summary["quarantine_reasons"] == {"corrupt_image": 300, "no_known_members": 2500}
    assert summary["members_ignored"] == {"unknown_extension": 7}
    assert summary["shards_truncated"] == ["t.tar"]
    assert summary["quarantine_records"] == 2500 + 300 + 7 + 1 and summary["quarantine_records_logged"] == 10
    assert [r["key"] for r in ledger.records()] == [f"{i:08d}" for i in range(10)]  # the first ones, in order


def test_what_the_ledger_keeps_per_record_is_small() -> None:
    gc.collect()
    tracemalloc.start()
    try:
        ledger = QuarantineLedger(max_logged=100)
        before = tracemalloc.get_traced_memory()[0]
        for batch in _records(100_000):
            ledger.add(batch)
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert ledger.summary()["samples_quarantined"] == 100_000
    # A whole record (its dict, strings and identity tuple) took ~430 B; a 16-byte digest in a set ~100 B.
    assert kept / 100_000 < 160, f"{kept / 100_000:.0f} bytes kept per record"


def _calls_of(function) -> int:
    """Python-level function calls made while ``function`` runs (a cost that does not depend on the machine)."""
    calls = 0

    def count(frame, event, arg) -> None:
        nonlocal calls
        calls += event == "call"

    sys.setprofile(count)
    try:
        function()
    finally:
        sys.setprofile(None)
    return calls


def test_summary_costs_the_same_at_ten_records_or_ten_thousand() -> None:
    small, large = QuarantineLedger(), QuarantineLedger()
    small.add(next(_records(10)))
    for batch in _records(10_000):
        large.add(batch)
    assert large.summary()["samples_quarantined"] == 10_000
    assert _calls_of(large.summary) == _calls_of(small.summary)
