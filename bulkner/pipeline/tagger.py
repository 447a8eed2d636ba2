"""The pure steps of one shard: segment documents into sentences, tag sentences into entities.

Each step takes a batch and returns new records plus the rejects it produced; nothing here knows
whether it runs in-process or in a Ray actor, nor where the output goes.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import Iterable, Iterator, Sequence

from bulkner.config import EngineConfig, generation_mode
from bulkner.engines.base import Engine, Generation, Prompt, join_by_id
from bulkner.pipeline.prompt import PromptBuilder
from bulkner.schema import Document, Entity, Reject, Sentence
from bulkner.tagging.format import NO_ENTITIES
from bulkner.pipeline.sentences import split_sentences
from bulkner.types import EntityType

log = logging.getLogger(__name__)


def segment(documents: Sequence[Document], max_chars: int) -> tuple[list[Sentence], list[Reject]]:
    """Split every passage of every document into sentences (offsets into the passage text).

    A sentence longer than ``max_chars`` is rejected (``sentence_too_long``), not truncated.
    """
    sentences: list[Sentence] = []
    rejects: list[Reject] = []
    for doc in documents:
        for p_index, passage in enumerate(doc.passages):
            for s_index, (start, end) in enumerate(split_sentences(passage.text)):
                sentence = Sentence(doc.doc_id, doc.version, p_index, s_index, start, end, passage.text[start:end])
                if end - start > max_chars:
                    detail = f"{end - start} characters > max_sentence_chars={max_chars}"
                    rejects.append(Reject("segment", "sentence_too_long", sentence.key, detail))
                    continue
                sentences.append(sentence)
    return sentences, rejects


@dataclass
class TagStats:
    """Token and outcome counts of a tagging run."""

    prompts: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    unfinished: int = 0
    """Generations cut at ``max_tokens`` (their complete blocks still count)."""
    selector_dropped: int = 0
    """Parsed spans the entity selector dropped: under its keep threshold, or moved by a boundary repair."""
    selector_added: int = 0
    """Spans a span selector added: its own, and the boundaries it repaired."""
    classified: int = 0
    """Sentences the span classifier decided alone, without the generator (``--generate uncertain``)."""
    forced: int = 0
    """Spans of constrained answers that text the constraint forced on the model touches: not the
    model's proposals, left to the selector (it adds those it is sure of)."""
    generate_seconds: float = 0.0
    """Wall time inside the engine's ``generate``."""
    selector_seconds: float = 0.0
    """Wall time scoring spans with the selector."""
    abbreviations: Counter = field(default_factory=Counter)
    """The document pass (``bulkner.linking.abbreviations.harmonize``): definitions found, entities
    retyped, added and dropped."""
    names: Counter = field(default_factory=Counter)
    """Name propagation (``bulkner.linking.names``): occurrences proposed, and kept by the selector."""
    links: Counter = field(default_factory=Counter)
    """Entities linked to a concept and left without one (``bulkner.linking.link``)."""
    entities: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {
            "prompts": self.prompts,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "unfinished": self.unfinished,
            "selector_dropped": self.selector_dropped,
            "selector_added": self.selector_added,
            "classified": self.classified,
            "forced": self.forced,
            "generate_seconds": round(self.generate_seconds, 3),
            "selector_seconds": round(self.selector_seconds, 3),
            "abbreviations": dict(sorted(self.abbreviations.items())),
            "names": dict(sorted(self.names.items())),
            "links": dict(sorted(self.links.items())),
            "entities_by_type": dict(sorted(self.entities.items())),
        }


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of at most ``size`` items (read lazily from any iterable)."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


@dataclass
class Batch:
    """One engine call's worth of sentences, filled in by ``Tagger.prepare``, ``generate`` and ``finish``."""

    size: int
    """Sentences of the batch, those rejected before the engine included (progress)."""
    sentences: list[Sentence] = field(default_factory=list)
    """The sentences that have a prompt, in order."""
    prompts: list[Prompt] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    """Prompt rejects, then (after ``finish``) parse rejects."""
    generations: list[Generation] = field(default_factory=list)
    entities: list[Entity] = field(default_factory=list)
    """After ``finish``: the spans kept, with their selector scores."""
    classified: list[Entity] = field(default_factory=list)
    """The cascade: the classifier's entities of the sentences it decided alone (they have no prompt)."""
    skipped: int = 0
    """The cascade: sentences decided without the generator."""
    windows: list | None = None
    """``--generate window``: the ``Window`` of each of ``sentences`` the generator writes."""
    known: dict = field(default_factory=dict)
    """Every sentence's span scores by its text, from the cascade's triage (those it decided alone
    too) or, generating every sentence with name propagation on, from ``finish``: the selector does
    not compute them again, in ``finish`` or in the document pass's name propagation."""
    triage_seconds: float = 0.0

    def join(self, other: Batch) -> Batch:
        """This batch with ``other``'s sentences after its own (both prepared, not yet generated)."""
        self.size += other.size
        self.sentences += other.sentences
        self.prompts += other.prompts
        self.rejects += other.rejects
        self.classified += other.classified
        self.skipped += other.skipped
        self.triage_seconds += other.triage_seconds
        self.known |= other.known
        if self.windows is not None:
            self.windows += other.windows
        return self


class Tagger:
    """Sentences in, entities out, in three batch steps that a shard runs in separate threads
    (``pipeline.shard.ShardSteps``): ``prepare`` (prompts; CPU), ``generate`` (the engine only),
    ``finish`` (parse, align back to passages, select; CPU). ``tag`` runs them one after another."""

    def __init__(self, engine: Engine, builder: PromptBuilder, batch_sentences: int, selector=None,
                 abbreviations: bool = False, cascade: bool = False, linker=None, names: bool = False,
                 window: bool = False) -> None:
        self.engine = engine
        self.builder = builder
        self.types = {t.name: t for t in builder.types}
        self.type_names = list(self.types)
        self.batch_sentences = batch_sentences
        self.selector = selector
        """A ``bulkner.selectors.Selector`` that scores and filters parsed spans, or None."""
        self.abbreviations = abbreviations
        """Whether ``finish_documents`` makes each document's abbreviations agree."""
        self.names = names and selector is not None
        """Whether ``finish_documents`` proposes each tagged name at its other occurrences in the
        document, for the selector to confirm (never without a selector)."""
        if cascade and (selector is None or selector.band is None):
            raise ValueError("--generate uncertain needs a span selector with a calibrated cascade band "
                             "(bulkner train-selector --calibrate-only with the generator)")
        self.linker = linker
        """A ``bulkner.linking.link.Linker`` that gives each entity its concept id in the document
        pass, or None."""
        self.cascade = cascade or window
        """``--generate uncertain``: the span classifier reads every sentence first and the
        generator only those with a span inside the selector's uncertainty band."""
        if window:
            builder.answer.require_resume()
        self.window = window
        """``--generate window``: the cascade, and the generator writes only the stretch of each
        sentence that holds its uncertain spans (the answer's head before it is written for it)."""
        self.dropped: list[Entity] | None = None
        """When a list, the spans the selector drops are appended to it, with their scores (evaluation)."""
        self.added: list[Entity] | None = None
        """When a list, the spans the selector adds are appended to it too (evaluation)."""

    def close(self) -> None:
        self.engine.close()
        if self.selector is not None:
            self.selector.close()

    def tag(self, sentences: Sequence[Sentence], stats: TagStats, progress=None, known: dict | None = None) -> tuple[list[Entity], list[Reject]]:
        """Tag ``sentences``; ``progress`` (a tqdm bar or None) advances by sentences done; a
        ``known`` dict gets the batches' ``Batch.known`` (for ``finish_documents``)."""
        entities: list[Entity] = []
        rejects: list[Reject] = []
        for batch in self.batches(sentences):
            self.finish(self.generate(batch, stats), stats)
            entities += batch.entities
            rejects += batch.rejects
            if known is not None:
                known |= batch.known
            if progress is not None:
                progress.update(batch.size)
        return entities, rejects

    def batches(self, sentences: Iterable[Sentence]) -> Iterator[Batch]:
        """``prepare`` over consecutive batches of ``batch_sentences`` sentences. With the cascade,
        those batches are gathered until they hold ``batch_sentences`` prompts (the last one
        fewer): the engine gets calls as full as without it, and fewer of them end on a tail of a
        few long answers."""
        gathered: Batch | None = None
        for part in batched(sentences, self.batch_sentences):
            batch = self.prepare(part)
            if not self.cascade:
                yield batch
                continue
            gathered = batch if gathered is None else gathered.join(batch)
            if len(gathered.prompts) >= self.batch_sentences:
                yield gathered
                gathered = None
        if gathered is not None:
            yield gathered

    def prepare(self, sentences: Sequence[Sentence]) -> Batch:
        """Build each sentence's prompt; one too long for the model is a reject (``sentence_too_long``).
        With the cascade, the sentences the classifier decides alone get its entities, no prompt."""
        batch = Batch(len(sentences))
        pending = self._triage(sentences, batch) if self.cascade else [(s, None) for s in sentences]
        windows = [None] * len(pending)
        if self.window:
            started = time.perf_counter()
            windows = self.selector.windows([s.text for s, _ in pending], [p for _, p in pending], self.type_names)
            batch.triage_seconds += time.perf_counter() - started
            batch.windows = []
        for (sentence, _), window in zip(pending, windows, strict=True):
            prompt = self.builder.build(sentence, window)
            if prompt is None:
                detail = f"prompt plus answer budget exceed max_model_len={self.builder.max_model_len}"
                batch.rejects.append(Reject("prompt", "sentence_too_long", sentence.key, detail))
                continue
            batch.prompts.append(prompt)
            batch.sentences.append(sentence)
            if batch.windows is not None:
                batch.windows.append(window)
        return batch

    def _triage(self, sentences: Sequence[Sentence], batch: Batch) -> list[tuple[Sentence, object]]:
        """The cascade's first pass: ``batch.classified`` gets the entities of the sentences the
        classifier decides alone; returns the others, each with its span scores."""
        started = time.perf_counter()
        probs, decided = self.selector.triage([s.text for s in sentences], self.type_names)
        batch.triage_seconds = time.perf_counter() - started
        batch.known = {s.text: p for s, p in zip(sentences, probs, strict=True)}
        pending = []
        for sentence, p, spans in zip(sentences, probs, decided, strict=True):
            if spans is None:
                pending.append((sentence, p))
                continue
            batch.skipped += 1
            batch.classified += [Entity(sentence, sentence.start + a, sentence.start + b, name, score, "classifier")
                                 for _, a, b, name, score in spans]
        return pending

    def generate(self, batch: Batch, stats: TagStats) -> Batch:
        """The engine's generations for ``batch``'s prompts, in their order."""
        if batch.prompts:
            started = time.perf_counter()
            batch.generations = join_by_id(batch.prompts, self.engine.generate(batch.prompts))
            stats.generate_seconds += time.perf_counter() - started
        return batch

    def finish(self, batch: Batch, stats: TagStats) -> Batch:
        """Parse each generation into spans of its sentence, then score and filter them (selector)."""
        found: list[Entity] = []
        windows = batch.windows or [None] * len(batch.sentences)
        for sentence, prompt, generation, window in zip(batch.sentences, batch.prompts, batch.generations, windows, strict=True):
            self._collect(sentence, prompt, generation, stats, found, batch.rejects, window)
        if self.names and not self.cascade:  # every sentence generated: its scores, kept for the document pass
            started = time.perf_counter()
            batch.known = self.selector.probs_by_text([s.text for s in batch.sentences])
            stats.selector_seconds += time.perf_counter() - started
        probs = [batch.known[s.text] for s in batch.sentences] if batch.known else None
        kept = self._select(found, batch.sentences, stats, probs)
        if batch.windows is not None:
            kept = outside_windows(kept, dict(zip(map(id, batch.sentences), windows)))
        batch.entities = kept + batch.classified
        stats.classified += batch.skipped
        stats.selector_seconds += batch.triage_seconds
        for e in batch.classified:
            stats.entities[e.type] += 1
        return batch

    def finish_documents(self, sentences: Sequence[Sentence], entities: list[Entity], stats: TagStats,
                         known: dict | None = None) -> list[Entity]:
        """The document pass, once every sentence of whole documents is tagged: with ``names``, a
        name tagged in one place of a document is proposed at its other occurrences there and the
        selector keeps those it scores at its keep threshold (scores the cascade computed, in
        ``known`` (``Batch.known``), are not computed again); with ``abbreviations``, a short form
        takes its long form's type across its document and one whose long form is no entity is
        dropped; with a ``linker``, every entity gets its concept id (a defined short form through
        its long form)."""
        if self.names:
            entities = self._propagate(sentences, entities, stats, known or {})
        if self.abbreviations:
            from bulkner.linking.abbreviations import harmonize_documents

            before = Counter(e.type for e in entities)
            entities, counts = harmonize_documents(sentences, entities)
            stats.abbreviations += counts
            stats.entities += Counter(e.type for e in entities)
            stats.entities -= before
        if self.linker is not None:
            from bulkner.linking.link import link_entities

            entities, counts = link_entities(self.linker, sentences, entities)
            stats.links += counts
        return entities

    def _propagate(self, sentences: Sequence[Sentence], entities: list[Entity], stats: TagStats, known: dict) -> list[Entity]:
        """``entities`` and the proposals of :func:`bulkner.linking.names.propose` the selector keeps,
        each document's in reading order."""
        from bulkner.linking import by_document
        from bulkner.linking.names import propose, resolve
        from bulkner.selectors import Candidate

        proposed = [p for own, found in by_document(sentences, entities) for p in propose(own, found)]
        texts = list(dict.fromkeys(p.sentence.text for p in proposed))
        owner = {text: k for k, text in enumerate(texts)}
        started = time.perf_counter()
        candidates = [Candidate(p.sentence.text, p.start - p.sentence.start, p.end - p.sentence.start, self.types[p.type]) for p in proposed]
        scores = self.selector.confirm(candidates, [owner[p.sentence.text] for p in proposed], texts, known)
        stats.selector_seconds += time.perf_counter() - started
        kept = resolve([replace(p, score=q) for p, q in zip(proposed, scores) if q is not None and q >= self.selector.threshold])
        stats.names["proposed"] += len(proposed)
        stats.names["kept"] += len(kept)
        stats.entities += Counter(e.type for e in kept)
        return [e for _, found in by_document(sentences, [*entities, *kept])
                for e in sorted(found, key=lambda e: (e.sentence.passage_index, e.start, e.end, e.type))]

    def _collect(self, sentence: Sentence, prompt: Prompt, gen: Generation, stats: TagStats, entities: list, rejects: list,
                 window=None) -> None:
        """Parse one answer into ``entities`` (and ``rejects``). With a window, the answer is the
        prompt's head and the generation up to its stop text (``None`` there: nothing in the
        window), and the head's spans are left out (the classifier's, not the generator's). With a
        selector, the spans a constraint forced on the model (``Generation.forced``) are left out
        too: the selector adds them if it is sure of them (docs/pipeline.md measures why)."""
        stats.prompts += 1
        stats.prompt_tokens += gen.prompt_tokens
        stats.output_tokens += gen.output_tokens
        if not gen.finished:
            stats.unfinished += 1
        text = gen.text
        if prompt.stop:  # the stop text itself is left out; an engine that cannot stop on text wrote past it
            text = self.builder.answer.until_stop(text, prompt.stop)
        if prompt.answer_prefix and text.strip() == NO_ENTITIES:
            text = ""
        answer = prompt.answer_prefix + text
        result = self.builder.answer.parse(answer, sentence.text, self.type_names)
        for reject in result.rejects:
            rejects.append(Reject(reject.stage, reject.reason, f"{sentence.key}: {reject.record}", reject.detail))
        forced: set = set()
        if gen.forced and self.selector is not None and self.builder.answer.forced is not None:
            shift = len(prompt.answer_prefix)
            forced = self.builder.answer.forced(answer, sentence.text, self.type_names, [(a + shift, b + shift) for a, b in gen.forced])
        head = window.start if window is not None and prompt.answer_prefix else 0
        for span in result.spans:
            if head and span.end <= head:
                continue
            if span in forced:
                stats.forced += 1
                continue
            entities.append(Entity(sentence, sentence.start + span.start, sentence.start + span.end, span.type))

    def _select(self, found: list[Entity], sentences: Sequence[Sentence], stats: TagStats, probs=None) -> list[Entity]:
        """Score ``found`` with the selector (if any), keep those at or over its threshold and add
        the spans of ``sentences`` it proposes itself (a span selector); ``probs``: the sentences'
        span scores when the cascade computed them already."""
        kept = found
        if self.selector is not None:
            from bulkner.selectors import Candidate

            offsets = [(e.start - e.sentence.start, e.end - e.sentence.start) for e in found]
            candidates = [Candidate(e.sentence.text, s, t, self.types[e.type]) for e, (s, t) in zip(found, offsets)]
            started = time.perf_counter()
            position = {id(s): k for k, s in enumerate(sentences)}
            owners = [position[id(e.sentence)] for e in found]
            scores, keep, extra = self.selector.select(candidates, owners, [s.text for s in sentences], self.type_names, probs)
            stats.selector_seconds += time.perf_counter() - started
            scored = [replace(e, score=p) for e, p in zip(found, scores)]
            kept = [e for e, ok in zip(scored, keep) if ok]
            stats.selector_dropped += len(found) - len(kept)
            if self.dropped is not None:
                self.dropped += [e for e, ok in zip(scored, keep) if not ok]
            added = [Entity(sentences[k], sentences[k].start + a, sentences[k].start + b, name, p, "selector") for k, a, b, name, p in extra]
            stats.selector_added += len(added)
            if self.added is not None:
                self.added += added
            kept += added
        for e in kept:
            stats.entities[e.type] += 1
        return kept


def outside_windows(entities: list[Entity], windows: dict) -> list[Entity]:
    """``entities`` with the selector's spans outside their sentence's window (``windows`` by
    sentence ``id``) marked ``classifier``: there the classifier decided alone."""
    out = []
    for e in entities:
        window = windows.get(id(e.sentence))
        if window is not None and e.origin == "selector":
            start, end = e.start - e.sentence.start, e.end - e.sentence.start
            if end <= window.start or start >= window.end:
                e = replace(e, origin="classifier")
        out.append(e)
    return out


def build_tagger(
    types: Sequence[EntityType],
    config: EngineConfig,
    batch_sentences: int,
    selector: str | None = None,
    selector_threshold: float | None = None,
    abbreviations: bool = False,
    generate: str = "all",
    link: bool = False,
    kb: str | None = None,
    names: bool = False,
) -> Tagger:
    """Load the tokenizer, build the prompt builder, the engine and the selector (heavy: once per worker)."""
    from transformers import AutoTokenizer

    from bulkner.engines import build_engine
    from bulkner.checkpoints import resolve_model, trained_format
    from bulkner.pipeline.prompt import PromptBuilder

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(config.model))
    fmt = config.answer_format or trained_format(config.model, config.adapter)
    builder = PromptBuilder(types, tokenizer, config.max_model_len, fmt, config.constrain)
    scorer = None
    if selector is not None:
        from bulkner.selectors import open_selector

        scorer = open_selector(selector, selector_threshold)
        scorer.setup()
    linker = None
    if link:
        from bulkner.linking.link import Linker

        linker = Linker(kb, [t.name for t in types])
        linker.setup()
    mode = generation_mode(generate, selector, fmt)
    return Tagger(build_engine(config), builder, batch_sentences, scorer, abbreviations, cascade=mode == "uncertain",
                  linker=linker, names=names, window=mode == "window")
