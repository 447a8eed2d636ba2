"""Benchmark sentence splitters on the tricky set and GENIA 3.02; prints one JSON object.

Usage: python bench/segment.py [--repeats 3]

For bulkner.pipeline.sentences, syntok and pysbd: exact-span P/R/F1 and case accuracy on
tests/data/segment/tricky.txt and on all 2,000 GENIA 3.02 abstracts, and single-threaded speed
(sentences per second, best of ``--repeats`` passes over the GENIA abstracts).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bulkner.pipeline.sentences import split_sentences  # noqa: E402
from tests.pipeline.test_sentences import (  # noqa: E402
    Case,
    Spans,
    load_genia,
    load_tricky,
    pysbd_split,
    score,
    syntok_split,
)

SPLITTERS: dict[str, Callable[[str], Spans]] = {
    "bulkner": split_sentences,
    "syntok": syntok_split,
    "pysbd": pysbd_split,
}


def sentences_per_second(
    splitter: Callable[[str], Spans], cases: list[Case], repeats: int
) -> float:
    """Best-of-``repeats`` throughput of one splitter over all texts, counted in gold sentences."""
    texts = [text for text, _ in cases]
    n_sentences = sum(len(gold) for _, gold in cases)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for text in texts:
            splitter(text)
        best = min(best, time.perf_counter() - t0)
    return round(n_sentences / best, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timing passes; the best is kept")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    sets = {"tricky": load_tricky(), "genia": load_genia()}
    result: dict = {
        "python": platform.python_version(),
        "sets": {
            name: {"cases": len(c), "sentences": sum(len(g) for _, g in c)}
            for name, c in sets.items()
        },
        "splitters": {},
    }
    for name, splitter in SPLITTERS.items():
        row = {set_name: score(splitter, cases) for set_name, cases in sets.items()}
        row["sentences_per_s_core"] = sentences_per_second(splitter, sets["genia"], args.repeats)
        result["splitters"][name] = row
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
