"""Prompts: shared instruction prefix first, sentence last, the model's chat template."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from bulkner.pipeline.prompt import PromptBuilder, instruction, messages
from bulkner.schema import Sentence
from bulkner.types import resolve_types

TYPES = resolve_types(["Chemical", "Disease"])


def sentence(text: str, index: int = 0) -> Sentence:
    return Sentence("pmid:1", 1, 0, index, 0, len(text), text)


def test_instruction_lists_types_and_definitions():
    text = instruction(TYPES)
    assert "Entity types include: Chemical, Disease\n" in text
    assert "Chemical: chemical compounds" in text and "Disease: diseases" in text
    assert messages(TYPES, "Aspirin helps.")[1]["content"].endswith("below:\nAspirin helps.")


def test_prompts_share_prefix_and_end_with_sentence(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    builder = PromptBuilder(TYPES, tokenizer, max_model_len=2048)
    a = builder.build(sentence("Aspirin reduced fever in 12 patients."))
    b = builder.build(sentence("Naloxone reversed the respiratory depression caused by high doses of morphine in rats.", 1))
    assert a.id == "pmid:1/0/0" and b.id == "pmid:1/0/1"
    prefix = builder.prefix_ids
    assert a.token_ids[: len(prefix)] == b.token_ids[: len(prefix)] == prefix
    text = tokenizer.decode(a.token_ids)
    assert text.startswith("<|im_start|>system\nYou are an expert in medical named entity recognition.")
    assert text.endswith("Aspirin reduced fever in 12 patients.<|im_end|>\n<|im_start|>assistant\n")
    assert b.max_tokens > a.max_tokens >= 2 * len(tokenizer.encode("Aspirin reduced fever in 12 patients."))


def test_overlong_prompt_is_refused(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    builder = PromptBuilder(TYPES, tokenizer, max_model_len=len(PromptBuilder(TYPES, tokenizer, 4096).prefix_ids) + 40)
    assert builder.build(sentence("Short.")) is not None
    assert builder.build(sentence("A much longer sentence about aspirin and fever " * 3)) is None


def test_the_answer_format_says_how_to_answer_and_sets_the_budget(tiny_model_dir):
    blocks = instruction(TYPES)
    assert ("For each entity type found, write the type, a colon and two spaces, then copy the whole text with every "
            "entity of that type wrapped in [ ]. Write None if the text has no entity.\n") in blocks  # the shipped adapter's words
    assert "[Type entity]" in instruction(TYPES, "brackets") and "one per line" in instruction(TYPES, "spans")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    six = resolve_types(["Gene", "Chemical", "Disease", "Species", "Variant", "CellLine"])
    text = sentence("Aspirin reduced fever in 12 patients.")
    by_format = {f: PromptBuilder(six, tokenizer, 2048, f).build(text).max_tokens for f in ("blocks", "brackets", "spans")}
    assert by_format["brackets"] == by_format["spans"] < by_format["blocks"] / 3  # one copy, not one per type


def test_a_window_prompt_ends_with_the_answers_head_and_stops_after_the_window(tiny_model_dir):
    from bulkner.selectors import Window

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    builder = PromptBuilder(TYPES, tokenizer, 2048, "brackets", constrain=True)
    text = "Naloxone reversed the respiratory depression caused by high doses of morphine in rats."
    whole = builder.build(sentence(text))
    start, end = text.index(" the respiratory"), text.index(" caused")
    windowed = builder.build(sentence(text), Window(start, end, ((0, 8, "Chemical"), (text.index("morphine"), text.index(" in rats"), "Chemical"))))
    assert windowed.answer_prefix == "[Chemical Naloxone] reversed" and windowed.stop is None  # the constraint ends it
    free = PromptBuilder(TYPES, tokenizer, 2048, "brackets").build(sentence(text), Window(start, end, ((0, 8, "Chemical"),)))
    assert free.answer_prefix == "[Chemical Naloxone] reversed" and free.stop == " caused" and free.constraint is None
    assert tokenizer.decode(windowed.token_ids) == tokenizer.decode(whole.token_ids) + "[Chemical Naloxone] reversed"
    assert windowed.token_ids[: len(whole.token_ids)] == whole.token_ids  # the head only adds tokens: the prefix cache holds
    assert windowed.max_tokens == whole.max_tokens  # the whole sentence's budget: an engine may write past a missed stop
    assert windowed.constraint.sentence == " the respiratory depression" and whole.constraint.sentence == text
    assert builder.build(sentence(text), Window(0, len(text))) == whole  # a window over everything is the whole prompt
    blocks = PromptBuilder(TYPES, tokenizer, 2048, "blocks")
    with pytest.raises(ValueError, match="copies the sentence once"):
        blocks.build(sentence(text), Window(start, end))
