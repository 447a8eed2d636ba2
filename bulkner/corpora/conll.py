"""CoNLL-style IOB files (``token<TAB>tag`` a line, blank lines between sentences, ``-DOCSTART-``
lines between documents), as distributed in ``conll/*.tsv`` of each corpus.

Each sentence becomes document ``<prefix>:<index>`` (0-based sentence position in the file; the
document header lines only separate sentences) with one ``text`` passage: the tokens joined by single
spaces. The original spacing is unknown, so these offsets are into that rebuilt text.

Tags: ``O``, ``B-X`` and ``I-X``. Both IOB2 and IOB1 are read: an ``I-X`` that does not continue
an ``X`` mention (after ``O``, at a sentence start, or after another type) starts one. ``S-X`` and
``E-X`` (IOBES) are read as ``B-X`` and ``I-X``. With more than two columns the first is the token
and the last the tag.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, Mapping

from bulkner.corpora import GoldDocument
from bulkner.corpora.corpus import Corpus, Problem, place
from bulkner.schema import Document, Passage, Span

log = logging.getLogger(__name__)

CONLL_TYPES = {"GENE": "Gene", "protein": "Gene", "cell_type": "CellType", "cell_line": "CellLine"}
"""Type names of the corpora's CoNLL files that differ from our model type names."""

_SEPARATORS = ("-DOCSTART-", "###MEDLINE:")
"""Document header lines (CoNLL, JNLPBA's ``Genia4EReval2.iob2``); they only separate sentences."""

_Token = tuple[str, str, int]
"""Token, tag and line number."""


def _sentences(path: Path) -> Iterator[list[_Token]]:
    """Sentences of a CoNLL file as lists of ``(token, tag, line number)``."""
    sentence: list[_Token] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith(_SEPARATORS):
            if sentence:
                yield sentence
            sentence = []
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise ValueError(f"{path}:{number}: expected 'token<TAB>tag', got {line[:80]!r}")
        sentence.append((fields[0], fields[-1].strip(), number))
    if sentence:
        yield sentence


def iob_spans(tags: list[str], where: str = "") -> list[tuple[int, int, str]]:
    """Token spans ``(first, stop, type)`` (``stop`` exclusive) of an IOB1/IOB2/IOBES tag sequence."""
    spans: list[tuple[int, int, str]] = []
    open_start, open_type = -1, ""
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, kind = tag.partition("-")
        if tag != "O" and (prefix not in ("B", "I", "S", "E") or not kind):
            raise ValueError(f"{where}: bad IOB tag {tag!r}")
        continues = prefix in ("I", "E") and kind == open_type
        if open_type and not continues:
            spans.append((open_start, i, open_type))
            open_type = ""
        if tag != "O" and not continues:
            open_start, open_type = i, kind
    return spans


def _document(
    sentence: list[_Token], doc_id: str, path: Path, type_map: Mapping[str, str]
) -> tuple[GoldDocument, list[Problem]]:
    """One sentence as a gold document, plus any span that could not be placed."""
    tokens = [token for token, _, _ in sentence]
    starts, pos = [], 0
    for token in tokens:
        starts.append(pos)
        pos += len(token) + 1
    text = " ".join(tokens)
    placed: list[Span] = []
    problems: list[Problem] = []
    for first, stop, kind in iob_spans([tag for _, tag, _ in sentence], f"{path}:{sentence[0][2]}"):
        result = place(doc_id, text, starts[first], starts[stop - 1] + len(tokens[stop - 1]), type_map.get(kind, kind))
        (problems if isinstance(result, Problem) else placed).append(result)
    document = Document(doc_id, 1, (Passage("text", text),))
    return GoldDocument(document, tuple((0, span) for span in placed)), problems


def read_conll(path: str | Path, type_map: Mapping[str, str] | None = None, prefix: str = "conll") -> Corpus:
    """Every sentence of a CoNLL IOB file as a one-passage document, in file order."""
    path = Path(path)
    documents: list[GoldDocument] = []
    problems: list[Problem] = []
    for index, sentence in enumerate(_sentences(path)):
        document, issues = _document(sentence, f"{prefix}:{index}", path, type_map or {})
        documents.append(document)
        problems += issues
    for problem in problems:
        log.warning("CoNLL %s: %s (%s)", problem.record, problem.reason, problem.detail)
    return Corpus(documents, tuple(problems))
