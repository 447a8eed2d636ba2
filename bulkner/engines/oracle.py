"""The oracle engine: answers every prompt with the gold-tagged sentence.

Feeding gold generations through the real pipeline (segmenter, parser, offset mapping) measures
what the pipeline itself loses, independent of any model: its ceiling.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from bulkner.corpora import GoldDocument
from bulkner.engines.base import Generation, Prompt
from bulkner.schema import Sentence, Span
from bulkner.tagging import render
from bulkner.types import EntityType


def oracle_targets(
    sentences: Sequence[Sentence], gold: Sequence[GoldDocument], types: Sequence[str]
) -> tuple[dict[str, str], list[tuple[str, int, Span]]]:
    """Gold answers by sentence key, and the gold mentions no single sentence contains (cut)."""
    by_passage: dict[tuple[str, int], list[Span]] = defaultdict(list)
    for g in gold:
        for index, span in g.mentions:
            by_passage[(g.document.doc_id, index)].append(span)
    sentences_of: dict[tuple[str, int], list[Sentence]] = defaultdict(list)
    for s in sentences:
        sentences_of[(s.doc_id, s.passage_index)].append(s)
    targets: dict[str, str] = {}
    cut: list[tuple[str, int, Span]] = []
    for key, passage_sentences in sentences_of.items():
        inside: dict[str, list[Span]] = {s.key: [] for s in passage_sentences}
        for span in by_passage.get(key, []):
            home = next((s for s in passage_sentences if s.start <= span.start and span.end <= s.end), None)
            if home is None:
                cut.append((key[0], key[1], span))
            else:
                inside[home.key].append(Span(span.start - home.start, span.end - home.start, span.type))
        for s in passage_sentences:
            targets[s.key] = render(s.text, inside[s.key], types)
    return targets, cut


class OraclePrompts:
    """Prompt builder for the oracle: prompts carry only the sentence id."""

    def __init__(self, types: Sequence[EntityType]) -> None:
        self.types = list(types)
        self.max_model_len = 0

    def build(self, sentence: Sentence) -> Prompt:
        return Prompt(id=sentence.key, token_ids=(), max_tokens=0)


class OracleEngine:
    """Answers each prompt id with its gold target."""

    name = "oracle"

    def __init__(self, targets: dict[str, str]) -> None:
        self.targets = targets

    def generate(self, prompts: Sequence[Prompt]) -> list[Generation]:
        return [Generation(p.id, self.targets[p.id], 0, 0) for p in prompts]

    def close(self) -> None:
        self.targets = {}
