"""BioCreative II Gene Mention (BC2GM) original files: ``<split>.in`` and ``GENE.eval``.

``train.in`` holds one sentence a line, ``SENTID text``. ``GENE.eval`` lines are
``SENTID|start end|mention`` where offsets count **non-whitespace** characters from 0 and the end
is inclusive; they are mapped here to code-point offsets ``[start, end)``. Each sentence becomes one
document ``bc2gm:<SENTID>`` with one passage (kind ``title`` for ``...T...`` ids, ``abstract`` for
``...A...`` ids, else ``text``); every mention has type ``GENE`` (map it with ``type_map``).

``ALTGENE.eval`` (acceptable alternative boundaries, used by the official scorer) is not read:
these gold spans are the primary ``GENE`` ones only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

from bulkner.corpora import GoldDocument
from bulkner.corpora.corpus import Corpus, Problem, place
from bulkner.schema import Document, Passage, Span

log = logging.getLogger(__name__)

GENE = "GENE"
"""The one BC2GM mention type."""


def _sentences(path: Path) -> dict[str, str]:
    """``SENTID -> text`` in file order; the text is everything after the first space."""
    sentences: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        sent_id, sep, text = line.partition(" ")
        if not sep or not text.strip():
            raise ValueError(f"{path}:{number}: expected 'SENTID text', got {line[:80]!r}")
        if sent_id in sentences:
            raise ValueError(f"{path}:{number}: sentence id {sent_id} appears twice")
        sentences[sent_id] = text
    return sentences


def non_space_offsets(text: str) -> list[int]:
    """Code-point offset of each non-whitespace character of ``text``, in order."""
    return [i for i, ch in enumerate(text) if not ch.isspace()]


def _passage_kind(sent_id: str) -> str:
    kind = sent_id[9:10] if len(sent_id) == 14 else ""
    return {"T": "title", "A": "abstract"}.get(kind, "text")


def _mention(line: str, sentences: Mapping[str, str], where: str, kind: str) -> tuple[str, Span | Problem]:
    """Parse one ``GENE.eval`` line into its sentence id and a span (or the problem placing it)."""
    try:
        sent_id, offsets, mention = line.split("|", 2)
        first, last = (int(x) for x in offsets.split())
    except ValueError as err:
        raise ValueError(f"{where}: expected 'SENTID|start end|mention', got {line[:80]!r}") from err
    text = sentences.get(sent_id)
    if text is None:
        return sent_id, Problem(f"bc2gm:{sent_id}", "unknown_sentence", f"{where}: no such sentence id")
    index = non_space_offsets(text)
    if not 0 <= first <= last < len(index):
        detail = f"{where}: non-space offsets {first}..{last} outside {len(index)} characters"
        return sent_id, Problem(f"bc2gm:{sent_id}", "out_of_range", detail)
    return sent_id, place(f"bc2gm:{sent_id}", text, index[first], index[last] + 1, kind, mention)


def _paths(path: Path, genes: str | Path | None) -> tuple[Path, Path]:
    """The sentence file and the gene file for ``path`` (a split directory or its ``.in`` file)."""
    if path.is_dir():
        inputs = sorted(path.glob("*.in"))
        if len(inputs) != 1:
            raise ValueError(f"{path}: expected exactly one *.in sentence file, found {len(inputs)}")
        path = inputs[0]
    gene_path = Path(genes) if genes is not None else path.with_name("GENE.eval")
    if not path.is_file() or not gene_path.is_file():
        raise ValueError(f"BC2GM needs {path} and {gene_path}; one of them is missing")
    return path, gene_path


def read_bc2gm(
    path: str | Path, genes: str | Path | None = None, type_map: Mapping[str, str] | None = None
) -> Corpus:
    """One document per sentence of a BC2GM split, in ``.in`` file order, with its ``GENE`` mentions.

    ``path`` is the split directory (holding one ``*.in`` file and ``GENE.eval``) or the ``.in``
    file itself; ``genes`` overrides the mention file. Mentions whose text differs from the mapped
    span are reported as ``text_mismatch`` problems, not kept.
    """
    sentence_path, gene_path = _paths(Path(path), genes)
    sentences = _sentences(sentence_path)
    kind = (type_map or {}).get(GENE, GENE)
    spans: dict[str, list[Span]] = {sent_id: [] for sent_id in sentences}
    problems: list[Problem] = []
    for number, line in enumerate(gene_path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            sent_id, result = _mention(line, sentences, f"{gene_path.name}:{number}", kind)
            if isinstance(result, Problem):
                problems.append(result)
            else:
                spans[sent_id].append(result)
    documents = [
        GoldDocument(
            Document(f"bc2gm:{sent_id}", 1, (Passage(_passage_kind(sent_id), text),)),
            tuple((0, span) for span in spans[sent_id]),
        )
        for sent_id, text in sentences.items()
    ]
    for problem in problems:
        log.warning("BC2GM %s: %s (%s)", problem.record, problem.reason, problem.detail)
    return Corpus(documents, tuple(problems))
