"""NER scoring: hand-computed cases, micro/macro arithmetic, output shape, and independent checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkner.evaluation.scoring import Mention, _augment, format_table, score

NER = Path(__file__).resolve().parents[3] / "shared" / "data" / "ner"


def m(start, end, type="Chemical", doc="d1", passage=0):
    return Mention(doc, passage, start, end, type)


def counts(table):
    return tuple(table["micro"][k] for k in ("tp", "fp", "fn"))


# gold, predicted, strict (tp, fp, fn), relaxed (tp, fp, fn)
CASES = {
    "exact hit": ([m(0, 5)], [m(0, 5)], (1, 0, 0), (1, 0, 0)),
    "end off by one": ([m(0, 5)], [m(0, 6)], (0, 1, 1), (1, 0, 0)),
    "start off by one": ([m(1, 5)], [m(0, 5)], (0, 1, 1), (1, 0, 0)),
    "touching is not overlapping": ([m(0, 5)], [m(5, 9)], (0, 1, 1), (0, 1, 1)),
    "wrong type": ([m(0, 5)], [m(0, 5, "Disease")], (0, 1, 1), (0, 1, 1)),
    "other passage": ([m(0, 5)], [m(0, 5, passage=1)], (0, 1, 1), (0, 1, 1)),
    "other document": ([m(0, 5)], [m(0, 5, doc="d2")], (0, 1, 1), (0, 1, 1)),
    "one prediction over two gold": ([m(0, 5), m(6, 10)], [m(0, 10)], (0, 1, 2), (1, 0, 1)),
    "two predictions in one gold": ([m(0, 10)], [m(0, 4), m(5, 10)], (0, 2, 1), (1, 1, 0)),
    "nested gold, inner predicted": ([m(0, 20), m(5, 10)], [m(5, 10)], (1, 0, 1), (1, 0, 1)),
    "nested gold, both predicted": ([m(0, 20), m(5, 10)], [m(5, 10), m(0, 20)], (2, 0, 0), (2, 0, 0)),
    "nested gold, shifted": ([m(0, 20), m(5, 10)], [m(0, 19), m(6, 10)], (0, 2, 2), (2, 0, 0)),
    # greedy by overlap size would pair (0,9) with (0,10) and leave (1,5) unmatched
    "matching beats greedy": ([m(0, 10), m(8, 12)], [m(0, 9), m(1, 5)], (0, 2, 2), (2, 0, 0)),
    "empty gold": ([], [m(0, 5)], (0, 1, 0), (0, 1, 0)),
    "empty predictions": ([m(0, 5)], [], (0, 0, 1), (0, 0, 1)),
    "both empty": ([], [], (0, 0, 0), (0, 0, 0)),
    "duplicates collapse": ([m(0, 5), m(0, 5)], [m(0, 5)] * 3, (1, 0, 0), (1, 0, 0)),
    "empty span matches itself": ([m(3, 3)], [m(3, 3), m(0, 9)], (1, 1, 0), (1, 1, 0)),
    "empty span inside a range": ([m(0, 9)], [m(3, 3)], (0, 1, 1), (0, 1, 1)),
    "plain tuples": ([("d1", 0, 0, 5, "Chemical")], [("d1", 0, 0, 6, "Chemical")], (0, 1, 1), (1, 0, 0)),
}


@pytest.mark.parametrize("gold, predicted, strict, relaxed", CASES.values(), ids=CASES.keys())
def test_hand_computed_cases(gold, predicted, strict, relaxed):
    result = score(gold, predicted)
    assert counts(result["strict"]) == strict
    assert counts(result["relaxed"]) == relaxed


def test_micro_and_macro_arithmetic_by_hand():
    gold = [m(0, 1), m(2, 3), m(4, 5), m(0, 1, "Disease")]
    predicted = [m(0, 1), m(2, 3), m(0, 1, "Disease"), m(7, 9, "Disease")]
    strict = score(gold, predicted)["strict"]
    # Chemical: tp 2 fp 0 fn 1 -> P 1, R 2/3, F1 0.8;  Disease: tp 1 fp 1 fn 0 -> P 1/2, R 1, F1 2/3
    assert strict["per_type"]["Chemical"] == pytest.approx(
        {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "tp": 2, "fp": 0, "fn": 1, "support": 3}
    )
    assert strict["per_type"]["Disease"]["f1"] == pytest.approx(2 / 3)
    assert strict["micro"] == pytest.approx({"precision": 0.75, "recall": 0.75, "f1": 0.75, "tp": 3, "fp": 1, "fn": 1})
    assert strict["macro"] == pytest.approx({"precision": 0.75, "recall": 5 / 6, "f1": 11 / 15})


def test_given_types_order_filter_and_macro_exclusion():
    gold = [m(0, 1), m(0, 1, "Disease")]
    predicted = [m(0, 1), m(5, 6, "Species")]
    result = score(gold, predicted, types=["Disease", "Chemical", "Gene"])
    strict = result["strict"]
    assert list(strict["per_type"]) == ["Disease", "Chemical", "Gene"]  # Species ignored
    assert strict["per_type"]["Gene"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 0, "fn": 0, "support": 0}
    assert strict["micro"]["fp"] == 0
    assert strict["macro"]["f1"] == pytest.approx(0.5)  # mean of Disease 0 and Chemical 1; Gene excluded
    # a type with predictions but no gold counts in macro, with zeros
    assert score(gold, predicted)["strict"]["macro"]["precision"] == pytest.approx(1 / 3)


def test_bad_input_is_clear():
    with pytest.raises(ValueError, match="ends before it starts"):
        score([m(5, 4)], [])
    with pytest.raises(ValueError, match="a mention is"):
        score([("d1", 0, 5)], [])
    with pytest.raises(ValueError, match="must not repeat"):
        score([], [], types=["Chemical", "Chemical"])


def test_json_shape():
    result = json.loads(json.dumps(score([m(0, 5)], [m(0, 6, "Disease")])))
    assert set(result) == {"strict", "relaxed"}
    for table in result.values():
        assert set(table) == {"micro", "macro", "per_type"}
        assert set(table["micro"]) == {"precision", "recall", "f1", "tp", "fp", "fn"}
        assert set(table["macro"]) == {"precision", "recall", "f1"}
        assert list(table["per_type"]) == ["Chemical", "Disease"]
        for row in table["per_type"].values():
            assert set(row) == {"precision", "recall", "f1", "tp", "fp", "fn", "support"}
    assert score([], [])["strict"]["macro"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_format_table():
    text = format_table(score([m(0, 1), m(2, 3), m(4, 5)], [m(0, 1), m(2, 4)]))
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1
    assert [line.split()[0] for line in lines[2:]] == ["Chemical", "micro", "macro"]
    # strict P 50.00 R 33.33 F1 40.00; relaxed P 100.00 R 66.67 F1 80.00
    assert lines[2].split() == ["Chemical", "3", "50.00", "33.33", "40.00", "100.00", "66.67", "80.00"]
    assert lines[4].split() == ["macro", "50.00", "33.33", "40.00", "100.00", "66.67", "80.00"]


def test_long_augmenting_path_does_not_recurse():
    # gold i holds prediction i and may move to i + 1; a new gold wanting prediction 0 shifts them all
    n = 5000
    edges = [[i, i + 1] for i in range(n)] + [[0]]
    owner = {i: i for i in range(n)}
    assert _augment(n, edges, owner)
    assert owner == {0: n, **{i + 1: i for i in range(n)}}
    assert not _augment(n, edges, owner)  # nothing left to shift into


def test_large_passage_with_chained_overlaps():
    gold = [m(2 * i, 2 * i + 2) for i in range(3000)]
    predicted = [m(2 * i + 1, 2 * i + 3) for i in range(3000)]  # each overlaps two gold
    assert counts(score(gold, predicted)["relaxed"]) == (3000, 0, 0)


def brute_force_matching(gold, predicted):
    """Largest set of disjoint compatible pairs, by exhaustive search."""

    def compatible(g, p):
        same = (g.doc_id, g.passage_index, g.type) == (p.doc_id, p.passage_index, p.type)
        shared = set(range(g.start, g.end)) & set(range(p.start, p.end))
        return same and (bool(shared) or (g.start, g.end) == (p.start, p.end))

    def best(i, used):
        if i == len(gold):
            return 0
        options = [best(i + 1, used)]
        options += [1 + best(i + 1, used | {j}) for j, p in enumerate(predicted) if j not in used and compatible(gold[i], p)]
        return max(options)

    return best(0, frozenset())


small_mentions = st.lists(
    st.builds(
        lambda passage, start, length, type: m(start, start + length, type, passage=passage),
        st.integers(0, 1),
        st.integers(0, 12),
        st.integers(0, 5),
        st.sampled_from(["A", "B"]),
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(small_mentions, small_mentions)
def test_against_independent_computation(gold, predicted):
    result = score(gold, predicted)
    g, p = set(gold), set(predicted)
    assert counts(result["strict"]) == (len(g & p), len(p - g), len(g - p))
    tp = brute_force_matching(sorted(g), sorted(p))
    assert counts(result["relaxed"]) == (tp, len(p) - tp, len(g) - tp)
    for kind in ("strict", "relaxed"):
        assert sum(row["tp"] for row in result[kind]["per_type"].values()) == result[kind]["micro"]["tp"]


def test_real_corpus_against_itself_and_shifted():
    path = NER / "bc5cdr" / "CDR_TrainingSet.PubTator.txt"
    if not path.exists():
        pytest.skip(f"shared data not found at {NER}")
    from bulkner.corpora.pubtator import read_pubtator

    gold = {m(s.start, s.end, s.type, g.document.doc_id, i) for g in read_pubtator(path) for i, s in g.mentions}
    perfect = score(gold, gold)
    assert perfect["strict"]["micro"]["f1"] == perfect["relaxed"]["macro"]["f1"] == 1.0
    shifted = {x._replace(end=x.end + 1) for x in gold}
    result = score(gold, shifted)
    assert result["relaxed"]["micro"]["f1"] == 1.0  # a one-to-one shift keeps a perfect matching
    assert result["strict"]["micro"]["tp"] == len(gold & shifted)
    assert result["strict"]["micro"]["tp"] < len(gold) / 50
