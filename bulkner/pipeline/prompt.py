"""LLMNER's prompt, ordered for prefix caching: the shared instruction first, the sentence last.

LLMNER (GLM-4 chat) gives a system message, an instruction, the sentence, then the type list and
one definition per type. We keep their wording but move the sentence to the end, so that every
prompt of a run shares one token prefix (vLLM's prefix cache then skips recomputing it). The
prefix is tokenized once; per sentence only the sentence and the template's closing tokens are.
How to write the answer is the answer format's sentence (``bulkner.tagging.formats``).
"""

from __future__ import annotations

from typing import Protocol, Sequence

from bulkner.engines.base import Constraint, Prompt
from bulkner.schema import Sentence, Span
from bulkner.selectors import Window
from bulkner.tagging import DEFAULT_FORMAT, AnswerFormat, answer_format
from bulkner.tagging.format import source_view
from bulkner.types import EntityType

PROMPT_VERSION = "llmner-2"
"""Changes whenever the wording below or how the sentence is shown changes (2: source square
brackets as parentheses, ``format.source_view``); part of the output fingerprint."""

SYSTEM = "You are an expert in medical named entity recognition."
INSTRUCTION = (
    "Your task is to annotate named entities in the text and classify them according to the "
    "predefined categories.\nEntity types include: {names}\n"
    "The definitions of the entity types are as follows, {definitions}\n"
    "{how}"
    "Medical Named Entity Recognition Task: Please annotate the medical entities in the text below:\n"
)
_SLOT = "\u0000SENTENCE\u0000"


class Tokenizer(Protocol):
    """The part of a Hugging Face tokenizer the builder uses."""

    def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs) -> str: ...
    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


def instruction(types: Sequence[EntityType], fmt: str = DEFAULT_FORMAT) -> str:
    """The user message up to (not including) the sentence, for answers in format ``fmt``."""
    names = ", ".join(t.name for t in types)
    definitions = " ".join(f"{t.name}: {t.definition.rstrip('.')}." for t in types)
    return INSTRUCTION.format(names=names, definitions=definitions, how=answer_format(fmt).how)


def messages(types: Sequence[EntityType], sentence: str, fmt: str = DEFAULT_FORMAT) -> list[dict[str, str]]:
    """Chat messages for one sentence (also used to build training examples)."""
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": instruction(types, fmt) + sentence},
    ]


class PromptBuilder:
    """Turns sentences into token-id prompts for answers in format ``fmt``, with a per-sentence
    ``max_tokens`` budget (``AnswerFormat.max_tokens``: every copy of the sentence the format
    makes, with its marks; a longer answer is a runaway)."""

    def __init__(self, types: Sequence[EntityType], tokenizer: Tokenizer, max_model_len: int, fmt: str = DEFAULT_FORMAT,
                 constrain: bool = False) -> None:
        self.types = list(types)
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.answer: AnswerFormat = answer_format(fmt)
        if constrain and self.answer.grammar is None:
            raise ValueError(f"constrained decoding needs an answer format with a grammar (brackets); the model answers in {fmt!r}")
        self.constrain = constrain
        """Whether prompts carry a ``Constraint`` (the answer must follow the format's grammar)."""
        text = tokenizer.apply_chat_template(messages(self.types, _SLOT, fmt), tokenize=False, add_generation_prompt=True)
        head, slot, tail = text.partition(_SLOT)
        if not slot:
            raise ValueError("the model's chat template dropped the user message")
        self.prefix_ids = tuple(tokenizer.encode(head, add_special_tokens=False))
        self.tail = tail
        self.tail_tokens = len(tokenizer.encode(tail, add_special_tokens=False))

    def max_tokens(self, sentence_tokens: int) -> int:
        """Answer budget for a sentence of ``sentence_tokens`` tokens."""
        return self.answer.max_tokens(sentence_tokens, len(self.types))

    def build(self, sentence: Sentence, window: Window | None = None) -> Prompt | None:
        """The prompt for ``sentence``, or None when prompt plus answer exceed ``max_model_len``.
        With a ``window`` (``--generate window``) the prompt ends with the answer's head up to the
        window and carries the stop text after it (``AnswerFormat.resume``); constrained, it carries
        no stop text: the constraint covers the window's text only, and ends the answer there."""
        text, head, stop = sentence.text, "", None
        if window is not None and (window.start > 0 or window.end < len(text)):
            self.answer.require_resume()
            spans = [Span(s, e, t) for s, e, t in window.outside]
            head, stop = self.answer.resume(text, spans, window.start, window.end, [t.name for t in self.types])
            text = text[window.start : window.end]
            stop = None if self.constrain else stop  # the constraint ends the answer at the window's end
        shown = source_view(sentence.text)  # square brackets as parentheses, as the answer copies them
        tail_ids = self.tokenizer.encode(shown + self.tail, add_special_tokens=False)
        budget = self.max_tokens(max(1, len(tail_ids) - self.tail_tokens))
        if head:
            tail_ids = self.tokenizer.encode(shown + self.tail + head, add_special_tokens=False)
        ids = self.prefix_ids + tuple(tail_ids)
        if len(ids) + budget > self.max_model_len:
            return None
        constraint = Constraint(self.answer.name, text, tuple(t.name for t in self.types)) if self.constrain else None
        return Prompt(id=sentence.key, token_ids=ids, max_tokens=budget, constraint=constraint, answer_prefix=head, stop=stop)
