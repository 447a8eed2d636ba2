"""Evaluation against gold corpora. ``oracle_check`` measures the pipeline's own ceiling."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from bulkner.corpora import GoldDocument
from bulkner.engines.oracle import OracleEngine, OraclePrompts, oracle_targets
from bulkner.pipeline import Tagger, TagStats, segment
from bulkner.types import EntityType


def unique_documents(gold: Sequence[GoldDocument]) -> list[GoldDocument]:
    """One gold document per doc_id, the last one read (as for PubMed update files)."""
    return list({g.document.doc_id: g for g in gold}.values())


def oracle_check(gold: Sequence[GoldDocument], types: Sequence[EntityType], max_sentence_chars: int = 2000) -> dict:
    """Feed gold-tagged generations through segmenting, parsing and offset mapping.

    Returns counts: gold mentions, those recovered with exact offsets and type, those cut by a
    sentence boundary (no generation can recover them), other misses, spurious spans and rejects.
    """
    gold = unique_documents(gold)
    names = [t.name for t in types]
    sentences, rejects = segment([g.document for g in gold], max_sentence_chars)
    targets, cut = oracle_targets(sentences, gold, names)
    entities, tag_rejects = Tagger(OracleEngine(targets), OraclePrompts(types), 4096).tag(sentences, TagStats())
    expected = {(g.document.doc_id, i, s.start, s.end, s.type) for g in gold for i, s in g.mentions if s.type in names}
    found = {(e.sentence.doc_id, e.sentence.passage_index, e.start, e.end, e.type) for e in entities}
    hits = len(expected & found)
    return {
        "documents": len(gold),
        "sentences": len(sentences),
        "gold_mentions": len(expected),
        "recovered": hits,
        "recall": hits / len(expected) if expected else 1.0,
        "cut_by_sentence_boundaries": len(cut),
        "missed_other": len(expected) - hits - len(cut),
        "spurious": len(found - expected),
        "rejects": dict(Counter(f"{r.stage}/{r.reason}" for r in rejects + tag_rejects)),
    }
