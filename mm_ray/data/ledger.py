"""The quarantine ledger: one place that counts samples read and samples set aside.

Read tasks and preprocessing stages run in many processes; each sends its
``QuarantineRecord``s (as dicts) and per-shard read counts here. The Ray wiring runs one
instance of this plain class as an actor (``mm_ray.data.pipeline``); tests use it directly.

Records are de-duplicated on what they are about (``record_identity``) and shard counts are overwritten,
not added, so a retried read task, a restarted actor or a later epoch reading the same shard does not
double count, while distinct members of one sample (5,000 unknown ones, say) are each counted.

Memory stays small whatever a shard holds (a ``.tar.gz`` of empty members makes a record every ~9 bytes):
only the first ``max_logged`` records are kept whole (the log); every other one leaves a 16-byte digest of its
identity, enough to count it exactly once, and the counts by reason are kept as records arrive, so
``summary`` (polled for progress) costs the same at 10 records or 10 million.

The actor is never restarted: a restarted ledger would start empty and report a fraction of the run's
counts as the whole (``samples_ok`` sizes the LR schedule and the cache manifest). If it dies, every call
to it goes through ``ledger_get``, which raises ``LedgerLost`` naming it, so the run fails instead of
finishing with counts that are silently wrong.
"""

from __future__ import annotations

import collections
import hashlib
import json
from pathlib import Path
from typing import Any

from mm_ray.quarantine import Reason, is_member_level, is_sample_level


def identity_digest(identity: tuple[str, ...]) -> bytes:
    """16 bytes standing for ``identity`` (128 bits: two distinct records share one with odds ~1e-24 at 1e7)."""
    text = "\0".join(identity).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(text, digest_size=16).digest()


def record_identity(rec: dict[str, str]) -> tuple[str, ...]:
    """What a record is about: a sample or shard record is one per (shard, key, reason), whatever its detail
    says (a decoder's message may hold a memory address); a member-level record names its member in its
    detail, so each member counts once."""
    identity = (rec["shard"], rec["key"], rec["reason"])
    return (*identity, rec.get("detail", "")) if is_member_level(rec["reason"]) else identity


class ErrorBudgetExceeded(RuntimeError):
    """More than the configured fraction of samples was quarantined."""


def raise_if_over_budget(verdict: str | None) -> None:
    """Raise ``ErrorBudgetExceeded`` with the ledger's message (``QuarantineLedger.budget_exceeded``)."""
    if verdict:
        raise ErrorBudgetExceeded(verdict)


class LedgerLost(RuntimeError):
    """The quarantine ledger actor died mid-run: its counts are gone, so the run cannot report them."""


LEDGER_LOST = (
    "the quarantine ledger actor (QuarantineLedger) died during the run, and with it the counts of samples "
    "read and set aside: this run's summary would be wrong, so it stops here; run it again"
)


def ledger_get(refs: Any) -> Any:
    """``ray.get(refs)`` for calls to the ledger actor; ``LedgerLost`` when the actor has died."""
    import ray  # only here: the ledger class itself is plain Python

    try:
        return ray.get(refs)
    except ray.exceptions.RayActorError as err:
        raise LedgerLost(f"{LEDGER_LOST} ({type(err).__name__})") from None


class QuarantineLedger:
    """Collects quarantine records and read progress; produces the summary and the JSONL log.

    Given ``error_budget`` and ``shards_total``, ``add`` and ``shard_progress`` answer whether the budget is
    already certainly exceeded: once every shard has been read, ``samples_read`` is final and the quarantined
    count can only grow, so a fraction over the budget then cannot recover. The callers (read tasks and
    decoding stages) raise ``ErrorBudgetExceeded`` on that answer, which stops the run while the pools still
    have work, instead of after the whole write.
    """

    def __init__(
        self, max_logged: int = 100_000, *, error_budget: float | None = None, shards_total: int | None = None
    ):
        self._seen: set[bytes] = set()  # identity digests of every record counted
        self._logged: list[dict[str, str]] = []  # the first ``max_logged`` records, whole
        self._samples: collections.Counter[str] = collections.Counter()  # sample-level records by reason
        self._bad_by_shard: collections.Counter[str] = collections.Counter()  # sample-level records by shard
        self._members: collections.Counter[str] = collections.Counter()  # member-level records by reason
        self._shard_problems: dict[str, set[str]] = collections.defaultdict(set)  # reason -> shards
        self._samples_read: dict[str, int] = {}
        self._shards_done: set[str] = set()
        self._max_logged = max_logged
        self._error_budget = error_budget
        self._shards_total = shards_total

    def add(self, records: list[dict[str, str]]) -> str | None:
        """Record ``QuarantineRecord.to_json()`` dicts (idempotent); returns ``budget_exceeded()``."""
        for rec in records:
            digest = identity_digest(record_identity(rec))
            if digest in self._seen:
                continue
            self._seen.add(digest)
            if len(self._logged) < self._max_logged:
                self._logged.append(rec)
            reason = rec["reason"]
            # A plug-in modality's decoder writes reason codes of its own: sample level, like every decode.
            if is_member_level(reason):
                self._members[reason] += 1
            elif is_sample_level(reason):
                self._samples[reason] += 1
                self._bad_by_shard[rec["shard"]] += 1
            else:
                self._shard_problems[reason].add(rec["shard"])
        return self.budget_exceeded()

    def shard_progress(self, shard: str, samples_read: int, done: bool = False) -> str | None:
        """A read task has parsed ``samples_read`` samples (good or bad) of ``shard`` so far; returns
        ``budget_exceeded()``."""
        self._samples_read[shard] = max(samples_read, self._samples_read.get(shard, 0))
        if done:
            self._shards_done.add(shard)
        return self.budget_exceeded()

    def budget_exceeded(self, log_hint: str = "the quarantine log") -> str | None:
        """The ``ErrorBudgetExceeded`` message once the budget is certainly exceeded, else ``None``.

        The message says "at least": samples still in the pools may yet be set aside."""
        if self._error_budget is None or self._shards_total is None:
            return None
        if len(self._shards_done) < self._shards_total:
            return None  # samples still to come could all be good
        read = sum(self._samples_read.values())
        if read == 0 or self._samples.total() / read <= self._error_budget:
            return None  # the common answer, without walking every record (called on every report)
        try:
            check_error_budget(self.summary(), self._error_budget, log_hint=log_hint, at_least=True)
        except ErrorBudgetExceeded as err:
            return str(err)
        return None

    def summary(self) -> dict[str, Any]:
        """Counts by reason; ``samples_read`` counts every sample parsed from the tar streams. Kept as records
        arrive: the cost does not grow with the records (it is polled for progress)."""
        problems = self._shard_problems
        return {
            "samples_read": sum(self._samples_read.values()),
            "samples_quarantined": self._samples.total(),
            "quarantine_reasons": dict(sorted(self._samples.items())),
            "members_ignored": dict(sorted(self._members.items())),
            "quarantine_records": len(self._seen),
            "quarantine_records_logged": len(self._logged),
            "shards_done": len(self._shards_done),
            "shards_unreadable": sorted(problems.get(Reason.UNREADABLE_SHARD.value, ())),
            "shards_truncated": sorted(problems.get(Reason.TRUNCATED_SHARD.value, ())),
            "shards_empty": sorted(problems.get(Reason.EMPTY_SHARD.value, ())),
        }

    def good_samples(self) -> dict[str, int]:
        """Samples that passed every check, per shard read to its end (a training run's data position tells
        the shards it has finished by comparing these with the samples it trained from each)."""
        bad = self._bad_by_shard
        return {shard: self._samples_read.get(shard, 0) - bad[shard] for shard in sorted(self._shards_done)}

    def records(self) -> list[dict[str, str]]:
        """The first ``max_logged`` records, in arrival order (``summary()["quarantine_records"]`` counts them all)."""
        return list(self._logged)


def quarantine_jsonl(records: list[dict[str, str]]) -> str:
    """Records as JSON lines (one object per line: shard, key, reason, detail)."""
    return "".join(json.dumps(rec) + "\n" for rec in records)


def write_quarantine_log(records: list[dict[str, str]], path: str | Path) -> int:
    """Write records as JSON lines to the local file ``path``; returns the count."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(quarantine_jsonl(records))
    return len(records)


def check_error_budget(
    summary: dict[str, Any], budget: float, log_hint: str = "", min_samples: int = 0, at_least: bool = False
) -> None:
    """Raise ``ErrorBudgetExceeded`` when the quarantined fraction is above ``budget``.

    ``min_samples`` avoids failing on the first few samples of a run when checking mid-stream; ``at_least``
    words the counts as a lower bound (a check before every sample was decoded).
    """
    read = summary["samples_read"]
    bad = summary["samples_quarantined"]
    if read == 0 or read < min_samples or bad / read <= budget:
        return
    reasons = ", ".join(f"{r}={n}" for r, n in summary["quarantine_reasons"].items())
    where = f"; see {log_hint}" if log_hint else ""
    raise ErrorBudgetExceeded(
        f"error budget exceeded: {'at least ' if at_least else ''}{bad} of {read} samples ({bad / read:.1%}) "
        "quarantined, "
        f"budget data.error_budget={budget:.1%} ({reasons}){where}"
    )
