"""Scores of entity linking against a corpus's gold concept ids (``bulkner eval`` with ``--link``).

Two measures, per type:

- **with gold mentions**: the gold mentions of the evaluated documents are linked as the pipeline
  links its own entities (``bulkner.linking.link.link_entities``: a short form its document
  defines goes through its long form); accuracy over those with a gold id — ``correct`` when the
  CURIE is one of the mention's ids (a composite mention has several), ``null`` when none was
  given, ``wrong`` otherwise. Gold mentions without an id (``-``) are counted apart.
- **end to end** (the BC5CDR task's measure): per document, the set of ``(type, id)`` of the
  pipeline's linked entities against the gold set of every id of every mention; P/R/F1 over all
  documents.

Gold ids are read from the corpus file itself (``bulkner.linking.kb.read_gold_ids``: PubTator's
sixth column, S800's ``Reference`` notes); a mention's ids are found by document, type and text.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Sequence

from bulkner.evaluation.scoring import prf
from bulkner.schema import Entity


def linking_scores(gold_ids: Sequence, documents: set[str], types: Sequence[str], predicted: Sequence[Entity],
                   gold_linked: Sequence[Entity]) -> dict:
    """Per type: accuracy of ``gold_linked`` (the gold mentions, linked) and document-level P/R/F1
    of ``predicted`` (the pipeline's entities), against ``gold_ids`` (``kb.GoldMention`` of the
    corpus) of the evaluated ``documents``."""
    ids: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    expected: dict[str, set] = defaultdict(set)
    for m in gold_ids:
        if m.doc_id in documents and m.type in types:
            ids[m.doc_id, m.type, m.text].update(m.concepts)
            expected[m.type].update((m.doc_id, c) for c in m.concepts)
    outcome: dict[str, Counter] = defaultdict(Counter)
    for e in gold_linked:
        known = ids.get((e.sentence.doc_id, e.type, e.text))
        counts = outcome[e.type]
        if not known:
            counts["no_gold_id"] += 1
            counts["no_gold_id_linked"] += e.concept_id is not None
            continue
        counts["null" if e.concept_id is None else "correct" if e.concept_id in known else "wrong"] += 1
    found: dict[str, set] = defaultdict(set)
    for e in predicted:
        if e.concept_id is not None:
            found[e.type].add((e.sentence.doc_id, e.concept_id))
    result = {}
    for kind in types:
        counts = outcome[kind]
        with_id = counts["correct"] + counts["wrong"] + counts["null"]
        if not with_id and not expected[kind]:
            continue
        right = len(found[kind] & expected[kind])
        result[kind] = {
            "gold_mentions": {"with_id": with_id, "accuracy": round(counts["correct"] / with_id, 4) if with_id else 0.0,
                              **{k: counts[k] for k in ("correct", "wrong", "null", "no_gold_id", "no_gold_id_linked")}},
            "documents": {k: round(v, 4) for k, v in prf(right, len(found[kind]) - right, len(expected[kind]) - right).items()}
                         | {"right": right, "predicted": len(found[kind]), "gold": len(expected[kind])},
        }
    return result

