"""Tests for bulkner.tagging.format: escaping and rendering LLMNER target text."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkner.schema import Span
from bulkner.tagging.format import (
    NO_ENTITIES,
    escape,
    find_crossing,
    render,
    resolve_crossing,
    source_view,
    unescape,
)

GENIA_TYPES = ["protein", "cell_type", "DNA", "RNA", "cell_line"]

# The three LLMNER training examples (GENIA 3.02, article MEDLINE:95369245, LLMNER tokenisation).
LLMNER_EXAMPLES = [
    (
        "IL-2 gene expression and NF-kappa B activation through CD28 requires reactive oxygen "
        "production by 5-lipoxygenase .",
        "protein:  IL-2 gene expression and [NF-kappa B] activation through [CD28] requires "
        "reactive oxygen production by [5-lipoxygenase] .  \n"
        "DNA:  [IL-2 gene] expression and NF-kappa B activation through CD28 requires reactive "
        "oxygen production by 5-lipoxygenase .",
    ),
    (
        "Activation of the CD28 surface receptor provides a major costimulatory signal for T cell "
        "activation resulting in enhanced production of interleukin-2 ( IL-2 ) and cell "
        "proliferation .",
        "protein:  Activation of the [[CD28] surface receptor] provides a major costimulatory "
        "signal for T cell activation resulting in enhanced production of [interleukin-2] ( "
        "[IL-2] ) and cell proliferation .",
    ),
    (
        "In primary T lymphocytes we show that CD28 ligation leads to the rapid intracellular "
        "formation of reactive oxygen intermediates ( ROIs ) which are required for CD28 "
        "-mediated activation of the NF-kappa B / CD28-responsive complex and IL-2 expression .",
        "protein:  In primary T lymphocytes we show that [CD28] ligation leads to the rapid "
        "intracellular formation of reactive oxygen intermediates ( ROIs ) which are required for "
        "[CD28] -mediated activation of the [NF-kappa B] / [[CD28]-responsive complex] and "
        "[IL-2] expression .  \n"
        "cell_type:  In [primary T lymphocytes] we show that CD28 ligation leads to the rapid "
        "intracellular formation of reactive oxygen intermediates ( ROIs ) which are required for "
        "CD28 -mediated activation of the NF-kappa B / CD28-responsive complex and IL-2 "
        "expression .",
    ),
]


def gold_spans(output: str, types: list[str]) -> list[Span]:
    """Spans of a verbatim tagged output without escapes, found by a reference bracket walk."""
    spans = []
    for block in output.split("  \n"):
        label, text = block.split(":  ", 1)
        stack, plain = [], 0
        for char in text:
            if char == "[":
                stack.append(plain)
            elif char == "]":
                spans.append(Span(stack.pop(), plain, label))
            else:
                plain += 1
        assert label in types
    return spans


ESCAPE_CASES = [
    ("", ""),
    ("plain text", "plain text"),
    ("[3H]thymidine", "(3H)thymidine"),  # source brackets as the model reads them: parentheses
    ("[Ca2+]i", "(Ca2+)i"),
    ("[18F]FDG", "(18F)FDG"),
    ("a\\b", "a\\\\b"),
    ("\\[", "\\\\("),
    ("line\nbreak\r", "line\\nbreak\\r"),
    ("中文[x]", "中文(x)"),
]


@pytest.mark.parametrize(("text", "escaped"), ESCAPE_CASES)
def test_escape_table(text: str, escaped: str) -> None:
    assert escape(text) == escaped
    assert unescape(escaped) == source_view(text) and len(source_view(text)) == len(text)


def test_unescape_still_reads_escaped_source_brackets() -> None:
    """An answer in the earlier escaped form (``\\[3H\\]``) reads as the source's brackets."""
    assert unescape("\\[3H\\]thymidine") == "[3H]thymidine"


@given(st.text())
def test_unescape_inverts_escape_up_to_the_source_view(text: str) -> None:
    escaped = escape(text)
    assert unescape(escaped) == source_view(text)
    assert not {"[", "]", "\n", "\r"} & set(re.sub(r"\\.", "", escaped, flags=re.S))


def test_unescape_keeps_a_lone_backslash() -> None:
    assert unescape("a\\b \\") == "a\\b \\"


@pytest.mark.parametrize(("sentence", "output"), LLMNER_EXAMPLES)
def test_llmner_examples_render_verbatim(sentence: str, output: str) -> None:
    assert render(sentence, gold_spans(output, GENIA_TYPES), GENIA_TYPES) == output


S = "aspirin and ibuprofen cause renal failure"
RENDER_CASES = [
    # (spans, types, labels, expected)
    ([], None, None, NO_ENTITIES),
    ([Span(0, 7, "Chem")], None, None, "Chem:  [aspirin] and ibuprofen cause renal failure"),
    (  # duplicates collapse; span at the sentence end
        [Span(34, 41, "Dis"), Span(34, 41, "Dis"), Span(28, 41, "Dis")],
        None,
        None,
        "Dis:  aspirin and ibuprofen cause [renal [failure]]",
    ),
    (  # adjacent spans close before they open
        [Span(0, 7, "Chem"), Span(7, 11, "Chem")],
        None,
        None,
        "Chem:  [aspirin][ and] ibuprofen cause renal failure",
    ),
    (  # block order follows the type list, not the text
        [Span(0, 7, "Chem"), Span(28, 41, "Dis")],
        ["Dis", "Chem"],
        None,
        "Dis:  aspirin and ibuprofen cause [renal failure]  \nChem:  [aspirin] and ibuprofen cause renal failure",
    ),
    (  # None orders by first occurrence; labels rename
        [Span(28, 41, "Dis"), Span(12, 21, "Chem")],
        None,
        {"Chem": "Chemical"},
        "Chemical:  aspirin and [ibuprofen] cause renal failure  \nDis:  aspirin and ibuprofen cause [renal failure]",
    ),
    (  # overlapping spans of different types go to their own blocks
        [Span(0, 21, "Chem"), Span(0, 7, "Drug")],
        None,
        None,
        "Chem:  [aspirin and ibuprofen] cause renal failure  \nDrug:  [aspirin] and ibuprofen cause renal failure",
    ),
    ([Span(0, 41, "X")], None, None, "X:  [aspirin and ibuprofen cause renal failure]"),
]


@pytest.mark.parametrize(("spans", "types", "labels", "expected"), RENDER_CASES)
def test_render_table(spans, types, labels, expected) -> None:
    assert render(S, spans, types, labels) == expected


def test_render_writes_source_brackets_as_parentheses() -> None:
    sentence = "[3H]thymidine and [Ca2+]i rose"
    spans = [Span(0, 13, "Chemical"), Span(18, 25, "Chemical"), Span(19, 23, "Chemical")]
    assert render(sentence, spans) == "Chemical:  [(3H)thymidine] and [([Ca2+])i] rose"


RENDER_ERRORS = [
    ([Span(3, 3, "Chem")], None, "empty or outside"),
    ([Span(-1, 3, "Chem")], None, "empty or outside"),
    ([Span(30, 42, "Chem")], None, "empty or outside"),
    ([Span(0, 3, "")], None, "empty type"),
    ([Span(0, 11, "Chem"), Span(8, 21, "Chem")], None, r"crossing.*\(0, 11, 'Chem'\)×\(8, 21, 'Chem'\)"),
    ([Span(0, 7, "Chem")], ["Dis"], r"\['Chem'\] are not in the type list"),
    ([Span(0, 7, "a:b")], None, "label 'a:b'"),
]


@pytest.mark.parametrize(("spans", "types", "message"), RENDER_ERRORS)
def test_render_errors(spans, types, message) -> None:
    with pytest.raises(ValueError, match=message):
        render(S, spans, types)


def test_crossing_spans_of_different_types_are_fine() -> None:
    spans = [Span(0, 11, "Chem"), Span(8, 21, "Dis")]
    assert find_crossing(spans) == []
    assert render(S, spans).count("\n") == 1


RESOLVE_CASES = [
    ([Span(0, 11, "C"), Span(8, 21, "C")], [Span(8, 21, "C")]),  # keep longer
    ([Span(0, 5, "C"), Span(3, 8, "C")], [Span(0, 5, "C")]),  # tie: earlier wins
    ([Span(0, 11, "C"), Span(8, 21, "D")], [Span(0, 11, "C"), Span(8, 21, "D")]),
    (  # nested spans are kept; the crossing short one goes
        [Span(0, 21, "C"), Span(0, 7, "C"), Span(5, 25, "C")],
        [Span(0, 21, "C"), Span(0, 7, "C")],
    ),
    ([Span(0, 7, "C"), Span(0, 7, "C")], [Span(0, 7, "C")]),
]


@pytest.mark.parametrize(("spans", "expected"), RESOLVE_CASES)
def test_resolve_crossing_keep_longer(spans, expected) -> None:
    kept = resolve_crossing(spans)
    assert kept == expected
    assert find_crossing(kept) == []
