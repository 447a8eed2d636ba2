"""One worker's job on one shard: read → segment → prompt → generate → parse/select → write.
Runners only schedule shards.

A ``ShardWorker`` is built once per process or Ray actor; its heavy parts (tokenizer, engine) are
built in ``setup()`` and released in ``teardown()``. ``start_run`` is how either runner begins.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from typing import Iterator, Sequence

from tqdm.auto import tqdm

from bulkner.config import InputConfig, RunConfig
from bulkner.connectors.discover import LatestRecords, discover
from bulkner.connectors.fs import location, shard_name
from bulkner.connectors.identity import change, input_identity, other_file
from bulkner.fingerprint import fingerprint
from bulkner.hardware import release_free_memory
from bulkner.outputs.writer import (
    SPLIT_TABLES,
    OutputDir,
    ShardWriter,
    documents_table,
    entities_table,
    rejects_table,
    sentences_table,
    tombstones_table,
)
from bulkner.pipeline.results import ShardResult
from bulkner.pipeline.stages import Sink, prefetch
from bulkner.pipeline.tagger import Batch, Tagger, TagStats, batched, build_tagger, segment
from bulkner.schema import TABLES, Document, Entity, Reject, Tombstone
from bulkner.types import resolve_types

log = logging.getLogger(__name__)

CHUNK_RECORDS = 1000
"""Records (documents, tombstones, rejects) read, tagged and written at a time: enough sentences
to keep a GPU engine's batches full, and a few MB of tables."""


def plan(inputs, options: InputConfig = InputConfig(), exclude: str | None = None) -> list[str]:
    """The shards of ``inputs`` in processing order (``connectors.discover.discover``; files found
    under the folder ``exclude`` left out); two inputs with one shard name are refused (their
    outputs would overwrite each other)."""
    urls = discover(inputs, options, exclude)
    seen: dict[str, str] = {}
    for url in urls:
        name = shard_name(url)
        if name in seen:
            raise ValueError(f"inputs {seen[name]} and {url} have the same shard name {name!r}; rename one")
        seen[name] = url
    return urls


class ShardCollision(ValueError):
    """A finished shard of the output directory was done from another file with the same shard name."""


def finished(url: str, out: OutputDir) -> tuple[dict | None, str, str]:
    """The completion marker of ``url``'s shard when it was done from this very input and its
    tables are whole (None when not); why it must be redone although it was done: its input changed
    since (``identity.change``), its tables do not match the marker (``OutputDir.damage``), else ``""``.

    Raises ``ShardCollision`` when the shard was done from another file (another place and, by
    ``identity.other_file``, another content): redoing it would silently replace that file's
    documents.
    """
    shard = shard_name(url)
    marker = out.done(shard)
    if marker is None:
        return None, "", ""
    recorded = marker.get("input_identity")
    elsewhere = bool(marker.get("input")) and location(marker["input"]) != location(url)
    if elsewhere and other_file(recorded, url):
        raise ShardCollision(f"shard {shard!r} of {out.root} was done from {marker['input']}; {url} is another file "
                             "with the same shard name (rename one, or write it to another --out)")
    changed = "" if elsewhere else change(recorded, url)  # elsewhere: its content was just found the same
    damaged = "" if changed else out.damage(shard, marker)
    return (None, changed, damaged) if changed or damaged else (marker, "", "")


@contextlib.contextmanager
def start_run(
    inputs: Sequence[str], config: RunConfig, with_model: bool, progress: bool = False
) -> Iterator[tuple[list[str], ShardWorker, OutputDir]]:
    """How every run begins, whichever runner: the shards in order (``plan``; files under the output
    directory are never inputs), a worker (not set up yet) and the output directory, claimed for
    this configuration, locked for this run until the block ends (``OutputDir.lock``) and cleared of
    the temporary files a killed run left. Raises ``FingerprintMismatch`` if ``config.out`` holds
    another configuration, ``OutputBusy`` if another run holds it."""
    urls = plan(inputs, config.input, exclude=config.out)
    worker = ShardWorker(config, with_model=with_model, progress=progress)
    out = OutputDir(config.out)
    out.claim(worker.fingerprint)
    with out.lock():
        out.remove_orphans(shard_name(url) for url in urls)
        yield urls, worker, out


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
            self.types, config.engine, config.batch_sentences, config.selector, config.selector_threshold,
            config.abbreviations, config.generate, config.link, config.kb, names=config.names,
        )

    def teardown(self) -> None:
        if self.tagger is not None:
            self.tagger.close()
        self.tagger = None

    def process(self, url: str, out: OutputDir) -> ShardResult:
        """Process one shard unless already done; a shard that cannot be read is reported, not raised."""
        shard, changed, damaged = shard_name(url), "", ""
        try:
            marker, changed, damaged = finished(url, out)
            if marker is not None:
                return ShardResult(shard, "skipped", marker)
            if changed:
                log.warning("shard %s: its input %s changed since it was done (%s); redoing it", shard, url, changed)
            if damaged:
                log.warning("shard %s was done but %s; redoing it", shard, damaged)
            if changed or damaged:
                out.undo(shard)  # until the new marker is written, readers of the outputs skip the shard
            out.remove_orphans([shard])  # a killed earlier attempt's temporary files (a requeued shard)
        except (OSError, ShardCollision) as err:  # the input vanished, the output cannot be read, a collision
            return self._failed(shard, err, changed, damaged)
        self.setup()  # outside the per-shard guard: an engine that cannot start stops the run
        try:
            return ShardResult(shard, "done", self._process(url, shard, out), changed=changed, damaged=damaged)
        except Exception as err:  # a bad shard must not stop the run: report it and go on
            return self._failed(shard, err, changed, damaged)

    def _failed(self, shard: str, err: Exception, changed: str = "", damaged: str = "") -> ShardResult:
        log.error("shard %s failed: %s: %s", shard, type(err).__name__, err)
        log.debug("shard %s failed", shard, exc_info=True)
        return ShardResult(shard, "failed", error=f"{type(err).__name__}: {err}", changed=changed, damaged=damaged)

    def _process(self, url: str, shard: str, out: OutputDir) -> dict:
        """Run ``ShardSteps`` over ``url`` in three stages joined by bounded queues
        (``pipeline.stages``): read, segment and prompt in one thread; generate in this one; parse,
        select and write in a third. Tables are written chunk by chunk in reading order, so the
        output is the same whatever ``queue_batches`` is. Returns the shard's stats, as committed."""
        started = time.perf_counter()
        identity = input_identity(url)  # before reading: an input changed while read is redone next run
        records = LatestRecords(url, self.config.input)
        tables = SPLIT_TABLES + (("entities",) if self.with_model else ())
        depth = self.config.queue_batches
        bar = tqdm(total=0, desc=shard, unit="sent", disable=not self.progress, leave=False)
        with out.shard_writer(shard, {name: TABLES[name] for name in tables}) as writer, bar:
            steps = ShardSteps(records, self.tagger, self.config.max_sentence_chars, writer, bar)
            with prefetch(steps.prepare(), depth, f"{shard}:prepare") as source, Sink(steps.write, depth, f"{shard}:write") as sink:
                for item in source:
                    sink.put(steps.generate(item))
            seconds = time.perf_counter() - started
            stats = {
                "shard": shard,
                "input": url,
                "input_identity": identity,
                "fingerprint": self.fingerprint["hash"],
                "documents": steps.counts["documents"],
                "passages": steps.counts["passages"],
                "duplicates_replaced": records.replaced,
                "tombstones": records.tombstones,
                "sentences": steps.counts["sentences"],
                "rejects_by_reason": dict(sorted(steps.rejected.items())),
                "seconds": round(seconds, 3),
                "sentences_per_second": round(steps.counts["sentences"] / seconds, 2) if seconds > 0 else None,
            }
            if self.with_model:
                stats |= steps.tagged.as_dict()
            return writer.commit(stats)


class RecordChunk:
    """``CHUNK_RECORDS`` records of a shard, segmented into sentences when made; ``batches`` are the
    engine batches of its sentences (none without a model), all tagged before the chunk is written."""

    def __init__(self, records: list, max_sentence_chars: int) -> None:
        self.documents = [r for r in records if isinstance(r, Document)]
        self.tombstones = [r for r in records if isinstance(r, Tombstone)]
        self.sentences, too_long = segment(self.documents, max_sentence_chars)
        self.record_rejects: list[Reject] = [r for r in records if isinstance(r, Reject)] + too_long
        """Records that could not be read, then sentences too long to tag."""
        self.batches: list[Batch] = []

    @property
    def entities(self) -> list[Entity]:
        return [e for batch in self.batches for e in batch.entities]

    @property
    def known(self) -> dict:
        """Its batches' ``Batch.known`` (the cascade's span scores), for the document pass."""
        return {text: probs for batch in self.batches for text, probs in batch.known.items()}

    @property
    def rejects(self) -> list[Reject]:
        """The records' rejects, then each batch's prompt and parse rejects."""
        return self.record_rejects + [r for batch in self.batches for r in batch.rejects]

    def write(self, writer: ShardWriter, entities: list[Entity] | None) -> None:
        """Write the chunk's tables; ``entities`` (None without a model) are its documents' final entities."""
        writer.write("documents", documents_table(self.documents, writer.shard))
        writer.write("sentences", sentences_table(self.sentences))
        writer.write("tombstones", tombstones_table(self.tombstones, writer.shard))
        if entities is not None:
            writer.write("entities", entities_table(entities, writer.shard))
        writer.write("rejects", rejects_table(self.rejects, writer.shard))


class ShardSteps:
    """The steps of one shard as three stages, each a method over one item: ``prepare`` yields every
    chunk's engine batches and then the chunk, in reading order; ``generate`` tags a batch;
    ``write`` parses and selects a batch, and writes a chunk (its batches came through before it).
    Without a tagger a chunk has no batches: it is read, segmented and written."""

    def __init__(self, records: LatestRecords, tagger: Tagger | None, max_sentence_chars: int,
                 writer: ShardWriter, bar: tqdm) -> None:
        self.records, self.tagger, self.max_sentence_chars = records, tagger, max_sentence_chars
        self.writer, self.bar = writer, bar
        self.tagged = TagStats()
        self.counts: Counter = Counter()
        """Documents, passages and sentences written."""
        self.rejected: Counter = Counter()
        """Rejects written, by ``stage/reason``."""

    def prepare(self) -> Iterator[Batch | RecordChunk]:
        """Stage 1 (CPU): read and segment a chunk, build its batches' prompts one batch at a time."""
        for records in batched(self.records, CHUNK_RECORDS):
            release_free_memory()  # the records' parse trees are freed
            chunk = RecordChunk(records, self.max_sentence_chars)
            self.bar.total += len(chunk.sentences)
            self.bar.refresh()
            if self.tagger is not None:
                for batch in self.tagger.batches(chunk.sentences):
                    chunk.batches.append(batch)
                    yield batch
            yield chunk

    def generate(self, item: Batch | RecordChunk) -> Batch | RecordChunk:
        """Stage 2 (the engine): a batch's generations; a chunk passes through."""
        if isinstance(item, Batch):
            self.tagger.generate(item, self.tagged)
        return item

    def write(self, item: Batch | RecordChunk) -> None:
        """Stage 3 (CPU): parse and select a batch's spans; write a chunk."""
        if isinstance(item, Batch):
            self.tagger.finish(item, self.tagged)
            self.bar.update(item.size)
            return
        entities = None if self.tagger is None else self.tagger.finish_documents(item.sentences, item.entities, self.tagged, item.known)
        item.write(self.writer, entities)
        release_free_memory()
        if self.tagger is None:
            self.bar.update(len(item.sentences))
        self.counts.update(documents=len(item.documents), sentences=len(item.sentences),
                           passages=sum(len(d.passages) for d in item.documents))
        self.rejected.update(f"{r.stage}/{r.reason}" for r in item.rejects)
        self.bar.set_postfix(documents=f"{self.counts['documents']}/{self.records.documents}", refresh=False)
