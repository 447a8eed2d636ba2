"""JNLPBA's cell_line mentions cut to BioRED's CellLine convention, as a PubTator file.

BioRED (and tmVar3) mark the cell line's name alone (``Jurkat``, ``HCT-116``); JNLPBA marks the
phrase (``Jurkat T cells``, ``human monocytic cell line``). This keeps the name: leading lowercase
words and trailing lowercase words, single letters and ``T-cell``-like words are cut; what is left
must be one to three words with a capital letter or a digit, no plural acronym (``HUVECs``,
``LCLs``: primary cells or a class, not a line), no cell type (``CD4+``, ``Th2``, ``NK``) and no
lowercase tail (``EBV-transformed``, ``T-lymphocyte``), else the mention is dropped as generic. A document whose
cell_line mention leaves more than three words is not written (a name might stay unmarked). Only
CellLine is written; train with the source's types set to CellLine so nothing else is a negative.

    python scripts/jnlpba_celllines.py ../shared/data/ner/jnlpba/standoff-train.tar.gz \\
        --out runs/data/jnlpba-train-cellline.PubTator
"""

from __future__ import annotations

import argparse
import json
import re
import tarfile
from collections import Counter
from pathlib import Path

TRAILING = re.compile(r"^(?:[A-Za-z]|[A-Z]-cells?|[a-z][\w-]*)$")  # "T", "T-cell", "cells", "line"
NAME = re.compile(r"[A-Z0-9]")
PLURAL_ACRONYM = re.compile(r"^[A-Z0-9-]+s$")
CELL_TYPE = re.compile(r"^(?:CD\d+\+?|Th\d*|NK|APL|MM|LCL)$|-[a-z]{3,}$")
UNSURE = "unsure"


def cut(text: str) -> tuple[int, int] | str | None:
    """The name's (start, end) inside a cell_line mention, None when it names no line, or
    UNSURE when more than three words are left."""
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    while words and text[words[0][0] : words[0][1]].islower():
        words.pop(0)
    while words and TRAILING.match(text[words[-1][0] : words[-1][1]]):
        words.pop()
    if len(words) > 3 or any(text[a:b] == "and" for a, b in words):
        return UNSURE
    if words:  # "(U937)": the name without its brackets
        words[0] = (words[0][0] + (text[words[0][0]] == "("), words[0][1])
        words[-1] = (words[-1][0], words[-1][1] - (text[words[-1][1] - 1] in ")],;:."))
    name = text[words[0][0] : words[-1][1]] if words else ""
    if not NAME.search(name) or len(name) < 2 or any(PLURAL_ACRONYM.match(w) or CELL_TYPE.search(w) for w in name.split()):
        return None
    return words[0][0], words[-1][1]


def documents(archive: Path):
    """(pmid, text, [(start, end, text)] of cell_line mentions) per standoff document."""
    with tarfile.open(archive) as tar:
        members = {Path(m.name): m for m in tar.getmembers() if m.isfile()}
        for path in sorted(p for p in members if p.suffix == ".txt"):
            text = tar.extractfile(members[path]).read().decode("utf-8")
            ann = tar.extractfile(members[path.with_suffix(".ann")]).read().decode("utf-8")
            mentions = []
            for line in ann.splitlines():
                fields = line.split("\t")
                if len(fields) >= 3 and fields[1].split()[0] == "cell_line":
                    _, start, end = fields[1].split()[:3]
                    mentions.append((int(start), int(end), fields[2]))
            yield path.stem, text, mentions


def convert(archive: Path, out: Path) -> dict:
    counts: Counter = Counter()
    blocks = []
    for pmid, text, mentions in documents(archive):
        counts["documents"] += 1
        if not mentions:
            continue
        spans, clean = [], True
        for start, end, mention in mentions:
            counts["mentions"] += 1
            found = cut(mention)
            if found == UNSURE:
                clean = False
            elif found:
                spans.append((start + found[0], start + found[1]))
        counts["names"] += len(spans)
        if not clean or not spans:
            counts["documents_dropped"] += bool(spans)
            continue
        title, _, abstract = text.rstrip("\n").partition("\n")
        abstract = abstract.replace("\n", " ")  # structured abstracts: one line, same offsets
        lines = [f"{pmid}|t|{title}", f"{pmid}|a|{abstract}"]
        lines += [f"{pmid}\t{s}\t{e}\t{text[s:e]}\tCellLine\t-" for s, e in spans]
        blocks.append("\n".join(lines))
        counts["documents_kept"] += 1
        counts["mentions_kept"] += len(spans)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return {"source": str(archive), "out": str(out), **counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("archive", type=Path, help="JNLPBA standoff tarball (standoff-train.tar.gz).")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print(json.dumps(convert(args.archive, args.out)))


if __name__ == "__main__":
    main()
