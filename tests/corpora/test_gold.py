"""Gold mentions placed on sentences: the one mapping of the oracle, tagger training and selector training."""

from __future__ import annotations

from bulkner.corpora import GoldDocument
from bulkner.corpora.gold import sentence_gold
from bulkner.pipeline.tagger import segment
from bulkner.schema import Document, Passage, Span


def test_same_type_crossing_mentions_keep_the_longer_and_other_types_are_counted():
    text = "alpha beta gamma delta"
    gold = GoldDocument(Document("t:1", 1, (Passage("text", text),)),
                        ((0, Span(0, 10, "A")), (0, Span(6, 22, "A")), (0, Span(6, 16, "B")), (0, Span(0, 5, "C"))))
    sentences, _ = segment([gold.document], 2000)
    placed = sentence_gold(sentences, [gold], ["A", "B"])
    assert placed.spans == {sentences[0].key: [Span(6, 22, "A"), Span(6, 16, "B")]}  # (start, -end, type) order
    assert placed.crossing == [("t:1", 0, Span(0, 10, "A"))] and placed.other_types == 1 and placed.cut == []
    assert sum(map(len, sentence_gold(sentences, [gold]).spans.values())) == 3  # every type: C too, the crossing A still out


def test_mentions_across_a_sentence_boundary_are_cut_and_offsets_move_into_the_sentence():
    text = "Aspirin helps. Heart failure worsens it."
    #        0         1         2         3
    gold = GoldDocument(Document("t:2", 1, (Passage("abstract", text),)),
                        ((0, Span(0, 7, "Chemical")), (0, Span(15, 28, "Disease")), (0, Span(8, 20, "Disease"))))
    sentences, _ = segment([gold.document], 2000)
    assert [s.text for s in sentences] == ["Aspirin helps.", "Heart failure worsens it."]
    placed = sentence_gold(sentences, [gold], ["Chemical", "Disease"])
    assert placed.spans[sentences[0].key] == [Span(0, 7, "Chemical")]
    assert placed.spans[sentences[1].key] == [Span(0, 13, "Disease")]
    assert sentences[1].text[0:13] == "Heart failure"
    assert placed.cut == [("t:2", 0, Span(8, 20, "Disease"))]


def test_a_passage_without_sentences_loses_its_mentions_as_cut_not_silently():
    """A passage whose only sentence was rejected (too long) gives no sentence: its mentions are cut."""
    gold = GoldDocument(Document("t:3", 1, (Passage("text", "x" * 50 + " aspirin"),)), ((0, Span(51, 58, "Chemical")),))
    sentences, rejects = segment([gold.document], 20)
    assert sentences == [] and len(rejects) == 1
    assert sentence_gold(sentences, [gold], ["Chemical"]).cut == [("t:3", 0, Span(51, 58, "Chemical"))]
