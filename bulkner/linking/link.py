"""Entity linking: each mention gets a concept id (a CURIE) from the knowledge base, or none.

For a mention of a type the KB holds (``bulkner.linking.kb``), in this order:

1. the *memory*: the normalized mention (``kb.normalize``) was annotated in the training corpora;
   its most frequent id there (score 1);
2. an exact KB name (MeSH term, HGNC symbol or name, a curated organism), the best-ranked (score 1);
3. a memory name with the same ``kb.loose`` form, spaces ignored ("HCT-116" for "HCT116"; score 1);
4. the KB name of the highest character 3-gram TF-IDF cosine (over ``kb.loose`` forms); its id
   when the cosine reaches the type's threshold (calibrated on the training names at build
   time), else none, with that cosine as the score: a null is better than a wrong id.

Genes depend on the species: a gene takes its document's main species (``kb.main_species`` of the
Species mentions linked in the same batch; human when none). The memory is kept per species; the
KB's genes are human (HGNC), so in a document about another species a gene the memory does not
know gets no id rather than its human ortholog's. A short form whose long form the document
defines is linked through its long form (its own text when the long form finds nothing).
Variants: an rs id in the text is ``dbSNP:rs…``; a substitution, deletion, insertion,
duplication or frameshift in a common notation becomes tmVar's normalized form
(``tmVar:p|SUB|V|600|E``, as PubTator writes it); anything else none (after the memory).
Results depend on the mentions of a batch and the KB only.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple, Sequence

from bulkner.linking.abbreviations import document_abbreviations
from bulkner.linking.kb import HUMAN, NO_LINK, KnowledgeBase, Link, identity, main_species, normalize, open_kb
from bulkner.schema import Entity, Sentence

VERSION = "1"
"""Changes whenever the linking rules change; part of the run fingerprint with the KB's id."""
AMINO_ACIDS = {"Ala": "A", "Arg": "R", "Asn": "N", "Asp": "D", "Cys": "C", "Gln": "Q", "Glu": "E", "Gly": "G",
               "His": "H", "Ile": "I", "Leu": "L", "Lys": "K", "Met": "M", "Phe": "F", "Pro": "P", "Ser": "S",
               "Thr": "T", "Trp": "W", "Tyr": "Y", "Val": "V", "Ter": "X", "Stop": "X", "*": "X", "X": "X"}
_ONE = "ACDEFGHIKLMNPQRSTVWY"
_AA = rf"(?:[{_ONE}]|{'|'.join(k for k in AMINO_ACIDS if k not in ('*', 'X'))})"
_POS = r"(?:-?\*?\d+(?:[+-]\d+)?)"
_RS = re.compile(r"(?i)\brs\s?#?\s?(\d+)\b")
_VARIANTS = [
    ("p", "SUB", re.compile(rf"(?:p\.)?\(?(?P<ref>{_AA})\s?(?P<pos>\d+)\s?(?P<alt>{_AA}|\*|X|Ter|Stop)\)?")),
    ("c", "SUB", re.compile(rf"(?:(?P<seq>[cgmnr])\.)?(?P<pos>{_POS})\s?(?P<ref>[ACGTU])\s?(?:>|->|-->|→|/)\s?(?P<alt>[ACGTU])")),
    ("c", "SUB", re.compile(rf"(?:(?P<seq>[cgmnr])\.)?(?P<ref>[ACGTU])\s?(?P<pos>{_POS})\s?(?:>|->|→)?\s?(?P<alt>[ACGTU])")),
    ("c", "DEL", re.compile(rf"(?:(?P<seq>[cgmnr])\.)?(?P<pos>{_POS}(?:_{_POS})?)\s?del(?P<ref>[ACGTU]*|\d+)")),
    ("c", "INS", re.compile(rf"(?:(?P<seq>[cgmnr])\.)?(?P<pos>{_POS}(?:_{_POS})?)\s?ins(?P<alt>[ACGTU]+)")),
    ("c", "DUP", re.compile(rf"(?:(?P<seq>[cgmnr])\.)?(?P<pos>{_POS}(?:_{_POS})?)\s?dup(?P<alt>[ACGTU]*)")),
    ("p", "FS", re.compile(rf"(?:p\.)?(?P<ref>{_AA})(?P<pos>\d+)(?:{_AA})?fs(?:\*?\d+|X\d*)?")),
]
"""Variant notations: (default sequence, kind, pattern over the whole mention); the first that
matches wins (``A53T`` reads as a protein change: tmVar's corpora disagree on such ambiguous ones)."""


class Mention(NamedTuple):
    """A mention to link: its type, its text, the long form when it is a defined short form, and
    its document (any key; it lets genes take the document's species)."""

    type: str
    text: str
    long_form: str | None = None
    document: str | None = None


def variant_id(text: str) -> str | None:
    """``dbSNP:rs…`` for an rs id in ``text``, tmVar's normalized form for a common notation, else None."""
    rs = _RS.search(text)
    if rs:
        return f"dbSNP:rs{rs.group(1)}"
    text = " ".join(text.split())
    for default, kind, pattern in _VARIANTS:
        found = pattern.fullmatch(text)
        if found is None:
            continue
        parts = found.groupdict()
        seq = parts.get("seq") or default
        ref, alt = (AMINO_ACIDS.get(parts.get(k) or "", parts.get(k) or "") for k in ("ref", "alt"))
        if default == "c":
            ref, alt = (parts.get("ref") or "").replace("U", "T"), (parts.get("alt") or "").replace("U", "T")
        form = {"SUB": f"{seq}|SUB|{ref}|{parts['pos']}|{alt}", "DEL": f"{seq}|DEL|{parts['pos']}|{ref}",
                "INS": f"{seq}|INS|{parts['pos']}|{alt}", "DUP": f"{seq}|DUP|{parts['pos']}|{alt}|",
                "FS": f"p|FS|{ref}|{parts['pos']}||"}[kind]
        return f"tmVar:{form}"
    return None


def candidate(kb: KnowledgeBase, kind: str, text: str, taxon: str = HUMAN, memory: bool = True) -> Link:
    """The best concept for ``text`` as a ``kind`` name before any threshold: variants by the
    memory then ``variant_id``, the other types by ``KnowledgeBase.lookup``."""
    if kind != "Variant":
        return kb.lookup(kind, text, taxon, memory)
    concept = kb.remembered(kind, normalize(text)) if memory else None
    if concept is not None:
        return Link(concept, 1.0, "memory")
    concept = variant_id(text)
    return Link(concept, 1.0, "variant") if concept else NO_LINK


class Linker:
    """Links batches of mentions with one knowledge base (``kb``: a KB directory; None: the
    default KB, built into the cache on first use). ``setup()`` opens it and loads the tables of
    ``types`` (a worker's, before its first shard); others load on first use. ``link`` is deterministic."""

    def __init__(self, kb: str | Path | None = None, types: Sequence[str] = ()):
        self.kb_dir = kb
        self.types = tuple(types)
        self.kb: KnowledgeBase | None = None

    def setup(self) -> None:
        if self.kb is None:
            self.kb = open_kb(self.kb_dir)
            self.kb.load(self.types)

    def fingerprint(self) -> dict:
        """The linker's identity for the run fingerprint: its ``VERSION`` and the KB's name, version
        and id (the default KB's id from its sources: nothing is built)."""
        return {"linker": VERSION, "kb": self.kb.fingerprint() if self.kb is not None else identity(self.kb_dir)}

    def link(self, mentions: Sequence[Mention]) -> list[Link]:
        """One ``Link`` per mention, in order. Genes of a document (``Mention.document``) take its
        main species (``kb.main_species`` of its Species mentions' links in this batch, so a
        batch should hold whole documents); genes without a document are human."""
        self.setup()
        found: dict[tuple, Link] = {}
        links: list[Link | None] = [None] * len(mentions)
        species: dict[str, list[str]] = defaultdict(list)
        for i, m in enumerate(mentions):
            if m.type != "Gene":
                links[i] = self._cached(found, m, HUMAN)
                if m.type == "Species" and m.document is not None and links[i].concept is not None:
                    species[m.document].append(links[i].concept)
        for i, m in enumerate(mentions):
            if m.type == "Gene":
                links[i] = self._cached(found, m, main_species(species[m.document]) if m.document is not None else HUMAN)
        return links

    def _cached(self, found: dict[tuple, Link], m: Mention, taxon: str) -> Link:
        key = (m.type, m.text, m.long_form, taxon)
        if key not in found:
            found[key] = self._link(m, taxon)
        return found[key]

    def _link(self, m: Mention, taxon: str) -> Link:
        if m.long_form:
            result = self._accept(m.type, candidate(self.kb, m.type, m.long_form, taxon))
            if result.concept is not None:
                return result
        return self._accept(m.type, candidate(self.kb, m.type, m.text, taxon))

    def _accept(self, kind: str, link: Link) -> Link:
        if link.stage == "approximate" and link.score < self.kb.thresholds.get(kind, 1.0):
            return Link(None, link.score, link.stage)
        return link


def link_entities(linker: Linker, sentences: Sequence[Sentence], entities: Sequence[Entity]) -> tuple[list[Entity], Counter]:
    """``entities`` (of whole documents, whose ``sentences`` these are) with their concept ids and
    link scores, in order; a short form its document defines is linked through its long form.
    Counts: ``linked`` and ``unlinked`` mentions."""
    by_doc: dict[str, list[Sentence]] = defaultdict(list)
    for s in sentences:
        by_doc[s.doc_id].append(s)
    long_forms = {}
    for doc_id, own in by_doc.items():
        for short, (s, a) in document_abbreviations(own).items():
            long_forms[doc_id, short] = s.text[a.long_start - s.start : a.long_end - s.start]
    mentions = []
    for e in entities:
        mentions.append(Mention(e.type, e.text, long_forms.get((e.sentence.doc_id, e.text)), e.sentence.doc_id))
    links = linker.link(mentions)
    counts = Counter("linked" if link.concept else "unlinked" for link in links)
    return [replace(e, concept_id=link.concept, link_score=link.score if link.stage != "none" else None)
            for e, link in zip(entities, links)], counts
