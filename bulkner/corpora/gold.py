"""Gold mentions placed on sentences: the one mapping that the oracle, tagger training and selector
training share.

A passage mention belongs to the sentence that contains it whole; a mention no sentence contains
(cut by a sentence boundary) is counted, never moved. Within a sentence, mentions that cross
(overlap without nesting) cannot both be written in some answer formats (same-type ones in
``blocks``, any two in ``brackets``; ``AnswerFormat.crossing``): the longer one is kept
(``tagging.resolve_crossing``, policy ``keep_longer``) and the other counted.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

from bulkner.corpora import GoldDocument
from bulkner.schema import Entity, Sentence, Span
from bulkner.tagging import resolve_crossing

Placed = tuple[str, int, Span]
"""``(doc_id, passage_index, span)`` with passage offsets: a mention left out, and where it was."""


@dataclass
class SentenceGold:
    """Gold mentions of the asked types by sentence, and what was left out."""

    spans: dict[str, list[Span]] = field(default_factory=dict)
    """Sentence key -> its mentions, offsets into the sentence, crossing resolved."""
    cut: list[Placed] = field(default_factory=list)
    """Mentions no single sentence contains."""
    crossing: list[Placed] = field(default_factory=list)
    """Mentions dropped for crossing a longer mention of the same type."""
    other_types: int = 0
    """Mentions of types that were not asked for."""

    def entities(self, sentences: Sequence[Sentence]) -> list[Entity]:
        """The placed mentions of ``sentences`` as pipeline entities (passage offsets), in sentence order."""
        return [Entity(s, x.start + s.start, x.end + s.start, x.type) for s in sentences for x in self.spans.get(s.key, [])]


def sentence_gold(
    sentences: Sequence[Sentence], gold: Sequence[GoldDocument], types: Sequence[str] | None = None, crossing: str = "type"
) -> SentenceGold:
    """Place the mentions of ``types`` (None: every type) of ``gold`` on ``sentences``; ``crossing``
    says which crossing mentions to resolve: ``type`` (same type), ``all`` (any two) or ``none``."""
    if crossing not in ("type", "all", "none"):
        raise ValueError(f"crossing must be type, all or none, got {crossing!r}")
    by_passage: dict[tuple[str, int], list[Span]] = defaultdict(list)
    result = SentenceGold()
    for g in gold:
        for index, span in g.mentions:
            if types is None or span.type in types:
                by_passage[(g.document.doc_id, index)].append(span)
            else:
                result.other_types += 1
    sentences_of: dict[tuple[str, int], list[Sentence]] = defaultdict(list)
    for s in sentences:
        sentences_of[(s.doc_id, s.passage_index)].append(s)
    for key, passage_sentences in sentences_of.items():
        inside: dict[str, list[Span]] = {s.key: [] for s in passage_sentences}
        for span in by_passage.get(key, []):
            home = next((s for s in passage_sentences if s.start <= span.start and span.end <= s.end), None)
            if home is None:
                result.cut.append((key[0], key[1], span))
            else:
                inside[home.key].append(Span(span.start - home.start, span.end - home.start, span.type))
        for s in passage_sentences:
            if crossing == "none":
                kept = sorted(set(inside[s.key]), key=lambda x: (x.start, -x.end, x.type))
            else:  # resolve_crossing keeps them deduplicated in that order
                kept = resolve_crossing(inside[s.key], crossing == "all")
            dropped = set(inside[s.key]) - set(kept)
            result.crossing += [(key[0], key[1], Span(x.start + s.start, x.end + s.start, x.type)) for x in dropped]
            result.spans[s.key] = kept
    placed = set(sentences_of)
    result.cut += [(k[0], k[1], span) for k, spans in by_passage.items() if k not in placed for span in spans]
    return result
