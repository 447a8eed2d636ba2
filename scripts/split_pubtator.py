"""Split a PubTator file without an official split (tmVar3) into training and held-out documents.

Every ``--every``-th document block, counted from the first in file order (index % every ==
every - 1), goes to the held-out file, the rest to the training file; blocks are copied byte for
byte, so both files read as the original does. Deterministic: the same input gives the same split.

    python scripts/split_pubtator.py ../shared/data/ner/tmvar3/tmvar_v3.filtered.txt \\
        --train runs/data/tmvar3-train.PubTator --held-out runs/data/tmvar3-dev.PubTator --every 5
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path


def split(source: Path, train: Path, held_out: Path, every: int) -> dict:
    """Write the two files; returns the document counts of each."""
    text = source.read_text(encoding="utf-8")
    blocks = [b for b in re.split(r"\r?\n\s*\r?\n", text) if b.strip()]
    kept = [b for i, b in enumerate(blocks) if i % every != every - 1]
    held = [b for i, b in enumerate(blocks) if i % every == every - 1]
    for path, part in ((train, kept), (held_out, held)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n\n".join(part) + "\n", encoding="utf-8")
    return {"source": str(source), "documents": len(blocks), "train": len(kept), "held_out": len(held), "every": every}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--held-out", type=Path, required=True)
    parser.add_argument("--every", type=int, default=5, help="Hold out every N-th document (default 5: a fifth).")
    args = parser.parse_args()
    if args.every < 2:
        parser.error("--every must be >= 2")
    print(json.dumps(split(args.source, args.train, args.held_out, args.every)))


if __name__ == "__main__":
    main()
