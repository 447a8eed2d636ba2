"""LLMNER's prompt, ordered for prefix caching: the shared instruction first, the sentence last.

LLMNER (GLM-4 chat) gives a system message, an instruction, the sentence, then the type list and
one definition per type. We keep their wording but move the sentence to the end, so that every
prompt of a run shares one token prefix (vLLM's prefix cache then skips recomputing it). The
prefix is tokenized once; per sentence only the sentence and the template's closing tokens are.
"""

from __future__ import annotations

import math
from typing import Protocol, Sequence

from bulkner.engines.base import Prompt
from bulkner.schema import Sentence
from bulkner.types import EntityType

PROMPT_VERSION = "llmner-1"
"""Changes whenever the wording below changes; part of the output fingerprint."""

SYSTEM = "You are an expert in medical named entity recognition."
INSTRUCTION = (
    "Your task is to annotate named entities in the text and classify them according to the "
    "predefined categories.\nEntity types include: {names}\n"
    "The definitions of the entity types are as follows, {definitions}\n"
    "For each entity type found, write the type, a colon and two spaces, then copy the whole text "
    "with every entity of that type wrapped in [ ]. Write None if the text has no entity.\n"
    "Medical Named Entity Recognition Task: Please annotate the medical entities in the text below:\n"
)
_SLOT = "\u0000SENTENCE\u0000"
_LABEL_TOKENS = 8
"""Allowance per answer block for the label, colon, separator and a few brackets."""


class Tokenizer(Protocol):
    """The part of a Hugging Face tokenizer the builder uses."""

    def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs) -> str: ...
    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


def instruction(types: Sequence[EntityType]) -> str:
    """The user message up to (not including) the sentence."""
    names = ", ".join(t.name for t in types)
    definitions = " ".join(f"{t.name}: {t.definition.rstrip('.')}." for t in types)
    return INSTRUCTION.format(names=names, definitions=definitions)


def messages(types: Sequence[EntityType], sentence: str) -> list[dict[str, str]]:
    """Chat messages for one sentence (also used to build training examples)."""
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": instruction(types) + sentence},
    ]


class PromptBuilder:
    """Turns sentences into token-id prompts with a per-sentence ``max_tokens`` budget.

    ``max_tokens`` allows every type's block to copy the whole sentence with brackets: the
    answer is at most ``len(types)`` copies of the sentence, so a longer answer is a runaway.
    """

    def __init__(self, types: Sequence[EntityType], tokenizer: Tokenizer, max_model_len: int) -> None:
        self.types = list(types)
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        text = tokenizer.apply_chat_template(messages(self.types, _SLOT), tokenize=False, add_generation_prompt=True)
        head, slot, tail = text.partition(_SLOT)
        if not slot:
            raise ValueError("the model's chat template dropped the user message")
        self.prefix_ids = tuple(tokenizer.encode(head, add_special_tokens=False))
        self.tail = tail
        self.tail_tokens = len(tokenizer.encode(tail, add_special_tokens=False))

    def max_tokens(self, sentence_tokens: int) -> int:
        """Answer budget for a sentence of ``sentence_tokens`` tokens."""
        per_block = math.ceil(sentence_tokens * 1.25) + _LABEL_TOKENS
        return len(self.types) * per_block + 4

    def build(self, sentence: Sentence) -> Prompt | None:
        """The prompt for ``sentence``, or None when prompt plus answer exceed ``max_model_len``."""
        tail_ids = self.tokenizer.encode(sentence.text + self.tail, add_special_tokens=False)
        ids = self.prefix_ids + tuple(tail_ids)
        budget = self.max_tokens(max(1, len(tail_ids) - self.tail_tokens))
        if len(ids) + budget > self.max_model_len:
            return None
        return Prompt(id=sentence.key, token_ids=ids, max_tokens=budget)
