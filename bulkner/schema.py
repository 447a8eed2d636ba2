"""Records that flow between pipeline steps, and the Arrow schemas of the output tables.

Every table's schema is defined here once; the writer, the readers and the README refer to these.
Offsets are Python ``str`` code-point offsets into the passage text (see DESIGN.md, Offsets).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import pyarrow as pa


@dataclass(frozen=True)
class Passage:
    """One contiguous piece of a document's text (title, one abstract section, a caption...)."""

    kind: str
    """PubMed: ``title``, ``abstract``, ``other_abstract``; PMC: ``title``, ``abstract``, ``heading``,
    ``paragraph``, ``caption``, ``footnote``; JSONL/Parquet/plain text: ``text``."""
    text: str
    label: str | None = None
    """Section label as the source gives it (PubMed ``AbstractText/@Label``), else None."""
    category: str | None = None
    """Normalised section category (PubMed ``@NlmCategory``: BACKGROUND, METHODS, ...), else None."""
    language: str | None = None
    """ISO 639 language code where the source states one (``OtherAbstract/@Language``)."""


@dataclass(frozen=True)
class Document:
    """A source record: an identifier, a version and its passages in reading order."""

    doc_id: str
    """Namespaced identifier: ``pmid:12345``, ``pmc:PMC123``, ``text:<name>``."""
    version: int
    passages: tuple[Passage, ...]
    pmid: str | None = None
    """PubMed id (digits) where the source gives one."""
    doi: str | None = None
    """DOI where the source gives one."""
    license: str | None = None
    """The article's licence as the source states it (PMC ``<license>``: its URL or text)."""


@dataclass(frozen=True)
class Tombstone:
    """A deletion notice (PubMed ``DeleteCitation``): the document must be removed downstream."""

    doc_id: str


@dataclass(frozen=True)
class Reject:
    """A record that could not be processed. It is data, written to the rejects table."""

    stage: str
    """Pipeline step that rejected it: ``read``, ``segment``, ``generate``, ``parse``, ..."""
    reason: str
    """Short machine-countable reason (``missing_pmid``, ``unaligned_span``, ...)."""
    record: str
    """Identifier or excerpt of the offending record, enough to find it again."""
    detail: str = ""
    """Human-readable explanation."""


def read_reject(reason: str, record: str, detail: str) -> Reject:
    """A reject of the read stage (connectors)."""
    return Reject(stage="read", reason=reason, record=record, detail=detail)


class Span(NamedTuple):
    """A typed character span ``[start, end)`` of a sentence or passage."""

    start: int
    end: int
    type: str


@dataclass(frozen=True)
class Sentence:
    """A sentence of a passage; ``start``/``end`` are offsets into the passage text."""

    doc_id: str
    doc_version: int
    passage_index: int
    sentence_index: int
    start: int
    end: int
    text: str

    @property
    def key(self) -> str:
        """Stable id of the sentence inside a shard; prompts and generations carry it."""
        return f"{self.doc_id}/{self.passage_index}/{self.sentence_index}"


@dataclass(frozen=True)
class Entity:
    """A kept entity mention; offsets are into the passage text."""

    sentence: Sentence
    start: int
    end: int
    type: str
    score: float = field(default=1.0)
    origin: str = "generator"
    """Where the mention comes from (``ORIGINS``)."""
    concept_id: str | None = None
    """The linked concept, a CURIE (``MESH:D004317``, ``NCBIGene:7157``), or None (``bulkner.linking``)."""
    link_score: float | None = None
    """The linker's score of ``concept_id`` (1.0 for an exact name; a cosine for an approximate
    match, also when it fell under the threshold and no id was given); None when not linked."""

    @property
    def text(self) -> str:
        """The mention: the sentence's characters at ``[start, end)`` (passage offsets)."""
        return self.sentence.text[self.start - self.sentence.start : self.end - self.sentence.start]


ORIGINS = {
    "generator": "the generator's span (kept by the selector, when one runs)",
    "selector": "added by the span selector in a sentence the generator read",
    "classifier": "the span classifier's alone: in a sentence it decided without the generator, or outside the stretch "
                  "of a sentence the generator wrote (--generate uncertain, window)",
    "abbreviation": "a short form the document pass tagged like its long form",
    "propagated": "another occurrence of a name the document tags elsewhere, kept by the span selector",
}
"""The values of the entities table's ``origin`` column."""


DOCUMENTS = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("doc_version", pa.int32(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("passage_index", pa.int32(), nullable=False),
        pa.field("passage_kind", pa.string(), nullable=False),
        pa.field("passage_label", pa.string()),
        pa.field("passage_category", pa.string()),
        pa.field("language", pa.string()),
        pa.field("text", pa.string(), nullable=False),
        pa.field("pmid", pa.string()),
        pa.field("doi", pa.string()),
        pa.field("license", pa.string()),
    ]
)

SENTENCES = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("doc_version", pa.int32(), nullable=False),
        pa.field("passage_index", pa.int32(), nullable=False),
        pa.field("sentence_index", pa.int32(), nullable=False),
        pa.field("start", pa.int32(), nullable=False),
        pa.field("end", pa.int32(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
    ]
)

ENTITIES = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("doc_version", pa.int32(), nullable=False),
        pa.field("passage_index", pa.int32(), nullable=False),
        pa.field("sentence_index", pa.int32(), nullable=False),
        pa.field("start", pa.int32(), nullable=False),
        pa.field("end", pa.int32(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("type", pa.string(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("origin", pa.string()),
        pa.field("concept_id", pa.string()),
        pa.field("link_score", pa.float32()),
    ]
)

TOMBSTONES = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ]
)

REJECTS = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("record", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "documents": DOCUMENTS,
    "sentences": SENTENCES,
    "entities": ENTITIES,
    "tombstones": TOMBSTONES,
    "rejects": REJECTS,
}
"""Output tables in the order they are written; each is ``OUT/<name>/<shard>.parquet``."""
