"""BRAT standoff (JNLPBA ``standoff-*.tar.gz``): ``<id>.txt`` plus ``<id>.ann``, from a tar or a directory.

Only text-bound lines are read: ``T1<TAB>type start end[;start end...]<TAB>text``; other
annotation lines (relations, events, attributes, notes) are counted as skipped. Offsets are
code points into the ``.txt`` file.

Passages follow the PubMed layout: the first line is the title (passage 0) and each further
non-empty line is an ``abstract`` passage. A line like ``OBJECTIVE:`` (upper case, ending in a
colon, holding no mention) followed by a text line is not a passage of its own but the ``label``
of the next one, as PubMed's ``AbstractText/@Label`` would be. Offsets are moved into the passage.

A **discontinuous** span (``s1 e1;s2 e2``) is not guessed at: it is reported as a
``discontinuous`` problem and left out (the covering span would include words that are not part of
the mention). A mention that crosses a line break is a ``crosses_passages`` problem.
"""

from __future__ import annotations

import logging
import re
import tarfile
from pathlib import Path, PurePosixPath
from typing import Iterator, Mapping

from bulkner.corpora import GoldDocument
from bulkner.corpora.corpus import Corpus, Problem, place
from bulkner.schema import Document, Passage, Span

log = logging.getLogger(__name__)

JNLPBA_TYPES = {"protein": "Gene", "DNA": "DNA", "RNA": "RNA", "cell_type": "CellType", "cell_line": "CellLine"}
"""JNLPBA / GENIA class names to our model type names."""
S800_TYPES = {t: "Species" for t in ("Species", "Strain", "Genus", "Family", "Order", "Class", "Phylum", "Kingdom")}
"""S800's taxon ranks all count as Species (BioRED's OrganismTaxon also covers higher taxa);
its ``Out-of-scope`` label (taxon-like words its guidelines leave out: "fish", "algal") keeps its name."""

_LABEL = re.compile(r"[A-Z][A-Z0-9 ,&/()'-]*:")

_Mention = tuple[str, list[tuple[int, int]], str, str]
"""Annotation id, fragments ``(start, end)``, type and stated text."""


def _lines(text: str) -> list[tuple[int, str]]:
    """``(offset, line)`` for each non-empty line of ``text``."""
    out, offset = [], 0
    for line in text.split("\n"):
        if line.strip():
            out.append((offset, line))
        offset += len(line) + 1
    return out


def parse_ann(ann: str, where: str) -> tuple[list[_Mention], dict[str, int]]:
    """Text-bound annotations of an ``.ann`` file, and counts of the other lines by kind."""
    mentions: list[_Mention] = []
    skipped: dict[str, int] = {}
    for number, line in enumerate(ann.splitlines(), 1):
        if not line.strip():
            continue
        if not line.startswith("T"):
            key = f"ann_{line[0]}"
            skipped[key] = skipped.get(key, 0) + 1
            continue
        try:
            ann_id, spec, text = line.split("\t", 2)
            kind, _, ranges = spec.partition(" ")
            fragments = [(int(a), int(b)) for a, b in (r.split() for r in ranges.split(";"))]
        except ValueError as err:
            raise ValueError(f"{where}:{number}: bad text-bound line {line[:80]!r}") from err
        mentions.append((ann_id, fragments, kind, text))
    return mentions, skipped


def _passages(text: str, mentions: list[_Mention]) -> list[tuple[int, Passage]]:
    """``(offset, passage)`` for the title line and the abstract lines, labels folded in."""
    starts = {start for _, fragments, _, _ in mentions for start, _ in fragments}
    lines = _lines(text)
    out: list[tuple[int, Passage]] = []
    label = None
    for i, (offset, line) in enumerate(lines):
        is_label = (
            i > 0
            and i + 1 < len(lines)
            and _LABEL.fullmatch(line.strip()) is not None
            and not any(offset <= s < offset + len(line) for s in starts)
        )
        if is_label:
            label = line.strip()[:-1]
            continue
        out.append((offset, Passage("title" if i == 0 else "abstract", line, label)))
        label = None
    return out


def _place(
    doc_id: str, flat: str, passages: list[tuple[int, Passage]], mention: _Mention, type_map: Mapping[str, str]
) -> tuple[int, Span] | Problem:
    """``(passage_index, span)`` of one mention, or the problem placing it.

    ``flat`` is the document text with line breaks as spaces, as BRAT writes a mention's text.
    """
    ann_id, fragments, kind, stated = mention
    record = f"{doc_id}#{ann_id}"
    if len(fragments) != 1:
        return Problem(record, "discontinuous", f"{kind} fragments {fragments} ({stated!r})")
    start, end = fragments[0]
    checked = place(record, flat, start, end, kind, stated)
    if isinstance(checked, Problem):
        return checked
    for index, (offset, passage) in enumerate(passages):
        if offset <= start and end <= offset + len(passage.text):
            return index, Span(start - offset, end - offset, type_map.get(kind, kind))
    return Problem(record, "crosses_passages", f"{kind} [{start}, {end}) {stated!r} spans a line break")


def brat_document(doc_id: str, text: str, ann: str, type_map: Mapping[str, str] | None = None) -> Corpus:
    """One BRAT document (its ``.txt`` and ``.ann`` contents) as a one-document corpus."""
    mentions, skipped = parse_ann(ann, doc_id)
    passages = _passages(text, mentions)
    placed, problems = [], []
    flat = text.replace("\n", " ")
    for mention in mentions:
        result = _place(doc_id, flat, passages, mention, type_map or {})
        (problems if isinstance(result, Problem) else placed).append(result)
    document = Document(doc_id, 1, tuple(p for _, p in passages))
    return Corpus([GoldDocument(document, tuple(placed))], tuple(problems), skipped)


def _pairs_from_tar(path: Path) -> Iterator[tuple[str, str | None, str | None]]:
    """``(stem, txt, ann)`` per ``.txt`` member of a tar archive, in archive order."""
    texts: dict[str, str] = {}
    anns: dict[str, str] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            name = PurePosixPath(member.name)
            if member.isfile() and name.suffix in (".txt", ".ann"):
                data = tar.extractfile(member).read().decode("utf-8")  # type: ignore[union-attr]
                (texts if name.suffix == ".txt" else anns)[str(name.with_suffix(""))] = data
    for stem, text in texts.items():
        yield stem, text, anns.get(stem)


def _pairs_from_dir(path: Path) -> Iterator[tuple[str, str | None, str | None]]:
    """``(stem, txt, ann)`` per ``.txt`` file under a directory, in sorted path order."""
    for txt in sorted(path.rglob("*.txt")):
        ann = txt.with_suffix(".ann")
        annotations = ann.read_text(encoding="utf-8") if ann.is_file() else None
        yield str(txt.with_suffix("")), txt.read_text(encoding="utf-8"), annotations


def read_brat(path: str | Path, type_map: Mapping[str, str] | None = None, prefix: str = "brat") -> Corpus:
    """Every ``.txt``/``.ann`` pair of a tar archive or a directory; doc ids are ``<prefix>:<file stem>``.

    A ``.txt`` without an ``.ann`` is a ``missing_ann`` problem and its document is left out.
    """
    path = Path(path)
    if path.is_dir():
        pairs = _pairs_from_dir(path)
    elif path.is_file() and tarfile.is_tarfile(path):
        pairs = _pairs_from_tar(path)
    else:
        raise ValueError(f"{path}: BRAT input must be a directory or a tar archive of .txt/.ann files")
    documents: list[GoldDocument] = []
    problems: list[Problem] = []
    skipped: dict[str, int] = {}
    for stem, text, ann in pairs:
        doc_id = f"{prefix}:{PurePosixPath(stem).name}"
        if ann is None:
            problems.append(Problem(doc_id, "missing_ann", f"{stem}.txt has no .ann file"))
            continue
        one = brat_document(doc_id, text, ann, type_map)
        documents += one.documents
        problems += one.problems
        for key, n in one.skipped.items():
            skipped[key] = skipped.get(key, 0) + n
    for problem in problems:
        log.warning("BRAT %s: %s (%s)", problem.record, problem.reason, problem.detail)
    return Corpus(documents, tuple(problems), skipped)
