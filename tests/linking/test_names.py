"""Name propagation's proposals on real BioRED abstracts: every occurrence of a name that the
gold tags elsewhere in the document and that was left out comes back, with the document's type."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from bulkner.linking.names import MIN_CHARS, occurrences, propose, resolve
from tests.linking.test_abbreviations import BIORED, _corpus, _gold_entities, _sentences


def test_a_left_out_repeat_of_a_tagged_name_is_proposed_with_its_type():
    """Take out every second occurrence of each repeated gold name in 40 BioRED abstracts: exactly
    those come back (whole-word, case-sensitive; nothing overlapping a kept entity)."""
    checked = 0
    for gold in _corpus(BIORED)[:40]:
        sentences = _sentences(gold.document)
        entities = _gold_entities(gold, sentences)
        seen: Counter = Counter()
        kept, removed = [], []
        for e in entities:
            seen[e.text] += 1
            (removed if seen[e.text] % 2 == 0 and len(e.text) >= MIN_CHARS else kept).append(e)
        found = propose(sentences, kept)
        assert all(p.origin == "propagated" and p.score == 0.0 for p in found)
        spans = {(p.sentence.key, p.start, p.end) for p in found}
        for e in removed:  # a removed mention comes back unless it overlaps a kept one ("IL-2" in "IL-2 receptor")
            inside = any(k.sentence.key == e.sentence.key and k.start < e.end and e.start < k.end for k in kept)
            assert ((e.sentence.key, e.start, e.end) in spans) != inside, (gold.document.doc_id, e.text)
        assert len(spans) == len(found)
        for p in found:
            assert not any(k.sentence.key == p.sentence.key and k.start < p.end and p.start < k.end for k in kept)
            assert p.start - p.sentence.start in occurrences(p.text, p.sentence.text)
            votes = Counter(k.type for k in kept if k.text == p.text)
            assert votes[p.type] == max(votes.values())
        checked += len(removed)
    assert checked > 200


def test_occurrences_split_no_word():
    text = "Carriers of IL1B-31TT (or IL1B-511C) and pIL1B; IL1B."
    assert occurrences("IL1B", text) == [12, 26, 48]  # not inside "pIL1B"
    assert occurrences("-31TT", text) == [16]  # starts with no letter: "IL1B" may come right before
    assert occurrences("TT", text) == []


def test_a_name_takes_the_type_most_of_its_mentions_have():
    """A document's most repeated gold name, its first mention relabelled and its last left out:
    the others outvote the relabelled one, and the last comes back with their type."""
    for gold in _corpus(BIORED):
        sentences = _sentences(gold.document)
        entities = _gold_entities(gold, sentences)
        name, n = Counter(e.text for e in entities).most_common(1)[0]
        if n >= 4:
            break
    mentions = [e for e in entities if e.text == name]
    votes = [replace(mentions[0], type="CellLine")] + mentions[1:-1]
    others = [e for e in entities if e.text != name]
    found = [p for p in propose(sentences, others + votes) if p.text == name]
    assert [(p.start, p.type) for p in found] == [(mentions[-1].start, mentions[-1].type)]
    assert mentions[-1].type != "CellLine"


def test_resolve_keeps_the_longest_of_overlapping_kept_proposals():
    """PMID 10788334 (BioRED): "BRCA1 abnormalities" (Disease) and "BRCA1" (Gene) are both
    proposed where neither was tagged; when the selector keeps both, the longer name stays."""
    for gold in _corpus(BIORED):
        if gold.document.doc_id == "pmid:10788334":
            break
    sentences = _sentences(gold.document)
    entities = _gold_entities(gold, sentences)
    long = [e for e in entities if e.text == "BRCA1 abnormalities"]
    found = propose(sentences, [e for e in entities if e is not long[-1]])
    at = [p for p in found if p.sentence.key == long[-1].sentence.key and p.start < long[-1].end and long[-1].start < p.end]
    assert sorted((p.text, p.type) for p in at) == [("BRCA1", "Gene"), ("BRCA1 abnormalities", "Disease")]
    kept = resolve([replace(p, score=0.5) for p in at])
    assert [(p.text, p.start) for p in kept] == [("BRCA1 abnormalities", long[-1].start)]
    shorter = resolve([replace(p, score=0.5) for p in at if p.text == "BRCA1"])
    assert [p.text for p in shorter] == ["BRCA1"]  # the longer one dropped by the selector: the shorter stays
