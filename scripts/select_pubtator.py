"""Copy the documents of a PubTator file that carry an annotation of a given label.

Used to show the model a rare type more often (issue 23: BioRED's and tmVar3's CellLine
documents once more in the six-type mix). Document blocks are copied byte for byte, in file order.

    python scripts/select_pubtator.py ../shared/data/ner/biored/Train.filtered.PubTator \\
        --label CellLine --out runs/data/biored-train-cellline.PubTator
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path


def labels(block: str) -> set[str]:
    """The annotation labels (5th tab field) of one PubTator document block."""
    return {fields[4].strip() for line in block.splitlines() if len(fields := line.split("\t")) >= 5}


def select(source: Path, out: Path, label: str) -> dict:
    """Write the blocks of ``source`` with an annotation labelled ``label``; returns the counts."""
    blocks = [b for b in re.split(r"\r?\n\s*\r?\n", source.read_text(encoding="utf-8")) if b.strip()]
    kept = [b for b in blocks if label in labels(b)]
    if not kept:
        raise SystemExit(f"no document of {source} has an annotation labelled {label!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n\n".join(kept) + "\n", encoding="utf-8")
    return {"source": str(source), "label": label, "documents": len(blocks), "kept": len(kept), "out": str(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("--label", required=True, help="Annotation label as written in the file (e.g. CellLine).")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print(json.dumps(select(args.source, args.out, args.label)))


if __name__ == "__main__":
    main()
