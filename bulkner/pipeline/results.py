"""What a run produced: each shard's ``ShardResult`` and the run's ``RunSummary`` over them.

The shard pipeline (``pipeline.shard``) makes the results and either runner collects them into the
summary the CLI prints; neither type knows which runner scheduled the shards.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

INPUT_REJECT_STAGES = ("read", "segment", "prompt")
"""Stages whose rejects are whole input records (documents, sentences) rather than model spans."""


@dataclass
class ShardResult:
    """What happened to one shard."""

    shard: str
    status: str
    """``done``, ``skipped`` (already done with this fingerprint) or ``failed``."""
    stats: dict = field(default_factory=dict)
    error: str = ""
    changed: str = ""
    """Why the shard was redone although it was done: its input changed since (``identity.change``)."""
    damaged: str = ""
    """Why the shard was redone although it was done: its tables did not match its marker
    (``OutputDir.damage``)."""


@dataclass
class RunSummary:
    """Totals over the shards of a run."""

    shards: list[ShardResult] = field(default_factory=list)
    replicas: list[dict] = field(default_factory=list)
    """Ray runner: per replica, shards and sentences done, sentences/s and restarts."""

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.shards)

    def total(self, key: str) -> float:
        return sum(r.stats.get(key, 0) or 0 for r in self.shards if r.status == "done")

    def merged(self, key: str, statuses: tuple[str, ...] = ("done",)) -> Counter:
        merged: Counter = Counter()
        for r in self.shards:
            if r.status in statuses:
                merged.update(r.stats.get(key, {}))
        return merged

    @property
    def input_rejects(self) -> int:
        """Rejected input records (documents, sentences) in the output, skipped shards included, so
        a rerun exits as the first run did; span-level parse rejects are excluded."""
        merged = self.merged("rejects_by_reason", ("done", "skipped"))
        return sum(n for k, n in merged.items() if k.split("/")[0] in INPUT_REJECT_STAGES)

    @property
    def redone_changed(self) -> int:
        """Shards done before and redone because their input changed since (``ShardResult.changed``);
        a redo that failed counts here and under ``failed``."""
        return sum(bool(r.changed) for r in self.shards)

    @property
    def redone_damaged(self) -> int:
        """Shards done before and redone because their tables were damaged (``ShardResult.damaged``)."""
        return sum(bool(r.damaged) for r in self.shards)

    def as_dict(self) -> dict:
        seconds = sum(r.stats.get("seconds", 0) for r in self.shards if r.status == "done")
        sentences = self.total("sentences")
        return {
            "shards": {s: self.count(s) for s in ("done", "skipped", "failed")},
            "redone_changed": self.redone_changed,
            "redone_damaged": self.redone_damaged,
            "failed": {r.shard: r.error for r in self.shards if r.status == "failed"},
            "documents": self.total("documents"),
            "tombstones": self.total("tombstones"),
            "sentences": sentences,
            "entities_by_type": dict(sorted(self.merged("entities_by_type").items())),
            "rejects_by_reason": dict(sorted(self.merged("rejects_by_reason").items())),
            "prompt_tokens": self.total("prompt_tokens"),
            "output_tokens": self.total("output_tokens"),
            "selector_dropped": self.total("selector_dropped"),
            "selector_added": self.total("selector_added"),
            "generated": self.total("prompts"),
            "classified": self.total("classified"),
            "forced": self.total("forced"),
            "abbreviations": dict(sorted(self.merged("abbreviations").items())),
            "names": dict(sorted(self.merged("names").items())),
            "links": dict(sorted(self.merged("links").items())),
            "generate_seconds": round(self.total("generate_seconds"), 1),
            "selector_seconds": round(self.total("selector_seconds"), 1),
            "seconds": round(seconds, 2),
            "sentences_per_second": round(sentences / seconds, 2) if seconds else None,
        } | ({"replicas": self.replicas} if self.replicas else {})
