"""The span-list answer format: only the entities, one per line, in the order of the sentence.

::

    Gene: CD28 surface receptor
    Gene: CD28
    Species: human
    Chemical: the [IL-2]

A line is the type's label, a colon, one space and the entity copied from the sentence. Lines
follow the spans' order in the sentence (start, then longer first, then the type list's order),
and each entity is placed at the first occurrence of its text at or after the previous line's
start that the same type does not already hold. When that is not the right occurrence (the
same words occur earlier, untagged), the line gives the fewest words before the entity that
make it so, with the entity in ``[ ]``: ``Chemical: the [IL-2]``. Any set of spans can be
written: spans may nest, cross and repeat across types. Text is escaped as in the other formats
(:func:`~bulkner.tagging.format.escape`), so a bare ``[`` only ever marks the entity.

Parsing places each line by the same rule; a line that matches nowhere after the previous one
is looked for from the sentence start, and one that matches nowhere is rejected
(``unaligned_span``): an entity is placed exactly or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from bulkner.schema import Reject, Span
from bulkner.tagging.format import NO_ENTITIES, escape, source_view, unescape, writing_order
from bulkner.tagging.parse import _TOKEN_RE, ParseResult, Types, _reject, _trim_line, classify_line, label_index, no_answer

SEPARATOR = ": "


def render(sentence: str, spans: Iterable[Span], types: Sequence[str] | None = None) -> str:
    """The span list of ``spans`` over ``sentence`` (see the module docstring).

    ``types`` orders spans that share start and end and must hold every span's type (None: any).
    Raises ``ValueError`` for invalid spans, unknown types and labels that break the line syntax.
    """
    ordered = writing_order(sentence, spans, types)
    if not ordered:
        return NO_ENTITIES
    lines, cursor, taken = [], 0, set()
    view = source_view(sentence)  # occurrences as the parser sees them ("[" and "(" read alike; offsets hold)
    for span in ordered:
        if ":" in span.type or "\n" in span.type:
            raise ValueError(f"type {span.type!r} cannot be a span-list label (':' or a line break)")
        mention = view[span.start : span.end]
        context = next(view[c : span.start] for c in _context_starts(view, span.start)
                       if locate(view, view[c : span.start], mention, span.type, cursor, taken) == span.start)
        body = escape(context) + "[" + escape(mention) + "]" if context else escape(mention)
        lines.append(f"{span.type}{SEPARATOR}{body}")
        cursor = span.start
        taken.add(span)
    return "\n".join(lines)


def _context_starts(sentence: str, start: int) -> Iterable[int]:
    """Where a context may begin, nearest first: ``start`` itself (no context), then the start of
    each earlier word, down to 0 (the whole sentence before the entity, which is always unique)."""
    yield start
    for c in range(start - 1, 0, -1):
        if sentence[c - 1].isspace() and not sentence[c].isspace():
            yield c
    yield 0


def locate(sentence: str, context: str, mention: str, type_: str, cursor: int, taken: set[Span]) -> int | None:
    """The first start ``p >= cursor`` of ``mention`` preceded by ``context`` that ``type_`` does not hold yet."""
    p = sentence.find(mention, cursor)
    while p >= 0:
        if sentence.endswith(context, 0, p) and Span(p, p + len(mention), type_) not in taken:
            return p
        p = sentence.find(mention, p + 1)
    return None


def parse(output: str, sentence: str, types: Types) -> ParseResult:
    """Spans of the span-list answer ``output`` for ``sentence``; ``types`` as ``parse.parse``."""
    if (nothing := no_answer(output)) is not None:
        return nothing
    index = label_index(types)
    rejects: list[Reject] = []
    cursor, taken = 0, set()
    sentence = source_view(sentence)  # as the model sees it: offsets hold
    for line in output.split("\n"):
        kind, type_, body = classify_line(_trim_line(line), index)
        if kind == "skip":
            continue
        if kind != "block":
            rejects.append(_reject(kind, type_, "line is not 'label: entity' of a requested type"))
            continue
        found = split_body(body)
        if isinstance(found, Reject):
            rejects.append(found)
            continue
        context, mention = map(source_view, found)
        start = locate(sentence, context, mention, type_, cursor, taken)
        if start is None and cursor:
            start = locate(sentence, context, mention, type_, 0, taken)
        if start is None:
            rejects.append(_reject("unaligned_span", body, f"{type_} text is not in the sentence"))
            continue
        cursor = start
        taken.add(Span(start, start + len(mention), type_))
    return ParseResult(sorted(taken, key=lambda s: (s.start, -s.end, s.type)), rejects)


def split_body(body: str) -> tuple[str, str] | Reject:
    """``(context, mention)`` of a line's text, unescaped, or the reject saying why not."""
    tokens = _TOKEN_RE.findall(body)
    if "[" not in tokens and "]" not in tokens:
        context, mention = "", unescape(body)
    elif tokens.count("[") == 1 and tokens.count("]") == 1 and tokens[-1] == "]":
        cut = tokens.index("[")
        context, mention = unescape("".join(tokens[:cut])), unescape("".join(tokens[cut + 1 : -1]))
    else:
        return _reject("unbalanced_brackets", body, "a line holds at most 'context [entity]'")
    if not mention.strip():
        return _reject("empty_mention", body, "empty entity")
    return context, mention
