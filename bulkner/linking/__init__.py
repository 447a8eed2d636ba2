"""Document-level steps after the selector: names propagated, abbreviations made consistent,
entities linked to ids."""

from __future__ import annotations

from typing import Sequence

from bulkner.schema import Entity, Sentence


def by_document(sentences: Sequence[Sentence], entities: Sequence[Entity]) -> list[tuple[list[Sentence], list[Entity]]]:
    """A batch of whole documents, one ``(its sentences, its entities)`` per document in the order
    ``sentences`` first name them; ValueError for entities of a document without sentences."""
    groups: dict[str, tuple[list[Sentence], list[Entity]]] = {}
    for s in sentences:
        groups.setdefault(s.doc_id, ([], []))[0].append(s)
    strays = sorted({e.sentence.doc_id for e in entities if e.sentence.doc_id not in groups})
    if strays:
        raise ValueError(f"entities of documents without sentences: {strays[:3]}")
    for e in entities:
        groups[e.sentence.doc_id][1].append(e)
    return list(groups.values())
