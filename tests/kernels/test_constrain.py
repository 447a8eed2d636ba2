"""Tests for constrained decoding (bulkner.kernels.constrain) on real sentences and SmolLM2's
tokenizer: every gold answer stays allowed token by token, and every answer the constraint allows
parses without a reject and maps back onto its sentence."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bulkner.config import MAX_SENTENCE_CHARS
from bulkner.corpora.registry import read_corpus
from bulkner.engines.oracle import oracle_targets
from bulkner.kernels.constrain import Constraint, Vocabulary
from bulkner.pipeline.tagger import segment
from bulkner.schema import Span
from bulkner.tagging.format import NO_ENTITIES
from bulkner.tagging import answer_format
from bulkner.tagging.inline import Grammar, parse, render

NER = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ner"
SIX = ["Gene", "Chemical", "Disease", "Species", "Variant", "CellLine"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from bulkner.checkpoints import save_gguf_tokenizer, smollm2_gguf_path

    out = tmp_path_factory.mktemp("smollm2-tokenizer")
    save_gguf_tokenizer(smollm2_gguf_path(), out)
    return AutoTokenizer.from_pretrained(out)


@pytest.fixture(scope="module")
def vocabulary(tokenizer) -> Vocabulary:
    return Vocabulary.of(tokenizer, [tokenizer.convert_tokens_to_ids("<|im_end|>")])


def gold_answers(path: Path, types: list[str], documents: int) -> list[tuple[str, str]]:
    """(sentence, gold brackets answer) for the first ``documents`` documents of a PubTator corpus."""
    if not path.is_file():
        pytest.skip(f"shared data missing: {path}")
    gold = read_corpus("pubtator", path).documents[:documents]
    sentences, _ = segment([g.document for g in gold], MAX_SENTENCE_CHARS)
    targets, _ = oracle_targets(sentences, gold, types, "brackets")
    return [(s.text, targets[s.key]) for s in sentences]


def follow(vocabulary: Vocabulary, sentence: str, ids: list[int], types=SIX) -> None:
    """Assert that each token of ``ids`` and then the end token are allowed in turn, and the end only last."""
    constraint = Constraint(vocabulary, Grammar(sentence, types))
    for k, token in enumerate(ids):
        allowed = constraint.allowed()
        assert token in allowed, (sentence, k)
        assert not set(vocabulary.end_ids) & set(allowed) or k == 0 and sentence.startswith(NO_ENTITIES)
        constraint.advance(ids[: k + 1])
    assert set(vocabulary.end_ids) <= set(constraint.allowed())


@pytest.mark.parametrize("corpus, types", [
    ("biored/Dev.filtered.PubTator", SIX),
    ("bc5cdr/CDR_DevelopmentSet.PubTator.txt", ["Chemical", "Disease"]),
    ("ncbi_disease/NCBIdevelopset_corpus.txt", ["Disease"]),
])
def test_every_gold_answer_is_allowed_token_by_token(tokenizer, vocabulary, corpus, types) -> None:
    """Every gold answer but those with a mention that starts or ends inside a word (no bracket
    goes between two letters or digits), which are few."""
    cases = gold_answers(NER / corpus, types, 12)
    assert len(cases) > 80 and any(answer != NO_ENTITIES for _, answer in cases)
    inside = [(s, a) for s, a in cases if any(cuts_a_word(s, span) for span in parse(a, s, types).spans)]
    assert len(inside) <= 0.03 * len(cases)  # BioRED dev: 6 of 2,907 mentions, 3 of the first 130 sentences (H3 in H3K36)
    for sentence, answer in cases:
        if (sentence, answer) not in inside:
            follow(vocabulary, sentence, tokenizer.encode(answer, add_special_tokens=False), types)
    for sentence, answer in inside:
        with pytest.raises(AssertionError):
            follow(vocabulary, sentence, tokenizer.encode(answer, add_special_tokens=False), types)


def cuts_a_word(sentence: str, span: Span) -> bool:
    """Whether ``span`` starts or ends between two letters or digits."""
    return any(0 < at < len(sentence) and sentence[at - 1].isalnum() and sentence[at].isalnum() for at in (span.start, span.end))


def test_no_bracket_goes_inside_a_word(vocabulary) -> None:
    """A model pushed off its copy once wrote one bracket per character of "vincristine"."""
    grammar = Grammar("toxic (vincristine-induced) neuropathy", SIX)
    at = len(b"toxic (v")
    assert not grammar.boundary[at] and grammar.boundary[len(b"toxic (")] and grammar.boundary[len(b"toxic (vincristine")]
    assert all(b != ord("[") for b, _ in grammar.moves(("text", at, 0, False)))
    # the words the parser and the span selector see (``WORD_RE``: ``\w``, the underscore included)
    grammar = Grammar("IL_6 and Ca²⁺", SIX)
    assert [grammar.boundary[len("IL_6 and Ca²⁺"[:k].encode())] for k in (2, 3, 11, 12)] == [False, False, False, True]


def test_forced_ranges_are_the_text_the_forced_tokens_wrote(tokenizer) -> None:
    from bulkner.kernels.constrain import forced_ranges

    answer = "Uptake of [Chemical (3H)thymidine] by naïve CD4+ T cells."
    ids = tokenizer.encode(answer, add_special_tokens=False)
    decode = lambda t: tokenizer.decode(t, skip_special_tokens=True)
    naive = next(k for k in range(len(ids)) if "ï" in decode(ids[: k + 1]))  # the token that completes "ï"
    steps = [0, naive, len(ids) - 1, len(ids) + 3]  # a step past the answer gives nothing
    got = [answer[a:b] for a, b in forced_ranges(decode, ids, steps)]
    assert got == [decode(ids[:1]), decode(ids[: naive + 1])[len(decode(ids[:naive])) :], "."] and "ï" in got[1]
    assert forced_ranges(decode, ids + list(tokenizer.all_special_ids[:1]), [len(ids)]) == ()  # an end token writes nothing
    split = tokenizer.encode("Ca 😀", add_special_tokens=False)  # the emoji's bytes over two tokens
    assert decode(split[:-1]).endswith("\ufffd") and forced_ranges(decode, split, [len(split) - 1]) == ((3, 4),)  # "😀" itself


def test_nested_spans_source_brackets_and_unicode_are_allowed(tokenizer, vocabulary) -> None:
    sentence = "Activation of the CD28 surface receptor by [3H]thymidine and Ca²⁺ in naïve β-cells (n = 12)."
    spans = [Span(18, 39, "Gene"), Span(18, 22, "Gene"), Span(43, 56, "Chemical"), Span(61, 65, "Chemical"),
             Span(18, 22, "Variant")]
    answer = render(sentence, spans, SIX)
    assert "[Chemical (3H)thymidine]" in answer and "[Gene [Gene [Variant CD28]] surface receptor]" in answer
    follow(vocabulary, sentence, tokenizer.encode(answer, add_special_tokens=False))


def test_a_source_bracket_is_copied_as_a_parenthesis_never_opened(vocabulary) -> None:
    constraint = Constraint(vocabulary, Grammar("[3H]thymidine", SIX))
    constraint.advance([])
    written = {vocabulary.pieces[i] for i in constraint.allowed()}
    assert b"[" in written and b"(" in written  # an entity may open here, or the copy start...
    assert all(not p.startswith(b"[3") and not p.startswith(b"\\") for p in written)  # ...with the source bracket as "("


def test_closing_needs_an_open_non_empty_bracket(vocabulary, tokenizer) -> None:
    constraint = Constraint(vocabulary, Grammar("IL-2 binds.", SIX))
    opened = tokenizer.encode("[Gene ", add_special_tokens=False)
    constraint.advance(opened)
    assert not any(b"]" in vocabulary.pieces[i] for i in constraint.allowed())
    constraint.advance(opened + tokenizer.encode("IL", add_special_tokens=False))
    assert any(vocabulary.pieces[i].startswith(b"]") for i in constraint.allowed())


@pytest.mark.parametrize("seed, wander", [(0, 0.15), (1, 0.5), (2, 0.9)])
def test_every_constrained_answer_parses_maps_back_and_fits_its_budget(tokenizer, vocabulary, seed, wander) -> None:
    """Random walks through the allowed tokens (the longest, or any with probability ``wander``)
    on real sentences, one at the length limit, each under the answer budget the prompt builder
    gives: the answer ends within it, parses without a reject, and has a span per bracket pair."""
    rng = random.Random(seed)
    sentences = [s for s, _ in gold_answers(NER / "biored/Dev.filtered.PubTator", SIX, 3)]
    long = (sentences[0] + " ") * (MAX_SENTENCE_CHARS // (len(sentences[0]) + 1))
    for sentence in sentences + [long[:MAX_SENTENCE_CHARS]]:
        budget = answer_format("brackets").max_tokens(len(tokenizer.encode(sentence, add_special_tokens=False)), len(SIX))
        constraint, ids = Constraint(vocabulary, Grammar(sentence, SIX), budget), []
        while True:
            allowed = constraint.allowed()
            assert allowed
            token = rng.choice(allowed) if rng.random() < wander else max(allowed, key=lambda i: len(vocabulary.pieces[i] or b""))
            if token in vocabulary.end_ids:
                break
            ids.append(token)
            constraint.advance(ids)
        assert len(ids) + 1 <= budget
        answer = b"".join(vocabulary.pieces[i] for i in ids).decode("utf-8")
        result = parse(answer, sentence, SIX)
        assert result.rejects == [], (answer, result.rejects)
        opened = answer.count("[") - answer.count("\\[")
        assert bool(result.spans) == (opened > 0) and all(span.type in SIX for span in result.spans)


def test_a_step_looks_up_few_byte_strings(tokenizer, vocabulary) -> None:
    """Not a timing assertion on the machine: the search visits few byte strings per step."""
    sentence, answer = next((s, a) for s, a in gold_answers(NER / "biored/Dev.filtered.PubTator", SIX, 2) if "[" in a)
    ids = tokenizer.encode(answer, add_special_tokens=False)
    constraint = Constraint(vocabulary, Grammar(sentence, SIX))
    calls = 0
    original = vocabulary.starts

    def counted(prefix: bytes) -> bool:
        nonlocal calls
        calls += 1
        return original(prefix)

    vocabulary.starts = counted
    try:
        for k in range(len(ids)):
            constraint.allowed()
            constraint.advance(ids[: k + 1])
    finally:
        del vocabulary.starts
    assert calls / len(ids) < 60
