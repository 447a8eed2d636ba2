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
from bulkner.identity import change, input_identity
from bulkner.pipeline import Tagger, TagStats, build_tagger, segment
from bulkner.reader import collect, discover
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
    changed: str = ""
    """Why the shard was redone although it was done: its input changed since (``identity.change``)."""


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


def finished(url: str, out: OutputDir) -> tuple[dict | None, str]:
    """The completion marker of ``url``'s shard when it was done from this very input (None when
    not), and why it must be redone when its input changed since (``identity.change``), else ``""``."""
    marker = out.done(shard_name(url))
    if marker is None:
        return None, ""
    changed = change(marker.get("input_identity"), url)
    return (None, changed) if changed else (marker, "")


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
        shard, changed = shard_name(url), ""
        try:
            marker, changed = finished(url, out)
            if marker is not None:
                return ShardReport(shard, "skipped", marker)
            if changed:
                log.warning("shard %s: its input %s changed since it was done (%s); redoing it", shard, url, changed)
                out.undo(shard)  # until the new marker is written, readers of the outputs skip the shard
        except OSError as err:  # the input vanished, or the output directory cannot be read
            return self._failed(shard, err, changed)
        self.setup()  # outside the per-shard guard: an engine that cannot start stops the run
        try:
            return ShardReport(shard, "done", self._process(url, shard, out), changed=changed)
        except Exception as err:  # a bad shard must not stop the run: report it and go on
            return self._failed(shard, err, changed)

    def _failed(self, shard: str, err: Exception, changed: str) -> ShardReport:
        log.error("shard %s failed: %s: %s", shard, type(err).__name__, err)
        log.debug("shard %s failed", shard, exc_info=True)
        return ShardReport(shard, "failed", error=f"{type(err).__name__}: {err}", changed=changed)

    def _process(self, url: str, shard: str, out: OutputDir) -> dict:
        started = time.perf_counter()
        identity = input_identity(url)  # before reading: an input changed while read is redone next run
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
            "input_identity": identity,
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
