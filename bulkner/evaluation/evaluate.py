"""Evaluation against gold corpora: the real pipeline (segment, prompt, generate, parse) on gold
documents, scored strict and relaxed. With the oracle engine it measures the pipeline's ceiling."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from tqdm.auto import tqdm

from bulkner.corpora import GoldDocument
from bulkner.engines.oracle import OracleEngine, OraclePrompts, oracle_targets
from bulkner.pipeline.tagger import Tagger, TagStats, segment
from bulkner.schema import Entity, Reject, Sentence
from bulkner.evaluation.scoring import Mention, score
from bulkner.types import EntityType


def unique_documents(gold: Sequence[GoldDocument]) -> list[GoldDocument]:
    """One gold document per doc_id, the last one read (as for PubMed update files)."""
    return list({g.document.doc_id: g for g in gold}.values())


def gold_mentions(gold: Sequence[GoldDocument], names: Sequence[str]) -> set[Mention]:
    return {Mention(g.document.doc_id, i, s.start, s.end, s.type) for g in gold for i, s in g.mentions if s.type in names}


def predict(
    sentences: Sequence[Sentence], rejects: Sequence[Reject], tagger: Tagger, progress: bool = False
) -> tuple[list[Entity], dict]:
    """Tag the sentences of the gold documents; predicted entities and run counts (with the
    segmentation ``rejects``)."""
    stats = TagStats()
    with tqdm(total=len(sentences), desc="eval", unit="sent", disable=not progress) as bar:
        entities, tag_rejects = tagger.tag(sentences, stats, bar)
    counts = {
        "sentences": len(sentences),
        "rejects": dict(sorted(Counter(f"{r.stage}/{r.reason}" for r in [*rejects, *tag_rejects]).items())),
    } | {k: v for k, v in stats.as_dict().items() if k != "entities_by_type"}
    return entities, counts


def sentence_predictions(entities: Sequence[Entity], dropped: Sequence[Entity] | None = None) -> dict[str, list[list]]:
    """Every span the generator predicted, per sentence key, offsets into the sentence
    (``bulkner eval --predictions``; ``bulkner train-selector --predictions`` reads them back as
    generator negatives): ``[start, end, type]``, or, when a selector ran (``dropped`` is its
    dropped spans), ``[start, end, type, score, kept]``."""
    rows: dict[str, list[list]] = {}
    for kept, group in ((True, entities), (False, dropped or ())):
        for e in group:
            row = [e.start - e.sentence.start, e.end - e.sentence.start, e.type]
            rows.setdefault(e.sentence.key, []).append(row if dropped is None else row + [round(e.score, 6), kept])
    return rows


def oracle_tagger(
    gold: Sequence[GoldDocument], sentences: Sequence[Sentence], types: Sequence[EntityType]
) -> tuple[Tagger, dict]:
    """A tagger answering with gold-tagged sentences, and the counts of gold mentions no answer can
    carry: cut by a sentence boundary, or crossing a longer mention of the same type."""
    targets, cut, crossing = oracle_targets(sentences, gold, [t.name for t in types])
    unreachable = {"cut_by_sentence_boundaries": len(cut), "crossing_same_type": len(crossing)}
    return Tagger(OracleEngine(targets), OraclePrompts(types), 4096), unreachable


def evaluate(
    gold: Sequence[GoldDocument],
    types: Sequence[EntityType],
    tagger: Tagger | None = None,
    max_sentence_chars: int = 2000,
    progress: bool = False,
    predictions: dict | None = None,
) -> dict:
    """Score the pipeline on ``gold`` with ``tagger`` (see ``pipeline.build_tagger``), or, when it is
    None, with gold-tagged generations (``"oracle": true``). A ``predictions`` dict is filled with
    every span the generator predicted per sentence key (``sentence_predictions``)."""
    gold = unique_documents(gold)
    names = [t.name for t in types]
    sentences, rejects = segment([g.document for g in gold], max_sentence_chars)
    unreachable: dict = {}
    oracle = tagger is None
    if oracle:
        tagger, unreachable = oracle_tagger(gold, sentences, types)
    scored = predictions is not None and tagger.selector is not None
    tagger.dropped = [] if scored else None
    tagger.added = [] if predictions is not None else None
    entities, counts = predict(sentences, rejects, tagger, progress)
    if predictions is not None:  # the generator's spans only: not those a selector added
        added = {id(e) for e in tagger.added}
        predictions.update(sentence_predictions([e for e in entities if id(e) not in added], tagger.dropped))
    found = {Mention(e.sentence.doc_id, e.sentence.passage_index, e.start, e.end, e.type) for e in entities}
    result = {"documents": len(gold), "oracle": oracle, "types": names}
    result |= score(gold_mentions(gold, names), found, names)
    result["pipeline"] = counts | unreachable
    return result


def oracle_check(gold: Sequence[GoldDocument], types: Sequence[EntityType], max_sentence_chars: int = 2000) -> dict:
    """Feed gold-tagged generations through segmenting, parsing and offset mapping.

    Returns counts: gold mentions, those recovered with exact offsets and type, those cut by a
    sentence boundary (no generation can recover them), other misses, spurious spans and rejects.
    """
    result = evaluate(gold, types, max_sentence_chars=max_sentence_chars)
    micro = result["strict"]["micro"]
    pipeline = result["pipeline"]
    expected, hits = micro["tp"] + micro["fn"], micro["tp"]
    cut = pipeline["cut_by_sentence_boundaries"] + pipeline["crossing_same_type"]
    return {
        "documents": result["documents"],
        "sentences": pipeline["sentences"],
        "gold_mentions": expected,
        "recovered": hits,
        "recall": hits / expected if expected else 1.0,
        "cut_by_sentence_boundaries": pipeline["cut_by_sentence_boundaries"],
        "crossing_same_type": pipeline["crossing_same_type"],
        "missed_other": expected - hits - cut,
        "spurious": micro["fp"],
        "rejects": pipeline["rejects"],
    }
