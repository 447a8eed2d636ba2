"""Does "every mention of a short form gets its long form's type" match each corpus's gold?

For every abbreviation definition found in a gold corpus, ``long_form`` counts how its long form
meets the gold entities (``bulkner.linking.abbreviations.long_form_match``: ``exact``, ``near``,
``partial``, ``none``). Then each whole-token mention of the short form in the document is classed
against the gold, under its definition's kind: ``agree`` (a gold mention of the long form
entity's type exactly on it), ``other_type`` (gold exactly on it, another type only),
``inside_longer`` (only inside a longer gold mention) or ``unannotated``; for kind ``none``,
``annotated`` or ``unannotated``. ``before_definition`` repeats the count for the mentions that
come before their definition. Last, ``harmonize`` runs on the gold entities themselves: every
change it makes there is a disagreement with the gold (strict P/R/F1 against the gold).

    python scripts/abbreviation_gold_check.py            # the three training sets, JSON on stdout
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

from bulkner.corpora.gold import sentence_gold
from bulkner.corpora.registry import read_corpus
from bulkner.linking.abbreviations import document_abbreviations, harmonize, long_form_match, short_form_mentions
from bulkner.pipeline.tagger import segment
from bulkner.schema import Entity

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ner"
CORPORA = {
    "bc5cdr": SHARED / "bc5cdr" / "CDR_TrainingSet.PubTator.txt",
    "ncbi_disease": SHARED / "ncbi_disease" / "NCBItrainset_corpus.txt",
    "biored": SHARED / "biored" / "Train.filtered.PubTator",
}


def _mention_class(start: int, end: int, source: Entity | None, here: list[Entity]) -> str:
    """How the gold meets a short form mention whose long form entity is ``source``."""
    exact = {e.type for e in here if (e.start, e.end) == (start, end)}
    if source is None:
        return "annotated" if exact else "unannotated"
    if source.type in exact:
        return "agree"
    if exact:
        return "other_type"
    return "inside_longer" if any(e.start <= start and end <= e.end for e in here) else "unannotated"


def _keys(entities: list[Entity]) -> set[tuple]:
    return {(e.sentence.key, e.start, e.end, e.type) for e in entities}


def check(path: Path) -> dict:
    """The counts of one PubTator corpus (see the module docstring)."""
    stats = {key: Counter() for key in ("long_form", "sf_mentions", "before_definition", "harmonize_on_gold")}
    corpus = read_corpus("pubtator", path)
    scores = Counter()
    for gold in corpus.documents:
        sentences, _ = segment([gold.document], max_chars=10**6)
        entities = sentence_gold(sentences, [gold], crossing="none").entities(sentences)
        by_passage: dict[int, list[Entity]] = defaultdict(list)
        for e in entities:
            by_passage[e.sentence.passage_index].append(e)
        for short, (where, a) in document_abbreviations(sentences).items():
            kind, source = long_form_match(where, a, by_passage[where.passage_index])
            stats["long_form"][kind] += 1
            if kind == "partial":
                continue
            for s, start, end in short_form_mentions(sentences, short):
                label = f"{kind}/{_mention_class(start, end, source, by_passage[s.passage_index])}"
                stats["sf_mentions"][label] += 1
                if (s.passage_index, s.sentence_index) < (where.passage_index, where.sentence_index):
                    stats["before_definition"][label] += 1
        output, changes = harmonize(sentences, entities)
        stats["harmonize_on_gold"].update(changes)
        scores.update(gold=len(_keys(entities)), output=len(_keys(output)), both=len(_keys(entities) & _keys(output)))
    precision, recall = scores["both"] / max(scores["output"], 1), scores["both"] / max(scores["gold"], 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-9)
    result = {"documents": len(corpus.documents), **{k: dict(sorted(v.items())) for k, v in stats.items()}}
    result["harmonize_on_gold"].update(precision=round(precision, 4), recall=round(recall, 4), f1=round(f1, 4))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpora", nargs="*", metavar="CORPUS", help=f"{', '.join(CORPORA)} (default: all three)")
    args = parser.parse_args()
    if set(args.corpora) - set(CORPORA):
        parser.error(f"unknown corpus in {args.corpora}; corpora are {', '.join(CORPORA)}")
    print(json.dumps({name: check(CORPORA[name]) for name in args.corpora or CORPORA}, indent=1))


if __name__ == "__main__":
    main()
