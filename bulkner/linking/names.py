"""Name propagation: a name a document tags in one place is proposed wherever else it occurs.

Abstracts repeat their names ("BRCA1", "Psoriasin", "K329X"), and the tagger misses some repeats
that it finds elsewhere in the same document. :func:`propose` lists, for one document, each
whole-token, case-sensitive occurrence of a tagged name that no entity overlaps, with the type the
document gives that name most often. Proposals are not entities yet: the span selector scores each
like a generator span and keeps those at its calibrated keep threshold (``Tagger.finish_documents``),
so a name that is an entity in one sentence and a plain word in another ("tumor", "MS") is not
tagged blindly. Measured on the development sets in docs/results.md.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Sequence

from bulkner.schema import Entity, Sentence

VERSION = "1"
"""Changes whenever the rules of :func:`propose` change; part of the run fingerprint."""
MIN_CHARS = 2
"""Shorter names are not propagated (a one-letter name is rarely the same entity twice)."""


def propose(sentences: Sequence[Sentence], entities: Sequence[Entity]) -> list[Entity]:
    """One document's proposals (``origin="propagated"``, score 0.0) in reading order: ``sentences``
    are all of its sentences, ``entities`` its entities. A name's type is the one most of its
    entities have (ties: the higher summed score, then the type name). No proposal overlaps an
    entity; proposals may overlap each other ("BRCA1 abnormalities" and its "BRCA1"): once scored,
    :func:`resolve` keeps one of each overlapping group."""
    votes: dict[str, Counter] = defaultdict(Counter)
    for e in entities:
        votes[e.text][e.type, "n"] += 1
        votes[e.text][e.type, "score"] += e.score
    taken: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for e in entities:
        taken[e.sentence.key].append((e.start, e.end))
    proposals: list[Entity] = []
    ordered = sorted(sentences, key=lambda s: (s.passage_index, s.sentence_index))
    for name, vote in votes.items():
        if len(name) < MIN_CHARS:
            continue
        kind = max({t for t, _ in vote}, key=lambda t: (vote[t, "n"], vote[t, "score"], t))
        for sentence in ordered:
            for at in occurrences(name, sentence.text):
                start, end = sentence.start + at, sentence.start + at + len(name)
                if not any(start < b and a < end for a, b in taken[sentence.key]):
                    proposals.append(Entity(sentence, start, end, kind, 0.0, "propagated"))
    return sorted(proposals, key=lambda e: (e.sentence.passage_index, e.start, e.end))


def resolve(kept: Sequence[Entity]) -> list[Entity]:
    """The proposals the selector kept, none overlapping another: the longest first ("BRCA1
    abnormalities" over its "BRCA1"), then the higher score; in reading order."""
    chosen: dict[str, list[Entity]] = defaultdict(list)
    for e in sorted(kept, key=lambda e: (e.start - e.end, -e.score, e.sentence.passage_index, e.start)):
        if not any(e.start < o.end and o.start < e.end for o in chosen[e.sentence.key]):
            chosen[e.sentence.key].append(e)
    return sorted((e for group in chosen.values() for e in group), key=lambda e: (e.sentence.passage_index, e.start, e.end))


def occurrences(name: str, text: str) -> list[int]:
    """Starts of ``name`` in ``text`` that split no word: no letter or digit joins its first
    character when that is one ("IL1B" not in "pIL1B"), nor its last ("-31TT" in "IL1B-31TT")."""
    found, at = [], text.find(name)
    while at >= 0:
        end = at + len(name)
        if not (name[0].isalnum() and at > 0 and text[at - 1].isalnum()) and not (name[-1].isalnum() and end < len(text) and text[end].isalnum()):
            found.append(at)
        at = text.find(name, at + 1)
    return found
