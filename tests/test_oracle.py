"""Oracle check: gold-tagged generations for real gold corpora come out with exact offsets."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulkner.corpora.pubtator import NCBI_DISEASE_TYPES, read_pubtator
from bulkner.evaluation.evaluate import oracle_check
from bulkner.types import resolve_types

NER = Path(__file__).resolve().parents[2] / "shared" / "data" / "ner"
CASES = [
    ("ncbi_disease/NCBItrainset_corpus.txt", ["Disease"], 593, 5145),
    ("bc5cdr/CDR_TrainingSet.PubTator.txt", ["Chemical", "Disease"], 500, 9385),
]


@pytest.mark.parametrize("path, types, documents, mentions", CASES)
def test_pubtator_reader_counts(path, types, documents, mentions):
    if not (NER / path).exists():
        pytest.skip(f"shared data not found at {NER}")
    gold = read_pubtator(NER / path, NCBI_DISEASE_TYPES)
    assert len(gold) == documents
    assert sum(len(g.mentions) for g in gold) == mentions
    assert {s.type for g in gold for _, s in g.mentions} == set(types)
    mismatched = [
        (g.document.doc_id, s)
        for g in gold
        for i, s in g.mentions
        if not g.document.passages[i].text[s.start : s.end].strip()
    ]
    assert not mismatched


@pytest.mark.parametrize("path, types, documents, mentions", CASES)
def test_oracle_recovers_gold_mentions_with_exact_offsets(path, types, documents, mentions):
    if not (NER / path).exists():
        pytest.skip(f"shared data not found at {NER}")
    report = oracle_check(read_pubtator(NER / path, NCBI_DISEASE_TYPES), resolve_types(types))
    assert report["recall"] >= 0.995, report
    # every mention not recovered is one that a sentence boundary cuts, nothing else
    assert report["missed_other"] == 0, report
    assert report["spurious"] == 0, report
    assert not report["rejects"], report
