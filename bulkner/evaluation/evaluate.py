"""Evaluation against gold corpora: the real pipeline (segment, prompt, generate, parse, select) on
gold documents, scored strict and relaxed. With the oracle engine it measures the pipeline's ceiling.

``bulkner eval`` parses its options into an :class:`EvalConfig` and calls :func:`evaluate_corpus`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

from tqdm.auto import tqdm

from bulkner.corpora import GoldDocument
from bulkner.config import MAX_SENTENCE_CHARS, RunConfig, EngineConfig, check_generate
from bulkner.engines.oracle import OracleEngine, OraclePrompts, oracle_targets
from bulkner.evaluation.predictions import sentence_predictions
from bulkner.pipeline.tagger import Tagger, TagStats, segment
from bulkner.schema import Entity, Reject, Sentence
from bulkner.evaluation.scoring import Mention, score
from bulkner.tagging import DEFAULT_FORMAT
from bulkner.types import EntityType


def unique_documents(gold: Sequence[GoldDocument]) -> list[GoldDocument]:
    """One gold document per doc_id, the last one read (as for PubMed update files)."""
    return list({g.document.doc_id: g for g in gold}.values())


def gold_mentions(gold: Sequence[GoldDocument], names: Sequence[str]) -> set[Mention]:
    return {Mention(g.document.doc_id, i, s.start, s.end, s.type) for g in gold for i, s in g.mentions if s.type in names}


def predict(
    sentences: Sequence[Sentence], rejects: Sequence[Reject], tagger: Tagger, progress: bool = False, known: dict | None = None
) -> tuple[list[Entity], dict]:
    """Tag the sentences of the gold documents; predicted entities and run counts (with the
    segmentation ``rejects``); ``known`` as in ``Tagger.tag``."""
    stats = TagStats()
    with tqdm(total=len(sentences), desc="eval", unit="sent", disable=not progress) as bar:
        entities, tag_rejects = tagger.tag(sentences, stats, bar, known)
    counts = {
        "sentences": len(sentences),
        "rejects": dict(sorted(Counter(f"{r.stage}/{r.reason}" for r in [*rejects, *tag_rejects]).items())),
    } | {k: v for k, v in stats.as_dict().items() if k != "entities_by_type"}
    return entities, counts


def oracle_tagger(
    gold: Sequence[GoldDocument], sentences: Sequence[Sentence], types: Sequence[EntityType], fmt: str = DEFAULT_FORMAT
) -> tuple[Tagger, dict]:
    """A tagger answering with gold answers in format ``fmt``, and the counts of gold mentions no
    answer can carry: cut by a sentence boundary, or crossing a longer mention the format keeps."""
    targets, placed = oracle_targets(sentences, gold, [t.name for t in types], fmt)
    unreachable = {"cut_by_sentence_boundaries": len(placed.cut), "crossing": len(placed.crossing)}
    return Tagger(OracleEngine(targets), OraclePrompts(types, fmt), 4096), unreachable


def evaluate(
    gold: Sequence[GoldDocument],
    types: Sequence[EntityType],
    tagger: Tagger | None = None,
    max_sentence_chars: int = MAX_SENTENCE_CHARS,
    progress: bool = False,
    predictions: dict | None = None,
    oracle_format: str = DEFAULT_FORMAT,
    gold_ids: Sequence | None = None,
) -> dict:
    """Score the pipeline on ``gold`` with ``tagger`` (see ``pipeline.tagger.build_tagger``), or, when
    it is None, with gold-tagged generations (``"oracle": true``). A ``predictions`` dict is filled
    with every span the generator predicted per sentence key (:mod:`bulkner.evaluation.predictions`).
    ``oracle_format`` is the answer format the oracle writes. With the tagger's linker and the
    corpus's ``gold_ids`` (``kb.read_gold_ids``), the links are scored too (``"linking"``:
    :mod:`bulkner.evaluation.linking`)."""
    gold = unique_documents(gold)
    names = [t.name for t in types]
    sentences, rejects = segment([g.document for g in gold], max_sentence_chars)
    unreachable: dict = {}
    oracle = tagger is None
    if oracle:
        tagger, unreachable = oracle_tagger(gold, sentences, types, oracle_format)
    scored = predictions is not None and tagger.selector is not None
    tagger.dropped = [] if scored else None
    tagger.added = [] if predictions is not None else None
    known: dict = {}
    entities, counts = predict(sentences, rejects, tagger, progress, known)
    if predictions is not None:  # the generator's spans only: not those a selector added
        added = {id(e) for e in tagger.added}
        predictions.update(sentence_predictions([e for e in entities if id(e) not in added], tagger.dropped))
    stats = TagStats()
    final = tagger.finish_documents(sentences, entities, stats, known)
    expected = gold_mentions(gold, names)
    result = {"documents": len(gold), "oracle": oracle, "types": names}
    result |= score(expected, mentions(final), names)
    result["pipeline"] = counts | unreachable
    if tagger.abbreviations or tagger.names:
        result["document_pass"] = {"counts": dict(sorted(stats.abbreviations.items())), "names": dict(sorted(stats.names.items())),
                                   "without": score(expected, mentions(entities), names)["strict"]}
    if tagger.linker is not None and gold_ids is not None:
        from bulkner.corpora.gold import sentence_gold
        from bulkner.evaluation.linking import linking_scores
        from bulkner.linking.link import link_entities

        linked, _ = link_entities(tagger.linker, sentences, sentence_gold(sentences, gold, names).entities(sentences))
        result["linking"] = linking_scores(gold_ids, {g.document.doc_id for g in gold}, names, final, linked)
    return result


def mentions(entities: Sequence[Entity]) -> set[Mention]:
    """Entities as the scorer's mentions (document, passage, offsets, type)."""
    return {Mention(e.sentence.doc_id, e.sentence.passage_index, e.start, e.end, e.type) for e in entities}


def oracle_check(
    gold: Sequence[GoldDocument], types: Sequence[EntityType], max_sentence_chars: int = MAX_SENTENCE_CHARS,
    fmt: str = DEFAULT_FORMAT,
) -> dict:
    """Feed gold answers in format ``fmt`` through segmenting, parsing and offset mapping.

    Returns counts: gold mentions, those recovered with exact offsets and type, those cut by a
    sentence boundary (no generation can recover them), other misses, spurious spans and rejects.
    """
    result = evaluate(gold, types, max_sentence_chars=max_sentence_chars, oracle_format=fmt)
    micro = result["strict"]["micro"]
    pipeline = result["pipeline"]
    expected, hits = micro["tp"] + micro["fn"], micro["tp"]
    cut = pipeline["cut_by_sentence_boundaries"] + pipeline["crossing"]
    return {
        "documents": result["documents"],
        "sentences": pipeline["sentences"],
        "gold_mentions": expected,
        "recovered": hits,
        "recall": hits / expected if expected else 1.0,
        "cut_by_sentence_boundaries": pipeline["cut_by_sentence_boundaries"],
        "crossing": pipeline["crossing"],
        "missed_other": expected - hits - cut,
        "spurious": micro["fp"],
        "rejects": pipeline["rejects"],
    }


@dataclass(frozen=True)
class EvalConfig:
    """One ``bulkner eval``: a gold corpus, the types scored and the pipeline that tags it."""

    gold: str
    """Gold corpus file or folder."""
    format: str
    """Its format (``bulkner.corpora.registry.FORMATS``)."""
    types: tuple[str, ...] | None = None
    """Types to score; None: the corpus's own."""
    types_file: str | None = None
    """JSON object of user types ``{"Name": "definition"}``."""
    engine: EngineConfig | None = None
    """The generator; None answers with the gold-tagged sentences (the oracle: the pipeline's ceiling)."""
    oracle_format: str = DEFAULT_FORMAT
    """The answer format the oracle writes (``bulkner.tagging.FORMATS``; with an engine, the
    format is the model's: ``EngineConfig.answer_format``)."""
    selector: str | None = None
    """Selector directory (``bulkner.selectors``); None keeps every parsed span."""
    selector_threshold: float | None = None
    """Overrides the selector's calibrated keep threshold."""
    limit: int | None = None
    """Evaluate the first N documents; None: all."""
    batch_sentences: int = RunConfig.batch_sentences
    max_sentence_chars: int = MAX_SENTENCE_CHARS
    abbreviations: bool = RunConfig.abbreviations
    """The document pass's abbreviations (``RunConfig.abbreviations``); scored with and without the
    document pass (names and abbreviations together)."""
    names: bool = RunConfig.names
    """Name propagation in the document pass (``RunConfig.names``); scored with and without the
    document pass (names and abbreviations together)."""
    generate: str = RunConfig.generate
    """Which sentences the generator reads (``RunConfig.generate``)."""
    link: bool = RunConfig.link
    """Link entities (``RunConfig.link``) and score the links against the corpus's gold ids."""
    kb: str | None = None
    """Knowledge-base directory (``RunConfig.kb``)."""

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if self.engine is None and self.selector is not None:
            raise ValueError("the oracle answers with gold spans: a selector has nothing to check")
        if self.types is not None and not self.types:
            raise ValueError("types must be None (the corpus's) or non-empty")
        check_generate(self.generate, self.selector)


def evaluate_corpus(config: EvalConfig, progress: bool = True, predictions: dict | None = None) -> dict:
    """Read the gold corpus, build the tagger (engine and selector), score the pipeline on it
    (:func:`evaluate`) and release the tagger; the result also counts the corpus's own problems.
    ``predictions`` (a dict) is filled as :func:`evaluate` fills it."""
    from bulkner.corpora.registry import read_corpus
    from bulkner.pipeline.tagger import build_tagger
    from bulkner.types import resolve_types

    corpus = read_corpus(config.format, config.gold)
    documents = corpus.documents[: config.limit] if config.limit else corpus.documents
    types = resolve_types(list(config.types) if config.types else sorted(corpus.type_counts()), config.types_file)
    tagger = None
    if config.engine is not None:
        tagger = build_tagger(types, config.engine, config.batch_sentences, config.selector, config.selector_threshold,
                              config.abbreviations, config.generate, config.link, config.kb, names=config.names)
    gold_ids = None
    if tagger is not None and tagger.linker is not None and config.format in ("pubtator", "brat"):
        from bulkner.linking.kb import read_gold_ids

        gold_ids = read_gold_ids(config.gold)
    try:
        result = evaluate(documents, types, tagger, config.max_sentence_chars, progress and tagger is not None, predictions,
                          config.oracle_format, gold_ids)
    finally:
        if tagger is not None:
            tagger.close()
    return result | {"corpus_problems": corpus.problem_counts()}
