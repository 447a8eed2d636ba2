"""One entry point for every gold corpus format: ``read_corpus(fmt, path)`` gives a ``Corpus``.

By default mention types come out as the model's type names (``Chemical``, ``Disease``,
``Gene``, ``DNA``, ``RNA``, ``CellType``, ``CellLine``; CMeEE keeps its nine codes). Pass
``type_map={}`` to keep each corpus's own names, or a mapping of your own.

| format | path | documents |
|---|---|---|
| ``pubtator`` | NCBI-disease / BC5CDR ``.txt`` | one per abstract (title, abstract) |
| ``bc2gm`` | BC2GM split directory (``*.in`` + ``GENE.eval``) or its ``.in`` | one per sentence |
| ``brat`` | JNLPBA ``standoff-*.tar.gz`` or a directory of ``.txt``/``.ann`` | one per ``.txt`` |
| ``genia-xml`` | ``GENIAcorpus3.02.tgz`` or its ``.xml`` | one per article (nested) |
| ``genia-json`` | ``genia_test.json`` | one per ``org_id``, a passage per sentence (nested) |
| ``cmeee`` | ``CMeEE-V2_dev.json`` | one per sentence |
| ``conll`` | ``conll/*.tsv``, JNLPBA ``*.iob2`` | one per sentence |
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

from bulkner.corpora import GoldDocument
from bulkner.corpora.bc2gm import read_bc2gm
from bulkner.corpora.brat import JNLPBA_TYPES, S800_TYPES, read_brat
from bulkner.corpora.cmeee import read_cmeee
from bulkner.corpora.conll import CONLL_TYPES, read_conll
from bulkner.corpora.corpus import Corpus, Problem, place
from bulkner.corpora.genia import read_genia_json, read_genia_xml
from bulkner.corpora.pubtator import NCBI_DISEASE_TYPES, PUBTATOR_TYPES, read_pubtator
from bulkner.schema import Span

Reader = Callable[..., Corpus]
"""``reader(path, type_map=None) -> Corpus``."""


def checked(documents: list[GoldDocument]) -> Corpus:
    """A corpus of ``documents`` keeping only mentions that are non-empty slices of their passage.

    Each other mention (bad passage index, offsets outside the passage) becomes a problem.
    """
    kept: list[GoldDocument] = []
    problems: list[Problem] = []
    for gold in documents:
        passages = gold.document.passages
        mentions: list[tuple[int, Span]] = []
        for index, span in gold.mentions:
            text = passages[index].text if 0 <= index < len(passages) else ""
            result = place(gold.document.doc_id, text, span.start, span.end, span.type)
            if isinstance(result, Problem):
                problems.append(result)
            else:
                mentions.append((index, result))
        kept.append(gold if len(mentions) == len(gold.mentions) else GoldDocument(gold.document, tuple(mentions)))
    return Corpus(kept, tuple(problems))


def _pubtator(path: str | Path, type_map: Mapping[str, str] | None = None) -> Corpus:
    """PubTator documents as a ``Corpus`` (the reader itself returns a plain list)."""
    return checked(read_pubtator(path, type_map))


FORMATS: dict[str, Reader] = {
    "pubtator": _pubtator,
    "bc2gm": read_bc2gm,
    "brat": read_brat,
    "genia-xml": read_genia_xml,
    "genia-json": read_genia_json,
    "cmeee": read_cmeee,
    "conll": read_conll,
}
"""Reader of each format."""

DEFAULT_TYPE_MAPS: dict[str, Mapping[str, str]] = {
    "pubtator": PUBTATOR_TYPES,
    "bc2gm": {"GENE": "Gene"},
    "brat": {**JNLPBA_TYPES, **S800_TYPES},
    "genia-xml": JNLPBA_TYPES,
    "genia-json": JNLPBA_TYPES,
    "cmeee": {},
    "conll": {**CONLL_TYPES, **NCBI_DISEASE_TYPES},
}
"""Corpus type name → model type name, per format (names not listed are kept)."""


def read_corpus(fmt: str, path: str | Path, type_map: Mapping[str, str] | None = None) -> Corpus:
    """Read a gold corpus of format ``fmt``; ``type_map`` None means the format's default map."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown corpus format {fmt!r}; formats are {', '.join(FORMATS)}")
    if not Path(path).exists():
        raise ValueError(f"corpus path {path} does not exist")
    return FORMATS[fmt](path, type_map=DEFAULT_TYPE_MAPS[fmt] if type_map is None else type_map)
