"""Answer formats: how the generator writes a sentence's entities, how that is parsed back, what
the prompt says about it and how long an answer may be.

============  ================================================  ===========================
name          answer                                             spans it can write
============  ================================================  ===========================
``blocks``    LLMNER's: one copy of the sentence per type        same-type spans nest;
              present, ``Type:  text with [entities]``            types overlap freely
``brackets``  one copy, ``[Type entity]`` inline                  all spans nest (no crossing)
``spans``     only the entities, one ``Type: entity`` per line   any
============  ================================================  ===========================

Each format is one module (``format``/``parse``, ``inline``, ``spanlist``) holding its render
and its parser; escapes, alignment and mention placement are shared, so every format places a
mention exactly or rejects it. A model is trained in one format and must be run in it: the
format is recorded in the adapter's ``training.json`` (``answer_format``) and read from there
at run time (``bulkner.checkpoints.trained_format``); ``name-version`` is part of the run
fingerprint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from dataclasses import dataclass

from bulkner.schema import Span
from bulkner.tagging import inline, spanlist
from bulkner.tagging.format import render as render_blocks
from bulkner.tagging.parse import ParseResult, Types
from bulkner.tagging.parse import parse as parse_blocks

_LABEL_TOKENS = 8
"""Allowance per answer block (``blocks``) for the label, colon, separator and a few brackets."""


@dataclass(frozen=True)
class AnswerFormat:
    """One answer format (see the module docstring)."""

    name: str
    version: str
    """Changes whenever what the format writes or how it is parsed changes."""
    how: str
    """The prompt's sentence on how to answer (before the sentence is given)."""
    crossing: str
    """Which crossing spans the gold side must resolve before rendering: ``type`` (same-type
    spans), ``all`` (any two spans) or ``none``."""
    render: Callable[[str, Iterable[Span], Sequence[str]], str]
    """``render(sentence, spans, types)``: the gold answer."""
    parse: Callable[[str, str, Types], ParseResult]
    """``parse(output, sentence, types)``: spans and rejects."""
    copies_per_type: bool
    """True when the answer may copy the sentence once per type (the token budget scales with the types)."""
    grammar: Callable[[str, Sequence[str]], Any] | None = None
    """``grammar(sentence, types)``: the automaton of every answer the format allows for the
    sentence (constrained decoding, ``bulkner.kernels.constrain``); None where none is written."""
    resume: Callable[[str, Iterable[Span], int, int, Sequence[str]], tuple[str, str | None]] | None = None
    """``resume(sentence, spans, start, end, types)``: the answer's head up to ``start`` and the
    stop text after ``end``, for a generator that writes only ``sentence[start:end]`` (``--generate
    window``); None for formats that do not copy the sentence once."""
    until_stop: Callable[[str, str | None], str] | None = None
    """``until_stop(generated, stop)``: the part of a resumed answer that covers the window (with ``resume``)."""
    forced: Callable[[str, str, Types, Sequence[tuple[int, int]]], set[Span]] | None = None
    """``forced(output, sentence, types, ranges)``: the spans of a constrained answer that text the
    constraint forced on the model touches (``Generation.forced``; with ``grammar``)."""

    def require_resume(self) -> None:
        """``ValueError`` unless answers in this format can be resumed (``--generate window``)."""
        if self.resume is None:
            raise ValueError(f"--generate window needs an answer format that copies the sentence once (brackets); "
                             f"the model answers in {self.name!r}")

    @property
    def id(self) -> str:
        """``name-version``, as the fingerprint records it."""
        return f"{self.name}-{self.version}"

    def max_tokens(self, sentence_tokens: int, types: int) -> int:
        """Answer budget for a sentence of ``sentence_tokens`` tokens and ``types`` requested
        types: room for every copy the format makes and its marks; a longer answer is a runaway."""
        if self.copies_per_type:
            return types * (math.ceil(sentence_tokens * 1.25) + _LABEL_TOKENS) + 4
        return 2 * sentence_tokens + 16


FORMATS: dict[str, AnswerFormat] = {
    f.name: f
    for f in (
        AnswerFormat(
            "blocks", "1",
            "For each entity type found, write the type, a colon and two spaces, then copy the whole text "
            "with every entity of that type wrapped in [ ]. Write None if the text has no entity.\n",
            "type", render_blocks, parse_blocks, copies_per_type=True),
        AnswerFormat(
            "brackets", "1",
            "Copy the whole text once, writing every entity as [Type entity]: an opening bracket, the "
            "entity type, a space, the entity, a closing bracket. Write None if the text has no entity.\n",
            "all", inline.render, inline.parse, copies_per_type=False, grammar=inline.Grammar, resume=inline.resume,
            until_stop=inline.until_stop, forced=inline.forced_spans),
        AnswerFormat(
            "spans", "1",
            "List the entities in the order of the text, one per line: the entity type, a colon and a "
            "space, then the entity copied exactly; if the same words occur earlier in the text, write "
            "the words just before the entity and the entity in [ ]. Write None if the text has no entity.\n",
            "none", spanlist.render, spanlist.parse, copies_per_type=False),
    )
}
DEFAULT_FORMAT = "blocks"
"""The format of a model that records none (every adapter trained before formats existed)."""


def answer_format(name: str) -> AnswerFormat:
    """The format called ``name``; ``ValueError`` lists the formats when unknown."""
    if name not in FORMATS:
        raise ValueError(f"unknown answer format {name!r}; formats are {', '.join(FORMATS)}")
    return FORMATS[name]
