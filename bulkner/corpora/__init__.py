"""Readers of gold-annotated corpora into one in-memory form: documents plus typed passage spans."""

from __future__ import annotations

from dataclasses import dataclass

from bulkner.schema import Document, Span


@dataclass(frozen=True)
class GoldDocument:
    """A document with its gold mentions; each span is ``(passage_index, Span)``, offsets into that passage."""

    document: Document
    mentions: tuple[tuple[int, Span], ...]
