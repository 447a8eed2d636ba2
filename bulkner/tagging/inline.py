"""The typed-bracket answer format: one copy of the sentence, each entity as ``[Type text]``.

::

    Activation of the [Gene [Gene CD28] surface receptor] in [Species human] [CellType T cells]

An opening bracket is followed by the type's label and one space; the label is the type name
with spaces written as ``_`` (a label holds no space, so the first space ends it). Spans nest
(``[Gene [Gene CD28] surface receptor]``), also across types, and one span may carry two types
(``[Gene [Disease X]]``, in the type list's order). Spans that cross (overlap without nesting)
cannot be written, whatever their types: :func:`render` raises ``ValueError`` and the gold side
resolves them with ``resolve_crossing(..., across_types=True)``. A sentence without entities is
:data:`~bulkner.tagging.format.NO_ENTITIES`. Source brackets, backslashes and line breaks are
escaped as in the block format (:func:`~bulkner.tagging.format.escape`).

Parsing de-brackets the answer into plain text, aligns it to the sentence and maps every mention
through the alignment exactly as the block parser does (``parse.place_mention``): a mention is
placed exactly or rejected, never misplaced. An unknown label is the mention's first word, not a
type: the mention is rejected (``unknown_type``) and its text kept for the alignment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from bulkner.schema import Reject, Span
from bulkner.tagging.format import NO_ENTITIES, UNESCAPES, escape, resolve_crossing, writing_order
from bulkner.tagging.parse import _TOKEN_RE, ParseResult, Types, _reject, label_index, no_answer, normalize_label, place_mentions


def label_of(type_: str) -> str:
    """The label written after ``[``: the type name with spaces as ``_``."""
    return type_.replace(" ", "_")


def render(sentence: str, spans: Iterable[Span], types: Sequence[str] | None = None) -> str:
    """``sentence`` with every span written as ``[Label text]`` (see the module docstring).

    ``types`` orders two types on one span (outer first) and must hold every span's type (None:
    any type). Raises ``ValueError`` for invalid or crossing spans and unknown types.
    """
    ordered = writing_order(sentence, spans, types)
    if not ordered:
        return NO_ENTITIES
    if len(kept := resolve_crossing(ordered, across_types=True)) != len(ordered):
        shown = ", ".join(str(tuple(s)) for s in sorted(set(ordered) - set(kept))[:5])
        raise ValueError(f"spans cross and cannot be written with typed brackets: {shown}")
    parts, stack, pos = [], [], 0
    for span in ordered:
        while stack and stack[-1].end <= span.start:
            pos = _close(parts, sentence, pos, stack.pop())
        parts.append(escape(sentence[pos : span.start]) + f"[{label_of(span.type)} ")
        pos = span.start
        stack.append(span)
    while stack:
        pos = _close(parts, sentence, pos, stack.pop())
    parts.append(escape(sentence[pos:]))
    return "".join(parts)


def _close(parts: list[str], sentence: str, pos: int, span: Span) -> int:
    """Write the text up to ``span``'s end and its closing bracket; the new position."""
    parts.append(escape(sentence[pos : span.end]) + "]")
    return span.end


def parse(output: str, sentence: str, types: Types) -> ParseResult:
    """Spans of the typed-bracket answer ``output`` for ``sentence``; ``types`` as ``parse.parse``."""
    if (nothing := no_answer(output)) is not None:
        return nothing
    plain, mentions, rejects = scan(output, label_index(types))
    spans, problems = place_mentions(plain, mentions, sentence)
    return ParseResult(sorted(set(spans), key=lambda s: (s.start, -s.end, s.type)), rejects + problems)


def scan(body: str, index: Mapping[str, str]) -> tuple[str, list[tuple[int, int, str]], list[Reject]]:
    """De-bracket and unescape ``body``: plain text, ``(start, end, type)`` mentions in it, rejects."""
    parts: list[str] = []
    length, stack, mentions, rejects = 0, [], [], []
    labelling = False  # the text right after "[" starts with the label
    for token in _TOKEN_RE.findall(body):
        if token == "[":
            stack.append([length, None])  # its type comes with the label
            labelling = True
            continue
        if token == "]":
            if not stack:
                rejects.append(_reject("unbalanced_brackets", body, f"']' without '[' at {length}"))
            else:
                start, type_ = stack.pop()
                if type_ is None:
                    rejects.append(_reject("unknown_type", "".join(parts)[start:], "'[' not followed by a known label and a space"))
                else:
                    mentions.append((start, length, type_))
            labelling = False
            continue
        text = UNESCAPES[token[1]] if len(token) == 2 and token[0] == "\\" else token
        if labelling:
            labelling = False
            label, space, rest = text.partition(" ")
            type_ = index.get(normalize_label(label)) if space and token[0] != "\\" else None
            if type_ is not None:
                stack[-1][1], text = type_, rest
        parts.append(text)
        length += len(text)
    plain = "".join(parts)
    rejects += [_reject("unbalanced_brackets", plain[s:], f"'[' at {s} never closed") for s, _ in stack]
    return plain, mentions, rejects
