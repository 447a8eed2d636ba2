"""Peer baseline: the spaCy model ``en-chem-ner`` on BC5CDR chemicals, scored by bulkner's scorer.

Reads a PubTator gold file with ``bulkner.corpora.registry.read_corpus``, runs the peer over every
passage (title and abstract separately) with ``nlp.pipe``, maps its one label ``CHEMICAL`` to
``Chemical`` and scores against the gold Chemical mentions with ``bulkner.evaluation.scoring.score`` (the
scorer ``bulkner eval`` uses). Prints one JSON object: strict and relaxed micro scores, seconds
spent tagging (model load excluded) and passages per second (single process, CPU).

The peer is not a bulkner dependency; install it in its own venv (spaCy 3.7 pins numpy < 2, so
pyarrow must stay < 21)::

    python3 -m venv /tmp/peervenv
    /tmp/peervenv/bin/pip install en-chem-ner click "pyarrow<21" lxml tqdm typer
    /tmp/peervenv/bin/pip install -e . --no-deps

Usage (from the repo root): /tmp/peervenv/bin/python bench/peer_en_chem_ner.py [--gold PATH] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import spacy

from bulkner.corpora.registry import read_corpus
from bulkner.evaluation.evaluate import gold_mentions, unique_documents
from bulkner.evaluation.scoring import Mention, score

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GOLD = ROOT / ".." / "shared" / "data" / "ner" / "bc5cdr" / "CDR_DevelopmentSet.PubTator.txt"
LABELS = {"CHEMICAL": "Chemical"}
"""Peer label -> bulkner type; other labels (none in 0.1.0) are dropped."""


def predict(nlp, documents, batch_size: int) -> tuple[set[Mention], int]:
    """Peer mentions over every passage of ``documents``, and the number of passages tagged."""
    keys = [(g.document.doc_id, i) for g in documents for i in range(len(g.document.passages))]
    texts = (p.text for g in documents for p in g.document.passages)
    found = set()
    for (doc_id, index), doc in zip(keys, nlp.pipe(texts, batch_size=batch_size)):
        for ent in doc.ents:
            if ent.label_ in LABELS:
                found.add(Mention(doc_id, index, ent.start_char, ent.end_char, LABELS[ent.label_]))
    return found, len(keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gold", type=Path, default=DEFAULT_GOLD, help="PubTator gold file")
    parser.add_argument("--limit", type=int, default=None, help="score the first N documents")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per nlp.pipe batch")
    args = parser.parse_args()
    if args.limit is not None and args.limit < 1:
        sys.exit(f"--limit must be >= 1, got {args.limit}")
    corpus = read_corpus("pubtator", args.gold)
    documents = unique_documents(corpus.documents[: args.limit] if args.limit else corpus.documents)
    nlp = spacy.load("en_chem_ner")
    start = time.perf_counter()
    found, passages = predict(nlp, documents, args.batch_size)
    seconds = time.perf_counter() - start
    result = score(gold_mentions(documents, ["Chemical"]), found, ["Chemical"])
    print(json.dumps({
        "peer": "en-chem-ner", "version": nlp.meta["version"], "spacy": spacy.__version__,
        "gold": str(args.gold.resolve()), "documents": len(documents), "passages": passages,
        "strict": result["strict"]["micro"], "relaxed": result["relaxed"]["micro"],
        "seconds": round(seconds, 3), "passages_per_second": round(passages / seconds, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
