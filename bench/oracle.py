"""Oracle check: gold-tagged generations through the real pipeline; prints JSON.

    .venv/bin/python bench/oracle.py [--split train|devel]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bulkner.corpora.pubtator import NCBI_DISEASE_TYPES, read_pubtator
from bulkner.evaluation.evaluate import oracle_check
from bulkner.types import resolve_types

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ner"
FILES = {
    "train": {"ncbi_disease": "ncbi_disease/NCBItrainset_corpus.txt", "bc5cdr": "bc5cdr/CDR_TrainingSet.PubTator.txt"},
    "devel": {"ncbi_disease": "ncbi_disease/NCBIdevelopset_corpus.txt", "bc5cdr": "bc5cdr/CDR_DevelopmentSet.PubTator.txt"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--split", choices=sorted(FILES), default="train")
    args = parser.parse_args()
    results = {}
    for corpus, rel in FILES[args.split].items():
        started = time.perf_counter()
        gold = read_pubtator(DATA / rel, NCBI_DISEASE_TYPES)
        types = resolve_types(["Disease"] if corpus == "ncbi_disease" else ["Chemical", "Disease"])
        results[corpus] = oracle_check(gold, types) | {"seconds": round(time.perf_counter() - started, 2)}
    print(json.dumps({"split": args.split, "results": results}, indent=2))


if __name__ == "__main__":
    main()
