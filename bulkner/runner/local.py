"""The local runner: every shard in order, in this process, one engine for all of them."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from tqdm.auto import tqdm

from bulkner.config import RunConfig
from bulkner.connectors.fs import shard_name
from bulkner.pipeline.shard import ShardReport, ShardWorker, plan
from bulkner.outputs.writer import OutputDir

log = logging.getLogger(__name__)

INPUT_REJECT_STAGES = ("read", "segment", "prompt")
"""Stages whose rejects are whole input records (documents, sentences) rather than model spans."""


@dataclass
class RunSummary:
    """Totals over the shards of a run."""

    reports: list[ShardReport] = field(default_factory=list)
    replicas: list[dict] = field(default_factory=list)
    """Ray runner: per replica, shards and sentences done, sentences/s and restarts."""

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.reports)

    def total(self, key: str) -> float:
        return sum(r.stats.get(key, 0) or 0 for r in self.reports if r.status == "done")

    def merged(self, key: str, statuses: tuple[str, ...] = ("done",)) -> Counter:
        merged: Counter = Counter()
        for r in self.reports:
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
        """Shards done before and redone because their input changed since (``ShardReport.changed``);
        a redo that failed counts here and under ``failed``."""
        return sum(bool(r.changed) for r in self.reports)

    def as_dict(self) -> dict:
        seconds = sum(r.stats.get("seconds", 0) for r in self.reports if r.status == "done")
        sentences = self.total("sentences")
        return {
            "shards": {s: self.count(s) for s in ("done", "skipped", "failed")},
            "redone_changed": self.redone_changed,
            "failed": {r.shard: r.error for r in self.reports if r.status == "failed"},
            "documents": self.total("documents"),
            "tombstones": self.total("tombstones"),
            "sentences": sentences,
            "entities_by_type": dict(sorted(self.merged("entities_by_type").items())),
            "rejects_by_reason": dict(sorted(self.merged("rejects_by_reason").items())),
            "prompt_tokens": self.total("prompt_tokens"),
            "output_tokens": self.total("output_tokens"),
            "selector_dropped": self.total("selector_dropped"),
            "selector_added": self.total("selector_added"),
            "generate_seconds": round(self.total("generate_seconds"), 1),
            "selector_seconds": round(self.total("selector_seconds"), 1),
            "seconds": round(seconds, 2),
            "sentences_per_second": round(sentences / seconds, 2) if seconds else None,
        } | ({"replicas": self.replicas} if self.replicas else {})


def run(inputs: Sequence[str], config: RunConfig, with_model: bool = True, progress: bool = True) -> RunSummary:
    """Process every input shard into ``config.out``; failed shards are reported, not raised.

    Raises ``FingerprintMismatch`` before any work if ``config.out`` holds another configuration.
    """
    urls = plan(inputs, config.input)
    worker = ShardWorker(config, with_model=with_model, progress=progress)
    out = OutputDir(config.out)
    out.claim(worker.fingerprint)
    out.remove_orphans(shard_name(url) for url in urls)
    summary = RunSummary()
    try:
        for url in tqdm(urls, desc="shards", unit="shard", disable=not progress):
            report = worker.process(url, out)
            log.info("%s: %s", report.shard, report.status)
            summary.reports.append(report)
    finally:
        worker.teardown()
    return summary
