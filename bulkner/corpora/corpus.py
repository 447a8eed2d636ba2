"""What every gold reader returns: the documents, the annotations it could not place, and what it left out.

Two kinds of loss are kept apart. A **problem** is an annotation the reader could not place (its
offsets fall outside the text, its text differs from the span, it is discontinuous...): data
errors, one ``Problem`` each. A **skip** is an annotation left out on purpose by the reader's
policy (a GENIA ``sem`` outside the five evaluated classes, a BRAT relation line): only counted,
by reason. Nothing disappears silently.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from bulkner.corpora import GoldDocument
from bulkner.schema import Span


@dataclass(frozen=True)
class Problem:
    """One annotation (or record) a reader could not place."""

    record: str
    """Where: the document id, or ``file:line`` before a document exists."""
    reason: str
    """Short countable reason: ``text_mismatch``, ``out_of_range``, ``discontinuous``, ..."""
    detail: str = ""


@dataclass(frozen=True)
class Corpus:
    """Gold documents in file order, plus the problems met and the deliberate skips by reason."""

    documents: Sequence[GoldDocument]
    problems: Sequence[Problem] = ()
    skipped: Mapping[str, int] = field(default_factory=dict)

    def type_counts(self) -> Counter[str]:
        """Number of mentions per type over all documents."""
        return Counter(span.type for doc in self.documents for _, span in doc.mentions)

    def problem_counts(self) -> Counter[str]:
        """Number of problems per reason."""
        return Counter(p.reason for p in self.problems)


def place(record: str, text: str, start: int, end: int, kind: str, expected: str | None = None) -> Span | Problem:
    """The span ``[start, end)`` of ``text`` typed ``kind``, or the problem that stops it being placed.

    A span must be a non-empty slice of ``text`` and, when the annotation states its text
    (``expected``), that slice must equal it exactly.
    """
    if not 0 <= start < end <= len(text):
        return Problem(record, "out_of_range", f"{kind} [{start}, {end}) outside text of length {len(text)}")
    if expected is not None and text[start:end] != expected:
        found = text[start:end]
        return Problem(record, "text_mismatch", f"{kind} [{start}, {end}) is {found!r}, annotation says {expected!r}")
    return Span(start, end, kind)
