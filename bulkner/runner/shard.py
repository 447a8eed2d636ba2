"""One worker's job on one shard: read, segment, tag, write. Runners only schedule shards.

A ``ShardWorker`` is built once per process or Ray actor; its heavy parts (tokenizer, engine) are
built in ``setup()`` and released in ``teardown()``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from bulkner.config import InputConfig, RunConfig
from bulkner.connectors.fs import shard_name
from bulkner.fingerprint import fingerprint
from bulkner.pipeline import Tagger, TagStats, build_tagger, segment
from bulkner.reader import discover, read_records
from bulkner.schema import Document, Reject, Tombstone
from bulkner.types import resolve_types
from bulkner.writer import (
    OutputDir,
    documents_table,
    entities_table,
    rejects_table,
    sentences_table,
    tombstones_table,
)

log = logging.getLogger(__name__)


@dataclass
class ShardReport:
    """What happened to one shard."""

    shard: str
    status: str
    """``done``, ``skipped`` (already done with this fingerprint) or ``failed``."""
    stats: dict = field(default_factory=dict)
    error: str = ""


def plan(inputs, options: InputConfig = InputConfig()) -> list[str]:
    """The shards of ``inputs`` in processing order (``reader.discover``); two inputs with one
    shard name are refused (their outputs would overwrite each other)."""
    urls = discover(inputs, options)
    seen: dict[str, str] = {}
    for url in urls:
        name = shard_name(url)
        if name in seen:
            raise ValueError(f"inputs {seen[name]} and {url} have the same shard name {name!r}; rename one")
        seen[name] = url
    return urls


def collect(url: str, options: InputConfig = InputConfig()) -> tuple[list[Document], list[Tombstone], list[Reject], int]:
    """Read a shard. Within it the last record of a doc_id wins: a repeated document replaces the
    earlier one (counted), a later DeleteCitation removes it, a later document revives it."""
    latest: dict[str, Document | Tombstone] = {}
    rejects: list[Reject] = []
    replaced = 0
    for record in read_records(url, options):
        if isinstance(record, Reject):
            rejects.append(record)
            continue
        previous = latest.pop(record.doc_id, None)
        replaced += isinstance(record, Document) and isinstance(previous, Document)
        latest[record.doc_id] = record
    documents = [r for r in latest.values() if isinstance(r, Document)]
    tombstones = [r for r in latest.values() if isinstance(r, Tombstone)]
    return documents, tombstones, rejects, replaced


class ShardWorker:
    """Processes shards into an output directory; with ``with_model=False`` only splits."""

    def __init__(self, config: RunConfig, with_model: bool = True, progress: bool = False) -> None:
        self.config = config
        self.with_model = with_model
        self.progress = progress
        self.types = resolve_types(config.types, config.types_file)
        self.fingerprint = fingerprint(config, self.types, with_model)
        self.tagger: Tagger | None = None

    def resources(self) -> dict:
        """What one worker pins on a cluster: a (fraction of a) GPU when it runs a model."""
        gpus = self.config.engine.gpus_per_replica if self.with_model else 0
        return {"num_cpus": 1, "num_gpus": gpus}

    def setup(self) -> None:
        """Build the tokenizer, prompt builder and engine (once per worker)."""
        if not self.with_model or self.tagger is not None:
            return
        config = self.config
        self.tagger = build_tagger(
            self.types, config.engine, config.batch_sentences, config.selector, config.selector_threshold
        )

    def teardown(self) -> None:
        if self.tagger is not None:
            self.tagger.close()
        self.tagger = None

    def process(self, url: str, out: OutputDir) -> ShardReport:
        """Process one shard unless already done; a shard that cannot be read is reported, not raised."""
        shard = shard_name(url)
        marker = out.done(shard)
        if marker is not None:
            return ShardReport(shard, "skipped", marker)
        self.setup()  # outside the per-shard guard: an engine that cannot start stops the run
        try:
            return ShardReport(shard, "done", self._process(url, shard, out))
        except Exception as err:  # a bad shard must not stop the run: report it and go on
            log.error("shard %s failed: %s: %s", shard, type(err).__name__, err)
            log.debug("shard %s failed", shard, exc_info=True)
            return ShardReport(shard, "failed", error=f"{type(err).__name__}: {err}")

    def _process(self, url: str, shard: str, out: OutputDir) -> dict:
        started = time.perf_counter()
        documents, tombstones, rejects, replaced = collect(url, self.config.input)
        sentences, segment_rejects = segment(documents, self.config.max_sentence_chars)
        rejects += segment_rejects
        tables = {
            "documents": documents_table(documents, shard),
            "sentences": sentences_table(sentences),
            "tombstones": tombstones_table(tombstones, shard),
        }
        stats = TagStats()
        if self.with_model:
            with tqdm(total=len(sentences), desc=shard, unit="sent", disable=not self.progress, leave=False) as bar:
                entities, tag_rejects = self.tagger.tag(sentences, stats, bar)
            rejects += tag_rejects
            tables["entities"] = entities_table(entities, shard)
        tables["rejects"] = rejects_table(rejects, shard)
        seconds = time.perf_counter() - started
        report = {
            "shard": shard,
            "input": url,
            "fingerprint": self.fingerprint["hash"],
            "documents": len(documents),
            "passages": sum(len(d.passages) for d in documents),
            "duplicates_replaced": replaced,
            "tombstones": len(tombstones),
            "sentences": len(sentences),
            "rejects_by_reason": dict(sorted(Counter(f"{r.stage}/{r.reason}" for r in rejects).items())),
            "seconds": round(seconds, 3),
            "sentences_per_second": round(len(sentences) / seconds, 2) if seconds > 0 else None,
        }
        if self.with_model:
            report |= stats.as_dict()
        out.write_shard(shard, tables, report)
        return report
