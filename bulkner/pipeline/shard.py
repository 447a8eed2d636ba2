"""One worker's job on one shard: read, segment, tag, write. Runners only schedule shards.

A ``ShardWorker`` is built once per process or Ray actor; its heavy parts (tokenizer, engine) are
built in ``setup()`` and released in ``teardown()``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

from tqdm.auto import tqdm

from bulkner.config import InputConfig, RunConfig
from bulkner.connectors.fs import shard_name
from bulkner.fingerprint import fingerprint
from bulkner.connectors.identity import change, input_identity
from bulkner.pipeline.tagger import Batch, Tagger, TagStats, batched, build_tagger, segment
from bulkner.connectors.discover import LatestRecords, discover
from bulkner.schema import TABLES, Document, Reject, Tombstone
from bulkner.pipeline.stages import Sink, prefetch
from bulkner.types import resolve_types
from bulkner.outputs.writer import (
    OutputDir,
    documents_table,
    entities_table,
    rejects_table,
    sentences_table,
    tombstones_table,
)

log = logging.getLogger(__name__)

CHUNK_RECORDS = 1000
"""Records (documents, tombstones, rejects) read, tagged and written at a time: enough sentences
to keep a GPU engine's batches full, and a few MB of tables."""


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
    """The shards of ``inputs`` in processing order (``connectors.discover.discover``); two inputs with one
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
            out.remove_orphans([shard])  # a killed earlier attempt's temporary files (a requeued shard)
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
        """Read, segment, tag and write ``url`` in chunks of ``CHUNK_RECORDS`` records (memory is
        that of a few chunks, whatever the shard's size: ``bench/memory.py``), in three stages
        joined by bounded queues (``bulkner.pipeline.stages``): read, segment and prompt in one thread;
        generate in this one; parse, select and write in a third. Tables are written chunk by
        chunk in reading order, so the output is the same whatever ``queue_batches`` is."""
        started = time.perf_counter()
        identity = input_identity(url)  # before reading: an input changed while read is redone next run
        records = LatestRecords(url, self.config.input)
        stats, counts, rejected = TagStats(), Counter(), Counter()
        schemas = {name: TABLES[name] for name in ("documents", "sentences", "tombstones", "rejects")}
        if self.with_model:
            schemas["entities"] = TABLES["entities"]
        bar = tqdm(total=0, desc=shard, unit="sent", disable=not self.progress, leave=False)
        depth = self.config.queue_batches

        def prepared() -> Iterator[tuple[Chunk, Batch | None, bool]]:
            """Stage 1 (CPU): each chunk's records and sentences, then its engine batches with their
            prompts, built one at a time; the flag marks a chunk's last item."""
            for records_chunk in batched(records, CHUNK_RECORDS):
                chunk = Chunk(records_chunk, self.config.max_sentence_chars)
                bar.total += len(chunk.sentences)
                bar.refresh()
                if not self.with_model:
                    yield chunk, None, True
                    continue
                batches = self.tagger.batches(chunk.sentences)
                batch = next(batches, Batch(0, [], []))
                for following in batches:
                    yield chunk, batch, False
                    batch = following
                yield chunk, batch, True

        def write(item: tuple[Chunk, Batch | None, bool]) -> None:
            """Stage 3 (CPU): parse and select a batch; after a chunk's last batch, write the chunk."""
            chunk, batch, last = item
            if batch is None:
                bar.update(len(chunk.sentences))
            else:
                self.tagger.finish(batch, stats)
                chunk.entities += batch.entities
                chunk.rejects += batch.rejects
            if not last:
                return
            chunk.write(writer, shard, self.with_model)
            counts.update(documents=len(chunk.documents), sentences=len(chunk.sentences),
                          passages=sum(len(d.passages) for d in chunk.documents))
            rejected.update(f"{r.stage}/{r.reason}" for r in chunk.rejects)
            bar.set_postfix(documents=f"{counts['documents']}/{records.documents}", refresh=False)

        with out.shard_writer(shard, schemas) as writer, bar:
            with prefetch(prepared(), depth, f"{shard}:prepare") as source, Sink(write, depth, f"{shard}:write") as sink:
                for chunk, batch, last in source:  # stage 2: the engine, fed from stage 1's queue
                    if batch is not None:
                        self.tagger.generate(batch, stats)
                        bar.update(batch.size)
                    sink.put((chunk, batch, last))
            seconds = time.perf_counter() - started
            report = {
                "shard": shard,
                "input": url,
                "input_identity": identity,
                "fingerprint": self.fingerprint["hash"],
                "documents": counts["documents"],
                "passages": counts["passages"],
                "duplicates_replaced": records.replaced,
                "tombstones": records.tombstones,
                "sentences": counts["sentences"],
                "rejects_by_reason": dict(sorted(rejected.items())),
                "seconds": round(seconds, 3),
                "sentences_per_second": round(counts["sentences"] / seconds, 2) if seconds > 0 else None,
            }
            if self.with_model:
                report |= stats.as_dict()
            writer.commit(report)
        return report


class Chunk:
    """``CHUNK_RECORDS`` records of a shard: segmented when made, written once its batches are tagged."""

    def __init__(self, records: list, max_sentence_chars: int) -> None:
        self.documents = [r for r in records if isinstance(r, Document)]
        self.tombstones = [r for r in records if isinstance(r, Tombstone)]
        self.sentences, segment_rejects = segment(self.documents, max_sentence_chars)
        self.rejects: list[Reject] = [r for r in records if isinstance(r, Reject)] + segment_rejects
        self.entities: list = []

    def write(self, writer, shard: str, with_entities: bool) -> None:
        writer.write("documents", documents_table(self.documents, shard))
        writer.write("sentences", sentences_table(self.sentences))
        writer.write("tombstones", tombstones_table(self.tombstones, shard))
        if with_entities:
            writer.write("entities", entities_table(self.entities, shard))
        writer.write("rejects", rejects_table(self.rejects, shard))
