"""Tests for the answer formats (bulkner.tagging.formats): every format renders gold spans that its
parser maps back exactly, on generated cases and on every shared corpus, and a model's bad answers
are rejected, never misplaced."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given, settings

from bulkner.corpora.registry import read_corpus
from bulkner.evaluation.evaluate import oracle_check
from bulkner.schema import Span
from bulkner.tagging import FORMATS, answer_format
from bulkner.tagging.format import resolve_crossing
from bulkner.types import EntityType
from tests.tagging.test_parse import ORDER, sentence_and_spans

NER = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ner"
TYPES = ["Chemical", "Gene/Protein", "cell_type"]
SENTENCE = "Activation of the CD28 surface receptor in human T cells by IL-2 and [3H]thymidine; IL-2 again."
SIX = ["Gene", "Chemical", "Disease", "Species", "Variant", "CellLine"]


def at(text: str, type_: str, nth: int = 0, sentence: str = SENTENCE) -> Span:
    """The span of the ``nth`` occurrence of ``text``."""
    start = -1
    for _ in range(nth + 1):
        start = sentence.index(text, start + 1)
    return Span(start, start + len(text), type_)


NESTED = [at("CD28 surface receptor", "Gene"), at("CD28", "Gene"), at("human", "Species"), at("human T cells", "Gene"),
          at("IL-2", "Gene", 1), at("[3H]thymidine", "Chemical")]


def gold_for(fmt: str, spans: list[Span]) -> list[Span]:
    """The spans a format can write: crossing ones resolved as the gold side does."""
    scope = answer_format(fmt).crossing
    return sorted(set(spans), key=ORDER) if scope == "none" else resolve_crossing(spans, scope == "all")


@pytest.mark.parametrize("fmt", list(FORMATS))
@settings(max_examples=300, deadline=None)
@given(case=sentence_and_spans())
@example(case=("IL-2 and IL-2", [Span(9, 13, "Chemical")]))
@example(case=("a a a", [Span(2, 3, "Chemical"), Span(4, 5, "Chemical"), Span(2, 3, "cell_type")]))
@example(case=("aa([", [Span(3, 4, "Chemical")]))  # "[" reads as "(": the span list needs context
@example(case=("[Ca2+]i", [Span(0, 7, "Chemical"), Span(1, 5, "Chemical"), Span(1, 5, "cell_type")]))
def test_round_trip(fmt: str, case: tuple[str, list[Span]]) -> None:
    sentence, spans = case
    answer = answer_format(fmt)
    spans = gold_for(fmt, spans)
    result = answer.parse(answer.render(sentence, spans, TYPES), sentence, TYPES)
    assert result.spans == spans
    assert result.rejects == []


def test_brackets_write_one_copy_with_typed_nested_spans() -> None:
    answer = answer_format("brackets").render(SENTENCE, NESTED, SIX)
    assert answer == ("Activation of the [Gene [Gene CD28] surface receptor] in [Gene [Species human] T cells] by IL-2 "
                      "and [Chemical (3H)thymidine]; [Gene IL-2] again.")
    cut = answer.removesuffix(" again.")  # a copy that stops early still places every mention
    assert answer_format("brackets").parse(cut, SENTENCE, SIX).spans == sorted(NESTED, key=ORDER)


def test_forced_spans_are_the_mentions_a_forced_range_touches_from_bracket_to_bracket() -> None:
    """``Generation.forced`` ranges (text a constraint wrote against the model's first choice)
    mark the spans whose mention they touch, brackets and label included; nesting marks the outer too."""
    brackets = answer_format("brackets")
    answer = brackets.render(SENTENCE, NESTED, SIX)
    where = lambda text, n=0: (answer.index(text), answer.index(text) + n + len(text))
    forced = lambda *ranges: brackets.forced(answer, SENTENCE, SIX, ranges)
    cd28, receptor, thymidine = at("CD28", "Gene"), at("CD28 surface receptor", "Gene"), at("[3H]thymidine", "Chemical")
    assert forced(where("CD28]")) == {cd28, receptor}  # inside the inner mention: inside the outer one too
    assert forced(where(" receptor]")) == {receptor}
    assert forced(where("] in")) == {receptor}  # the closing bracket
    assert forced(where(" [Chemical", -len("Chemical"))) == {thymidine}  # " [": the opening bracket
    assert forced(where("Chemical")) == {thymidine}  # the label
    assert forced(where(" by IL-2 and")) == set() == forced(where("Activation of the")) == forced()
    assert brackets.forced("None", SENTENCE, SIX, [(0, 4)]) == set()
    # a span that an untouched mention gives as well is the model's own
    twice = "[Gene [Gene CD28]] surface"  # two mentions of one span: the forced one is the outer's "]"
    assert brackets.forced(twice, "CD28 surface", SIX, [(17, 18)]) == set()
    assert brackets.forced(twice, "CD28 surface", SIX, [(16, 17)]) == {Span(0, 4, "Gene")}  # the inner's "]": inside both
    assert answer_format("blocks").forced is None  # no grammar, no constraint


def test_brackets_refuse_crossing_spans_of_different_types() -> None:
    with pytest.raises(ValueError, match="cross"):
        answer_format("brackets").render("human T cells", [Span(0, 7, "Species"), Span(6, 13, "Gene")], SIX)


def test_brackets_label_spaces_are_underscores() -> None:
    answer = answer_format("brackets")
    text = answer.render("many T cells here", [Span(5, 12, "cell type")], ["cell type"])
    assert text == "many [cell_type T cells] here"
    assert answer.parse(text, "many T cells here", ["cell type"]).spans == [Span(5, 12, "cell type")]


def test_span_list_writes_context_only_where_the_first_occurrence_is_not_the_entity() -> None:
    answer = answer_format("spans")
    assert answer.render(SENTENCE, NESTED, SIX).split("\n") == [
        "Gene: CD28 surface receptor", "Gene: CD28", "Gene: human T cells", "Species: human",
        "Chemical: (3H)thymidine", "Gene: IL-2"]  # IL-2 follows [3H]thymidine: no context needed
    assert answer.render("IL-2 and IL-2", [Span(9, 13, "Gene")], SIX) == "Gene: and [IL-2]"


@pytest.mark.parametrize(("fmt", "output", "reason"), [
    ("brackets", "Activation of the [Enzyme CD28] surface receptor", "unknown_type"),
    ("brackets", "Activation of the [CD28] surface receptor", "unknown_type"),
    ("brackets", "Activation of the [Gene CD28 surface receptor", "unbalanced_brackets"),
    ("brackets", "Activation of the [Gene CD29] surface receptor", "unaligned_span"),
    ("spans", "Gene: CD29", "unaligned_span"),
    ("spans", "Enzyme: CD28", "unknown_type"),
    ("spans", "Gene: the [CD28", "unbalanced_brackets"),
    ("spans", "I found CD28", "stray_text"),
])
def test_bad_answers_are_rejected_not_misplaced(fmt: str, output: str, reason: str) -> None:
    result = answer_format(fmt).parse(output, SENTENCE, SIX)
    assert result.spans == []
    assert [r.reason for r in result.rejects] == [reason]


def test_answers_keep_the_good_part_of_a_partly_bad_answer() -> None:
    brackets = answer_format("brackets").parse("[Gene CD28] x [Enzyme surface] receptor in [Species human] T", SENTENCE, SIX)
    assert brackets.spans == [at("CD28", "Gene"), at("human", "Species")]
    assert [r.reason for r in brackets.rejects] == ["unknown_type"]
    spans = answer_format("spans").parse("Gene: CD28\nGene: CD29\nSpecies: human", SENTENCE, SIX)
    assert spans.spans == [at("CD28", "Gene"), at("human", "Species")]
    assert [r.reason for r in spans.rejects] == ["unaligned_span"]


def test_a_span_listed_out_of_order_is_still_placed() -> None:
    result = answer_format("spans").parse("Species: human\nGene: CD28", SENTENCE, SIX)
    assert result.spans == [at("CD28", "Gene"), at("human", "Species")]


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_no_entities(fmt: str) -> None:
    answer = answer_format(fmt)
    assert answer.render(SENTENCE, [], SIX) == "None"
    assert answer.parse("None", SENTENCE, SIX).spans == []
    assert answer.parse("", SENTENCE, SIX).rejects == []


def test_budget_scales_with_types_only_for_blocks() -> None:
    assert answer_format("blocks").max_tokens(40, 6) == 6 * answer_format("blocks").max_tokens(40, 1) - 20
    assert answer_format("brackets").max_tokens(40, 6) == answer_format("brackets").max_tokens(40, 1) == 96


def test_unknown_format_names_the_formats() -> None:
    with pytest.raises(ValueError, match="blocks, brackets, spans"):
        answer_format("json")


# --- oracle: every format carries every gold mention of every shared corpus ----------------

CORPORA = [
    ("pubtator", "biored/Train.filtered.PubTator", 11413),
    ("pubtator", "biored/Dev.filtered.PubTator", 2907),
    ("pubtator", "bc5cdr/CDR_DevelopmentSet.PubTator.txt", 9591),
    ("pubtator", "ncbi_disease/NCBIdevelopset_corpus.txt", 787),
    ("pubtator", "tmvar3/tmvar_v3.filtered.txt", None),
    ("brat", "s800/devel", None),
    ("genia-json", "genia/genia_test.json", None),
    ("conll", "jnlpba/conll/devel.tsv", None),
]


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize(("reader", "path", "mentions"), CORPORA)
def test_oracle_recovers_every_mention_a_sentence_holds(fmt: str, reader: str, path: str, mentions: int | None) -> None:
    if not (NER / path).exists():
        pytest.skip(f"shared data not found at {NER}")
    corpus = read_corpus(reader, NER / path)
    types = sorted(corpus.type_counts())
    report = oracle_check(corpus.documents, [EntityType(t, f"{t} mentions") for t in types], fmt=fmt)
    if mentions is not None:
        assert report["gold_mentions"] == mentions
    assert report["missed_other"] == 0, report
    assert report["spurious"] == 0, report
    assert not report["rejects"], report
    if answer_format(fmt).crossing == "none":
        assert report["crossing"] == 0, report



# --- resuming an answer: the generator writes only a window of the sentence (--generate window) ---


def resumed(sentence: str, spans: list[Span], start: int, end: int) -> tuple[str, int]:
    """The answer a perfect generator gives for the window ``[start, end)`` with the classifier's
    spans outside it known: the head, then the gold answer after it up to the stop text (all of it
    when the gold answer never writes the stop: an entity begins in it); and where it ends."""
    answer = answer_format("brackets")
    head, stop = answer.resume(sentence, [s for s in spans if s.end <= start or s.start >= end], start, end, SIX)
    gold = answer.render(sentence, spans, SIX)
    if not spans:
        gold = answer.render(sentence, [Span(0, len(sentence), "Gene")], SIX)[len("[Gene ") : -1]  # the plain copy
    assert gold.startswith(head)
    rest = gold[len(head) :]
    return head + answer.until_stop(rest, stop), end if stop and stop in rest else len(sentence)


def windows_of(sentence: str, spans: list[Span]) -> list[tuple[int, int]]:
    """Windows from a space to a space (or the ends) that cut no span, a few per start."""
    cuts = [0] + [k for k, c in enumerate(sentence) if c.isspace() and not any(s.start < k < s.end for s in spans)] + [len(sentence)]
    return [(a, b) for i, a in enumerate(cuts) for b in cuts[i + 1 : i + 4] if a < b]


def test_a_resumed_answer_parses_to_the_spans_up_to_the_window_end() -> None:
    answer = answer_format("brackets")
    for start, end in windows_of(SENTENCE, NESTED):  # source brackets (written as parentheses), nested spans across types
        text, until = resumed(SENTENCE, NESTED, start, end)
        result = answer.parse(text, SENTENCE, SIX)
        assert result.rejects == [] and sorted(result.spans) == sorted(s for s in NESTED if s.end <= until), (start, end)
    head, stop = answer.resume(SENTENCE, [at("CD28 surface receptor", "Gene"), at("CD28", "Gene")], SENTENCE.index(" in human"),
                               SENTENCE.index(" by"), SIX)
    assert head == "Activation of the [Gene [Gene CD28] surface receptor]" and stop == " by"
    at_ = SENTENCE.index
    assert answer.resume(SENTENCE, [], at_(" T cells"), at_(" IL-2"), SIX) == ("Activation of the CD28 surface receptor in human", " IL-2")
    # "IL-2" is in the window: the stop takes the words after it until they cannot occur there
    assert answer.resume(SENTENCE, [], at_(" by"), at_("; IL-2") + 1, SIX)[1] == " IL-2 again."
    assert answer.resume("Ca2+ [3H]x y", [], 4, 10, SIX) == ("Ca2+", " y") and answer.resume("Ca2+ y [3H]x", [], 4, 6, SIX)[1] == " (3H)x"
    assert answer.resume(SENTENCE, [], 0, len(SENTENCE), SIX) == ("", None)
    # a known span after the window: the stop ends where its bracket goes, or is its first word
    assert answer.resume(SENTENCE, [at("IL-2", "Gene")], 0, at_(" IL-2"), SIX) == ("", " IL-2")  # "[Gene IL-2" holds " IL-2"
    assert answer.resume("X in the (ITD) case", [Span(10, 13, "Disease")], 0, 8, SIX) == ("", " (")
    assert answer.resume("X (Y) in the (ITD) case", [Span(14, 17, "Disease")], 0, 12, SIX) == ("", None)  # " (" is in the window
    assert answer.resume("Ca2+ [3H]x y", [], 4, 10, SIX) == ("Ca2+", " y") and answer.resume("Ca2+ y [3H]x", [], 4, 6, SIX)[1] == " (3H)x"


def test_every_window_of_real_sentences_resumes_to_its_spans() -> None:
    """BioRED development abstracts (all six types, Unicode) and tmVar3 (variants): for every window
    that cuts no mention, head and stop give back exactly the mentions up to its end."""
    from bulkner.corpora.gold import sentence_gold
    from bulkner.pipeline.tagger import segment

    answer = answer_format("brackets")
    checked = stopped = 0
    for path in ("biored/Dev.filtered.PubTator", "tmvar3/tmvar_v3.filtered.txt"):
        if not (NER / path).exists():
            pytest.skip(f"shared data not found at {NER}")
        gold = read_corpus("pubtator", NER / path).documents[:25]
        sentences, _ = segment([g.document for g in gold], 100_000)
        placed = sentence_gold(sentences, gold, SIX, "all")
        for sentence in sentences:
            spans = sorted(placed.spans[sentence.key])
            for start, end in windows_of(sentence.text, spans):
                text, until = resumed(sentence.text, spans, start, end)
                result = answer.parse(text, sentence.text, SIX)
                assert result.rejects == [] and sorted(result.spans) == [s for s in spans if s.end <= until], (sentence.text, start, end)
                checked += 1
                stopped += until < len(sentence.text)
    assert checked > 5000 and stopped > 0.9 * checked, (checked, stopped)


def test_a_stop_inside_an_entity_leaves_its_bracket_out_and_the_rest_of_the_answer_whole() -> None:
    until_stop = answer_format("brackets").until_stop
    assert until_stop(" the [Gene sodium/iodide symporter] gene", " sodium/iodide") == " the"  # the label's space
    assert until_stop(" in [Species Zea mays] plants", " mays") == " in Zea"  # an entity past the window
    assert until_stop(" [Gene [Gene CD28] surface receptor]", " surface") == " [Gene CD28]"
    assert until_stop(r" of \[3H\] and [Chemical X] then", " then") == r" of \[3H\] and [Chemical X]"
    assert until_stop(" a [Gene b c", None) == " a [Gene b c"  # no stop: the model's own answer, rejects and all
    assert until_stop(" a [Gene b c", " d") == " a [Gene b c"  # a stop never written
