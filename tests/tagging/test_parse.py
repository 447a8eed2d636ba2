"""Tests for bulkner.tagging.parse: robust parsing and alignment of LLMNER-tagged output."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bulkner.schema import Span
from bulkner.tagging.format import find_crossing, render, resolve_crossing
from bulkner.tagging.parse import normalize_label, parse
from tests.tagging.test_format import GENIA_TYPES, LLMNER_EXAMPLES, gold_spans

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ner"
PUBTATOR_FILES = [
    DATA / "bc5cdr" / "CDR_TrainingSet.PubTator.txt",
    DATA / "ncbi_disease" / "NCBItrainset_corpus.txt",
]
TYPES = ["Chemical", "Gene/Protein", "cell_type"]
ORDER = lambda s: (s.start, -s.end, s.type)  # noqa: E731  (ParseResult's span order)


# --- round trip property -------------------------------------------------------------------

ALPHABET = st.sampled_from(list("ab cd-()[]\\:：\n\t.,\"'“”") + list("éßαβ中文字氨基酸") + ["\u00a0", "Ca2+"])
sentences = st.lists(ALPHABET, min_size=1, max_size=40).map("".join)


@st.composite
def sentence_and_spans(draw) -> tuple[str, list[Span]]:
    """A sentence and a non-crossing-per-type span set whose ends are not whitespace."""
    sentence = draw(sentences)
    n = len(sentence)
    bounds = st.tuples(st.integers(0, n - 1), st.integers(1, n), st.sampled_from(TYPES))
    raw = draw(st.lists(bounds, max_size=8))
    spans = [
        Span(start, end, type_)
        for start, end, type_ in raw
        if start < end and not sentence[start].isspace() and not sentence[end - 1].isspace()
    ]
    return sentence, resolve_crossing(spans)


@settings(max_examples=400, deadline=None)
@given(sentence_and_spans())
@example(("[3H]thymidine", [Span(0, 13, "Chemical"), Span(1, 3, "Chemical")]))
@example(("[Ca2+]i", [Span(0, 7, "Chemical"), Span(1, 5, "Chemical")]))
@example(("氨基酸中文字", [Span(0, 3, "Chemical"), Span(3, 6, "cell_type"), Span(0, 6, "Gene/Protein")]))
@example(("a\\b]c", [Span(0, 1, "Chemical"), Span(1, 3, "Chemical"), Span(3, 5, "Chemical")]))
def test_round_trip(case: tuple[str, list[Span]]) -> None:
    sentence, spans = case
    result = parse(render(sentence, spans, TYPES), sentence, TYPES)
    assert result.spans == sorted(set(spans), key=ORDER)
    assert result.rejects == []


# --- the LLMNER examples --------------------------------------------------------------------


@pytest.mark.parametrize(("sentence", "output"), LLMNER_EXAMPLES)
def test_llmner_examples_parse(sentence: str, output: str) -> None:
    result = parse(output, sentence, GENIA_TYPES)
    assert result.spans == sorted(gold_spans(output, GENIA_TYPES), key=ORDER)
    assert result.rejects == []
    texts = {sentence[s.start : s.end] for s in result.spans}
    assert {"CD28", "IL-2", "NF-kappa B", "primary T lymphocytes", "IL-2 gene"} & texts


# --- adversarial outputs --------------------------------------------------------------------

SENT, SENT_OUT = LLMNER_EXAMPLES[1]
P = ["protein"]


def at(text: str, type_: str = "protein", nth: int = 0, sentence: str = SENT) -> Span:
    """The span of the ``nth`` occurrence of ``text`` in ``sentence``."""
    start = -1
    for _ in range(nth + 1):
        start = sentence.index(text, start + 1)
    return Span(start, start + len(text), type_)


GOLD = [at("CD28 surface receptor"), at("CD28"), at("interleukin-2"), at("IL-2")]
QUOTED = 'Treatment with "low-dose" aspirin reduced COX-2 levels .'
CHEM = ["Chemical"]

ADVERSARIAL = [
    # id, output, sentence, types, expected spans, expected reject reasons
    ("verbatim", SENT_OUT, SENT, P, GOLD, []),
    ("no space after colon", SENT_OUT.replace(":  ", ":"), SENT, P, GOLD, []),
    ("trailing whitespace", SENT_OUT + "   \r\n", SENT, P, GOLD, []),
    ("changed whitespace", SENT_OUT.replace("the [[CD28] surface", "the[[CD28]  surface").replace(" ( ", "("), SENT, P, GOLD, []),
    ("spaces inside brackets", SENT_OUT.replace("[IL-2]", "[ IL-2 ]"), SENT, P, GOLD, []),
    ("whitespace inside a mention", SENT_OUT.replace("[interleukin-2]", "[interleukin -2]"), SENT, P, GOLD, []),
    ("skipped word", SENT_OUT.replace("a major ", "a "), SENT, P, GOLD, []),
    ("repeated clause", SENT_OUT.replace("resulting in", "resulting in T cell activation resulting in"), SENT, P, GOLD, []),
    (
        "truncated at an open bracket",
        SENT_OUT[: SENT_OUT.index("[IL-2]") + 4],
        SENT, P, GOLD[:3], ["unbalanced_brackets"],
    ),
    ("truncated between mentions", SENT_OUT[: SENT_OUT.index("( [IL-2]")], SENT, P, GOLD[:3], []),
    ("hallucinated mention", SENT_OUT.replace("signal for T", "signal for [TNF-alpha] T"), SENT, P, GOLD, ["unaligned_span"]),
    ("changed mention text", SENT_OUT.replace("[IL-2]", "[IL-4]"), SENT, P, GOLD[:3], ["unaligned_span"]),
    ("extra closing bracket", SENT_OUT.replace("[interleukin-2]", "[interleukin-2]]"), SENT, P, GOLD, ["unbalanced_brackets"]),
    ("extra opening bracket", SENT_OUT.replace("cell proliferation", "[cell proliferation"), SENT, P, GOLD, ["unbalanced_brackets"]),
    ("empty mention", SENT_OUT.replace("and cell", "and [] cell"), SENT, P, GOLD, ["empty_mention"]),
    ("duplicate identical block", SENT_OUT + "  \n" + SENT_OUT, SENT, P, GOLD, []),
    (
        "duplicate blocks disagree: union",
        SENT_OUT.replace("[interleukin-2]", "interleukin-2") + "\nprotein:  " + SENT.replace("interleukin-2", "[interleukin-2]"),
        SENT, P, GOLD, [],
    ),
    ("chat preamble", "Sure! Here are the entities:\n\n" + SENT_OUT, SENT, P, GOLD, ["stray_text"]),
    ("preamble without punctuation", "Here are the entities:\n" + SENT_OUT, SENT, P, GOLD, ["stray_text"]),
    ("type not asked", SENT_OUT + "  \nDNA:  [Activation] of the CD28 surface receptor", SENT, P, GOLD, ["unknown_type"]),
    ("block says None", "protein:  None", SENT, P, [], []),
    ("empty", "", SENT, P, [], []),
    ("None", "None", SENT, P, [], []),
    ("None with whitespace", "  None \n", SENT, P, [], []),
    ("garbage", "I cannot help with that request!", SENT, P, [], ["no_blocks"]),
    ("not a string", None, SENT, P, [], ["no_blocks"]),
    ("upper-case label", SENT_OUT.replace("protein:", "PROTEIN:"), SENT, P, GOLD, []),
    ("markdown bullet label", SENT_OUT.replace("protein:", "- **Protein**:"), SENT, P, GOLD, []),
    ("full-width colon, one space", SENT_OUT.replace("protein:  ", "protein： "), SENT, P, GOLD, []),
    ("label variant gene_protein", "gene_protein:  [aspirin] x", "aspirin x", ["Gene/Protein"], [Span(0, 7, "Gene/Protein")], []),
    ("label variant GENE PROTEIN", "GENE PROTEIN :[aspirin] x", "aspirin x", ["Gene/Protein"], [Span(0, 7, "Gene/Protein")], []),
    ("alias", "drug:  [aspirin] x", "aspirin x", {"Chemical": ["drug"]}, [Span(0, 7, "Chemical")], []),
    ("smart quotes outside mentions", "Chemical:  " + QUOTED.replace('"low-dose"', "“low-dose”").replace("aspirin", "[aspirin]"), QUOTED, CHEM, [at("aspirin", "Chemical", sentence=QUOTED)], []),
    ("smart quotes at a mention boundary", "Chemical:  " + QUOTED.replace('"low-dose" aspirin', "[“low-dose” aspirin]"), QUOTED, CHEM, [], ["unaligned_span"]),
    (
        "unescaped source brackets: inner text kept, outer mention rejected",
        "Chemical:  [[3H]thymidine] uptake", "[3H]thymidine uptake", CHEM,
        [Span(1, 3, "Chemical")], ["unaligned_span"],
    ),
    ("escaped source brackets", "Chemical:  [\\[18F\\]FDG] uptake", "[18F]FDG uptake", CHEM, [Span(0, 8, "Chemical")], []),
]


@pytest.mark.parametrize(
    ("output", "sentence", "types", "expected", "reasons"),
    [case[1:] for case in ADVERSARIAL],
    ids=[case[0] for case in ADVERSARIAL],
)
def test_adversarial(output, sentence, types, expected, reasons) -> None:
    result = parse(output, sentence, types)
    assert result.spans == sorted(expected, key=ORDER)
    assert sorted(r.reason for r in result.rejects) == sorted(reasons)
    assert all(r.stage == "parse" for r in result.rejects)


@pytest.mark.parametrize("label", ["Gene/Protein", "gene_protein", "GENE PROTEIN", "- gene-protein", "**Gene Protein**"])
def test_normalize_label(label: str) -> None:
    assert normalize_label(label) == "gene protein"


def test_ambiguous_types_are_an_error() -> None:
    with pytest.raises(ValueError, match="ambiguous"):
        parse("x:  y", "y", ["Gene/Protein", "gene_protein"])


# --- real data: every BC5CDR / NCBI-disease training title and abstract ----------------------


def read_pubtator(path: Path) -> list[tuple[str, list[Span]]]:
    """Titles and abstracts as separate passages with their gold spans (PubTator format)."""
    passages = []
    for doc in path.read_text(encoding="utf-8").strip().split("\n\n"):
        lines = doc.split("\n")
        title, abstract = lines[0].split("|t|", 1)[1], lines[1].split("|a|", 1)[1]
        title_spans, abstract_spans, shift = [], [], len(title) + 1
        for line in lines[2:]:
            fields = line.split("\t")
            if len(fields) < 5 or not fields[1].isdigit():
                continue  # relation lines
            start, end, type_ = int(fields[1]), int(fields[2]), fields[4]
            if end <= len(title):
                title_spans.append(Span(start, end, type_))
            else:
                abstract_spans.append(Span(start - shift, end - shift, type_))
        passages += [(title, title_spans), (abstract, abstract_spans)]
    return passages


REAL_DATA_COUNTS = {  # distinct gold spans; no same-type crossing pairs in either corpus
    "bc5cdr": {"passages": 1000, "spans": 9385, "crossing": 0},
    "ncbi_disease": {"passages": 1186, "spans": 5145, "crossing": 0},
}


@pytest.mark.parametrize("path", PUBTATOR_FILES, ids=lambda p: p.parent.name)
def test_real_data_round_trip(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"shared data missing: {path}")
    passages = read_pubtator(path)
    types = sorted({s.type for _, spans in passages for s in spans})
    counts = Counter()
    for text, spans in passages:
        crossing = find_crossing(sorted(set(spans), key=ORDER))
        gold = resolve_crossing(spans) if crossing else sorted(set(spans), key=ORDER)
        result = parse(render(text, gold, types), text, types)
        assert result.spans == gold, text[:80]
        assert result.rejects == []
        counts.update(passages=1, spans=len(gold), crossing=len(crossing))
    assert dict(counts) == REAL_DATA_COUNTS[path.parent.name]


# --- robustness: damaged outputs never raise and never yield a span off the sentence ----------


@st.composite
def damaged_output(draw) -> tuple[str, str]:
    """A rendered output with a few characters deleted, inserted or replaced."""
    sentence, spans = draw(sentence_and_spans())
    chars = list(render(sentence, spans, TYPES))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(chars)))
        edit = draw(st.sampled_from(["delete", "insert", "replace"]))
        new = draw(st.sampled_from(list("[]\\ x:\n中")))
        if edit == "insert" or pos == len(chars):
            chars.insert(pos, new)
        elif edit == "delete":
            del chars[pos]
        else:
            chars[pos] = new
    return sentence, "".join(chars)


@settings(max_examples=300, deadline=None)
@given(damaged_output())
def test_damaged_output_gives_valid_spans(case: tuple[str, str]) -> None:
    sentence, output = case
    result = parse(output, sentence, TYPES)
    for start, end, type_ in result.spans:
        assert 0 <= start < end <= len(sentence) and type_ in TYPES
        assert not sentence[start].isspace() and not sentence[end - 1].isspace()
