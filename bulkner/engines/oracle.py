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
from bulkner.tagging import render, resolve_crossing
from bulkner.types import EntityType


def oracle_targets(
    sentences: Sequence[Sentence], gold: Sequence[GoldDocument], types: Sequence[str]
) -> tuple[dict[str, str], list[tuple[str, int, Span]], list[tuple[str, int, Span]]]:
    """Gold answers by sentence key for the mentions of ``types``, and the mentions no answer can
    carry: those no single sentence contains (cut), and those crossing a longer same-type mention
    (the bracket format cannot express crossing spans; policy ``keep_longer``)."""
    by_passage: dict[tuple[str, int], list[Span]] = defaultdict(list)
    for g in gold:
        for index, span in g.mentions:
            by_passage[(g.document.doc_id, index)].append(span)
    sentences_of: dict[tuple[str, int], list[Sentence]] = defaultdict(list)
    for s in sentences:
        sentences_of[(s.doc_id, s.passage_index)].append(s)
    targets: dict[str, str] = {}
    cut: list[tuple[str, int, Span]] = []
    crossing: list[tuple[str, int, Span]] = []
    wanted = set(types)
    for key, passage_sentences in sentences_of.items():
        inside: dict[str, list[Span]] = {s.key: [] for s in passage_sentences}
        for span in (s for s in by_passage.get(key, []) if s.type in wanted):
            home = next((s for s in passage_sentences if s.start <= span.start and span.end <= s.end), None)
            if home is None:
                cut.append((key[0], key[1], span))
            else:
                inside[home.key].append(Span(span.start - home.start, span.end - home.start, span.type))
        for s in passage_sentences:
            spans = resolve_crossing(inside[s.key])
            crossing += [(key[0], key[1], Span(x.start + s.start, x.end + s.start, x.type)) for x in set(inside[s.key]) - set(spans)]
            targets[s.key] = render(s.text, spans, types)
    return targets, cut, crossing


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
