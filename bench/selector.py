"""The entity selector on a generator's saved spans: strict F1 without it (``generator``), with it
as a filter (``filter``), with the spans it adds (``filter_and_add``: what ``run``/``eval`` do),
and the selector's own spans with no generator (``--alone``: P >= 0.5); its time. Prints JSON.

    .venv/bin/bulkner eval --gold G --format pubtator --no-selector --predictions P.jsonl
    .venv/bin/python bench/selector.py --gold G --format pubtator --predictions P.jsonl [--selector DIR]

The generator runs once (``bulkner eval --predictions`` keeps every span it predicted, also those a
selector dropped); this bench then scores those spans with the selector (default: the shipped one)
at its calibrated thresholds, so variants of the selector are compared on identical generations.
Scores are strict micro P/R/F1 over the types of the predictions file, as ``bulkner eval`` counts
them (gold mentions cut by a sentence boundary are misses). ``selector_seconds`` is the time to
score every sentence once after a warm-up (steady state; ``run`` and ``eval`` pay the warm-up once
per process); ``--float32`` scores in float32 where bf16 is native, to compare.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gold", required=True)
    parser.add_argument("--format", required=True)
    parser.add_argument("--predictions", required=True, type=Path, help="bulkner eval --predictions JSONL")
    parser.add_argument("--selector", help="selector directory (default: the shipped one)")
    parser.add_argument("--threshold", type=float, help="override the calibrated threshold")
    parser.add_argument("--alone", action="store_true", help="also score the selector's own spans with no generator (P >= 0.5)")
    parser.add_argument("--float32", action="store_true", help="score in float32 even where bf16 is native (to compare speed and scores)")
    args = parser.parse_args()

    import bulkner.selectors.encoder
    from bulkner.checkpoints import default_selector
    from bulkner.config import MAX_SENTENCE_CHARS
    from bulkner.corpora.registry import read_corpus
    from bulkner.evaluation.evaluate import gold_mentions, unique_documents
    from bulkner.evaluation.predictions import read_predictions
    from bulkner.evaluation.scoring import Mention, score
    from bulkner.pipeline.tagger import segment
    from bulkner.selectors import Candidate, open_selector
    from bulkner.types import resolve_types

    gold = unique_documents(read_corpus(args.format, args.gold).documents)
    sentences = {s.key: s for s in segment([g.document for g in gold], MAX_SENTENCE_CHARS)[0]}
    spans = read_predictions([args.predictions])
    names = sorted({sp.type for found in spans.values() for sp in found})
    types = {t.name: t for t in resolve_types(names, None)}
    truth = gold_mentions(gold, names)
    cands = [Candidate(sentences[k].text, sp.start, sp.end, types[sp.type]) for k, found in spans.items() for sp in found]
    keys = [k for k, found in spans.items() for _ in found]

    def mention(key: str, c: Candidate) -> Mention:
        s = sentences[key]
        return Mention(s.doc_id, s.passage_index, s.start + c.start, s.start + c.end, c.type.name)

    def scored(chosen, keep, where=None) -> dict:
        """Strict micro P/R/F1 (and tp/fp/fn) of the kept spans, as ``bulkner eval`` scores them."""
        return score(truth, {mention(k, c) for k, c, ok in zip(where or keys, chosen, keep) if ok}, names)["strict"]["micro"]

    if args.float32:
        bulkner.selectors.encoder.scoring_dtype = lambda device: "float32"  # autocast asks it
    selector = open_selector(args.selector or default_selector(), args.threshold)
    selector.setup()
    order = list(sentences)
    texts = [sentences[k].text for k in order]
    position = {k: i for i, k in enumerate(order)}
    owners = [position[k] for k in keys]
    warm = [i for i, o in enumerate(owners) if o < 64]
    selector.select([cands[i] for i in warm], [owners[i] for i in warm], texts[:64], names)  # warm-up: one-time kernel set-up
    started = time.perf_counter()
    _, keep, added = selector.select(cands, owners, texts, names)
    selector_seconds = time.perf_counter() - started

    def as_candidates(found) -> list:
        """``(sentence key, Candidate)`` of a span selector's added spans."""
        return [(order[k], Candidate(texts[k], a, b, types.get(name) or resolve_types([name], None)[0])) for k, a, b, name, _ in found]

    extra = as_candidates(added)
    report = {
        "predictions": str(args.predictions), "types": names, "spans": len(cands), "sentences": len(texts), "gold": len(truth),
        "selector": selector.fingerprint(), "threshold": selector.threshold,
        "generator": scored(cands, [True] * len(cands)),
        "filter": scored(cands, keep),
        "selector_seconds": round(selector_seconds, 2),
        "spans_per_second": round(len(cands) / selector_seconds, 1) if selector_seconds else None,
        "scored_in": bulkner.selectors.encoder.scoring_dtype(selector.device),
        "added": len(extra), "add_threshold": selector.add_threshold,
        "filter_and_add": scored(cands + [c for _, c in extra], keep + [True] * len(extra), keys + [k for k, _ in extra]),
    }
    if args.alone:
        selector.add_threshold = 0.5
        own = as_candidates(selector.select([], [], texts, names)[2])
        report["selector_alone"] = scored([c for _, c in own], [True] * len(own), [k for k, _ in own])
    print(json.dumps(report))


if __name__ == "__main__":
    main()
