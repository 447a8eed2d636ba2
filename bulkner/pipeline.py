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

from bulkner.config import EngineConfig
from bulkner.engines.base import Engine, Generation, Prompt, join_by_id
from bulkner.prompt import PromptBuilder
from bulkner.schema import Document, Entity, Reject, Sentence
from bulkner.segment import split_sentences
from bulkner.tagging import parse
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
    """Parsed spans the entity selector scored under its threshold."""
    generate_seconds: float = 0.0
    """Wall time inside the engine's ``generate``."""
    selector_seconds: float = 0.0
    """Wall time scoring spans with the selector."""
    entities: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {
            "prompts": self.prompts,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "unfinished": self.unfinished,
            "selector_dropped": self.selector_dropped,
            "generate_seconds": round(self.generate_seconds, 3),
            "selector_seconds": round(self.selector_seconds, 3),
            "entities_by_type": dict(sorted(self.entities.items())),
        }


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of at most ``size`` items (read lazily from any iterable)."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


class Tagger:
    """Sentences in, entities out: prompt, generate (batched), parse and align back to passages."""

    def __init__(self, engine: Engine, builder: PromptBuilder, batch_sentences: int, selector=None) -> None:
        self.engine = engine
        self.builder = builder
        self.types = {t.name: t for t in builder.types}
        self.type_names = list(self.types)
        self.batch_sentences = batch_sentences
        self.selector = selector
        """A ``bulkner.selector.Selector`` that scores and filters parsed spans, or None."""
        self.dropped: list[Entity] | None = None
        """When a list, the spans the selector drops are appended to it, with their scores (evaluation)."""

    def close(self) -> None:
        self.engine.close()
        if self.selector is not None:
            self.selector.close()

    def tag(self, sentences: Sequence[Sentence], stats: TagStats, progress=None) -> tuple[list[Entity], list[Reject]]:
        """Tag ``sentences``; ``progress`` (a tqdm bar or None) advances by sentences done."""
        entities: list[Entity] = []
        rejects: list[Reject] = []
        for batch in batched(sentences, self.batch_sentences):
            prompts: list[Prompt] = []
            asked: list[Sentence] = []
            for sentence in batch:
                prompt = self.builder.build(sentence)
                if prompt is None:
                    detail = f"prompt plus answer budget exceed max_model_len={self.builder.max_model_len}"
                    rejects.append(Reject("prompt", "sentence_too_long", sentence.key, detail))
                    continue
                prompts.append(prompt)
                asked.append(sentence)
            started = time.perf_counter()
            generations = join_by_id(prompts, self.engine.generate(prompts)) if prompts else []
            stats.generate_seconds += time.perf_counter() - started
            found: list[Entity] = []
            for sentence, generation in zip(asked, generations):
                self._collect(sentence, generation, stats, found, rejects)
            entities += self._select(found, stats)
            if progress is not None:
                progress.update(len(batch))
        return entities, rejects

    def _collect(self, sentence: Sentence, gen: Generation, stats: TagStats, entities: list, rejects: list) -> None:
        stats.prompts += 1
        stats.prompt_tokens += gen.prompt_tokens
        stats.output_tokens += gen.output_tokens
        if not gen.finished:
            stats.unfinished += 1
        result = parse(gen.text, sentence.text, self.type_names)
        for reject in result.rejects:
            rejects.append(Reject(reject.stage, reject.reason, f"{sentence.key}: {reject.record}", reject.detail))
        for span in result.spans:
            entities.append(Entity(sentence, sentence.start + span.start, sentence.start + span.end, span.type))

    def _select(self, found: list[Entity], stats: TagStats) -> list[Entity]:
        """Score ``found`` with the selector (if any) and keep those at or over its threshold."""
        kept = found
        if self.selector is not None:
            from bulkner.selector import Candidate

            offsets = [(e.start - e.sentence.start, e.end - e.sentence.start) for e in found]
            candidates = [Candidate(e.sentence.text, s, t, self.types[e.type]) for e, (s, t) in zip(found, offsets)]
            started = time.perf_counter()
            scores = self.selector.score(candidates)
            stats.selector_seconds += time.perf_counter() - started
            scored = [replace(e, score=p) for e, p in zip(found, scores)]
            keep = self.selector.keep(scores)
            kept = [e for e, ok in zip(scored, keep) if ok]
            stats.selector_dropped += len(found) - len(kept)
            if self.dropped is not None:
                self.dropped += [e for e, ok in zip(scored, keep) if not ok]
        for e in kept:
            stats.entities[e.type] += 1
        return kept


def build_tagger(
    types: Sequence[EntityType],
    config: EngineConfig,
    batch_sentences: int,
    selector: str | None = None,
    selector_threshold: float | None = None,
) -> Tagger:
    """Load the tokenizer, build the prompt builder, the engine and the selector (heavy: once per worker)."""
    from transformers import AutoTokenizer

    from bulkner.engines import build_engine
    from bulkner.models import resolve_model
    from bulkner.prompt import PromptBuilder

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(config.model))
    builder = PromptBuilder(types, tokenizer, config.max_model_len)
    scorer = None
    if selector is not None:
        from bulkner.selector import Selector

        scorer = Selector(selector, selector_threshold)
        scorer.setup()
    return Tagger(build_engine(config), builder, batch_sentences, scorer)
